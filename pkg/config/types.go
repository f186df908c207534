// Package config loads and validates the agent's YAML configuration.
package config

import (
	"net/netip"
)

// Mode is what a rule does with a matching plaintext connect.
type Mode string

const (
	ModeAudit   Mode = "audit"   // pass untouched, report
	ModeEnforce Mode = "enforce" // redirect to the proxy and upgrade to TLS
	ModeDeny    Mode = "deny"    // fail the connect with EPERM
)

// Config is the whole agent configuration (intransit.yaml).
type Config struct {
	// Cgroup is the cgroup v2 directory the BPF programs attach to.
	// Empty means the cgroup2 root, discovered from /proc/self/mountinfo.
	Cgroup  string  `json:"cgroup,omitempty"`
	BPF     BPF     `json:"bpf"`
	Proxy   Proxy   `json:"proxy"`
	Audit   Audit   `json:"audit"`
	Metrics Metrics `json:"metrics"`
	API     API     `json:"api"`
	Rules   []Rule  `json:"rules"`
}

// BPF configures the kernel side.
type BPF struct {
	// PinPath is the bpffs directory holding pinned programs, links and maps.
	PinPath string `json:"pinPath,omitempty"` // default /sys/fs/bpf/intransit
	// MapSize is the capacity of each original-destination LRU map.
	MapSize int `json:"mapSize,omitempty"` // default 65536
	// Mark is the SO_MARK carried by the proxy's own upstream sockets; sockets
	// with this mark are never redirected.
	Mark uint32 `json:"mark,omitempty"` // default 0x1e7a0001
}

// Proxy configures the local listener that redirected connects land on.
type Proxy struct {
	Port             int      `json:"port,omitempty"`             // default 15001
	DialTimeout      Duration `json:"dialTimeout,omitempty"`      // default 5s
	HandshakeTimeout Duration `json:"handshakeTimeout,omitempty"` // default 10s
	IdleTimeout      Duration `json:"idleTimeout,omitempty"`      // default 1h; 0 keeps the default, negative disables
}

// Audit configures the JSON-lines audit trail.
type Audit struct {
	File string `json:"file,omitempty"` // "-" = stdout; default "-"
}

// Metrics configures the Prometheus and health endpoint.
type Metrics struct {
	Listen string `json:"listen,omitempty"` // default 127.0.0.1:9464; "off" disables
}

// API configures the local unix-socket API used by the CLI.
type API struct {
	Socket string `json:"socket,omitempty"` // default /run/intransit/api.sock
}

// Rule selects plaintext connects by destination port and optional CIDRs.
type Rule struct {
	Name         string   `json:"name"`
	Ports        []int    `json:"ports"`
	Destinations []string `json:"destinations,omitempty"`
	Mode         Mode     `json:"mode"`
	Upstream     Upstream `json:"upstream"`

	// Prefixes is Destinations parsed (IPv4 prefixes stay IPv4); filled by Load.
	Prefixes []netip.Prefix `json:"-"`
}

// Upstream says how an enforced connection leaves the host.
type Upstream struct {
	TLS *TLS `json:"tls,omitempty"`
}

// TLS configures origination towards a TLS-capable destination.
type TLS struct {
	Port       int    `json:"port,omitempty"`       // default: the original destination port
	ServerName string `json:"serverName,omitempty"` // default: the destination IP
	CAFile     string `json:"caFile,omitempty"`     // default: system roots
	CertFile   string `json:"certFile,omitempty"`   // optional client certificate
	KeyFile    string `json:"keyFile,omitempty"`
}
