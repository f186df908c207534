package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
)

// Limits enforced by validate.
const (
	MinMapSize = 64
	MaxMapSize = 1 << 24
	// maxSocketPath is sizeof(sun_path) minus the terminating NUL.
	maxSocketPath = 107
)

// problems collects every validation error instead of stopping at the first.
type problems []error

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

func (p *problems) addErr(err error) { *p = append(*p, err) }

// validate checks a defaulted config, fills Rule.Prefixes, Peer.Prefixes and
// Peer.AddrPort, and returns one error per problem, each naming the key path
// and the offending value.
func (c *Config) validate() []error {
	var p problems
	if c.Cgroup != "" && !filepath.IsAbs(c.Cgroup) {
		p.add("cgroup", "%q is not an absolute path", c.Cgroup)
	}
	c.checkBPF(&p)
	c.checkProxy(&p)
	checkAuditFile(&p, "audit.file", c.Audit.File)
	if _, err := c.MetricsPort(); err != nil {
		p.add("metrics.listen", "%q is not %q or host:port: %v", c.Metrics.Listen, MetricsOff, err)
	}
	switch s := c.API.Socket; {
	case !filepath.IsAbs(s):
		p.add("api.socket", "%q is not an absolute path", s)
	case len(s) > maxSocketPath:
		p.add("api.socket", "%q is longer than %d bytes, the unix socket path limit", s, maxSocketPath)
	}
	c.checkIdentity(&p)
	c.checkPeers(&p)
	c.checkRules(&p)
	c.checkInbound(&p)
	c.checkRecordings(&p)
	return p
}

func (c *Config) checkBPF(p *problems) {
	if !filepath.IsAbs(c.BPF.PinPath) {
		p.add("bpf.pinPath", "%q is not an absolute path", c.BPF.PinPath)
	}
	if n := c.BPF.MapSize; n < MinMapSize || n > MaxMapSize {
		p.add("bpf.mapSize", "%d is not in %d..%d", n, MinMapSize, MaxMapSize)
	}
	// Without a mark the proxy's own upstream connects would be redirected
	// back into the proxy.
	if c.BPF.Mark == 0 {
		p.add("bpf.mark", "0 is not allowed: the proxy's sockets need a non-zero mark")
	}
}

func (c *Config) checkProxy(p *problems) {
	if !validPort(c.Proxy.Port) {
		p.add("proxy.port", "%d is not in 1..65535", c.Proxy.Port)
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"proxy.dialTimeout", c.Proxy.DialTimeout},
		{"proxy.handshakeTimeout", c.Proxy.HandshakeTimeout},
		{"proxy.drainTimeout", c.Proxy.DrainTimeout},
	} {
		if d.v.Duration < 0 {
			p.add(d.key, "%s must not be negative", d.v.Duration)
		}
	}
	// A negative idleTimeout is the documented way to disable it.
	if c.Proxy.PodAddress != "" {
		a, err := netip.ParseAddr(c.Proxy.PodAddress)
		switch {
		case err != nil:
			p.add("proxy.podAddress", "%q is not an IP address", c.Proxy.PodAddress)
		case !a.Is4() || a.IsLoopback() || a.IsUnspecified():
			p.add("proxy.podAddress", "%q must be a host IPv4 address reachable from pods (not loopback or 0.0.0.0)", c.Proxy.PodAddress)
		}
	}
}

// MetricsPort returns the port of metrics.listen, or 0 when it is "off".
func (c *Config) MetricsPort() (int, error) {
	if c.Metrics.Listen == MetricsOff {
		return 0, nil
	}
	_, port, err := net.SplitHostPort(c.Metrics.Listen)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(port)
	if err != nil || !validPort(n) {
		return 0, fmt.Errorf("port %q is not a number in 1..65535", port)
	}
	return n, nil
}

func validPort(n int) bool { return n >= 1 && n <= 65535 }
