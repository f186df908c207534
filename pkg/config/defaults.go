package config

import "time"

// Defaults for every optional key; ExampleYAML documents the same values.
const (
	DefaultPinPath          = "/sys/fs/bpf/intransit"
	DefaultMapSize          = 65536
	DefaultMark             = 0x1e7a0001
	DefaultProxyPort        = 15001
	DefaultDialTimeout      = 5 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = time.Hour
	DefaultDrainTimeout     = 10 * time.Second
	DefaultAuditFile        = "-"
	DefaultMetricsListen    = "127.0.0.1:9464"
	DefaultAPISocket        = "/run/intransit/api.sock"
	DefaultTunnelPort       = 15008
	DefaultInboundListen    = "0.0.0.0:15008"
	DefaultTokenAudience    = "intransit" // identity.token.kubernetes.audience, inbound.oidc.audience
	DefaultTokenTTL         = 10 * time.Minute
	DefaultServiceMode      = ModeEnforce

	// MetricsOff as metrics.listen disables the metrics endpoint.
	MetricsOff = "off"
	// AuditStdout as audit.file writes the audit trail to stdout.
	AuditStdout = "-"
)

// SetDefaults fills every unset (zero) optional field. A negative
// proxy.idleTimeout means "disabled" and is kept.
func (c *Config) SetDefaults() {
	setZero(&c.BPF.PinPath, DefaultPinPath)
	setZero(&c.BPF.MapSize, DefaultMapSize)
	setZero(&c.BPF.Mark, DefaultMark)
	setZero(&c.Proxy.Port, DefaultProxyPort)
	setZero(&c.Proxy.DialTimeout.Duration, DefaultDialTimeout)
	setZero(&c.Proxy.HandshakeTimeout.Duration, DefaultHandshakeTimeout)
	setZero(&c.Proxy.IdleTimeout.Duration, DefaultIdleTimeout)
	setZero(&c.Proxy.DrainTimeout.Duration, DefaultDrainTimeout)
	setZero(&c.Audit.File, DefaultAuditFile)
	setZero(&c.Metrics.Listen, DefaultMetricsListen)
	setZero(&c.API.Socket, DefaultAPISocket)
	c.setRecordingDefaults()
	for i := range c.Rules {
		if t := c.Rules[i].Upstream.Tunnel; t != nil {
			setZero(&t.Port, DefaultTunnelPort)
		}
	}
	if t := c.Identity.Token; t != nil && t.Kubernetes != nil {
		setZero(&t.Kubernetes.Audience, DefaultTokenAudience)
		setZero(&t.Kubernetes.TTL.Duration, DefaultTokenTTL)
	}
	if in := c.Inbound; in != nil {
		setZero(&in.Listen, DefaultInboundListen)
		if in.OIDC != nil {
			setZero(&in.OIDC.Audience, DefaultTokenAudience)
		}
		for i := range in.Services {
			setZero(&in.Services[i].Mode, DefaultServiceMode)
		}
	}
}

func setZero[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}
