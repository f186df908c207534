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

	// Identity is how this host's workloads prove who they are to peer
	// agents (tunnel rules).
	Identity Identity `json:"identity"`
	// Peers says where the agent for some destinations listens; without a
	// match a tunnel goes to the destination IP itself on the tunnel port.
	Peers []Peer `json:"peers,omitempty"`
	// Inbound is the executor side of tunnels; nil when this host runs none.
	Inbound *Inbound `json:"inbound,omitempty"`

	// Recordings is where session recordings go (rules[].record).
	Recordings Recordings `json:"recordings"`
	// Redaction is applied to everything recorded, before it reaches disk.
	Redaction Redaction `json:"redaction"`
}

// Recordings configures the session recording store.
type Recordings struct {
	Dir string `json:"dir,omitempty"` // default /var/lib/intransit/recordings; created 0700
	// MaxSessionSize caps one recording; beyond it the session goes on with
	// its stream bytes no longer recorded (the recording says so).
	MaxSessionSize Size `json:"maxSessionSize,omitempty"` // default 64MiB
	// MaxTotalSize caps the directory; the oldest recordings are evicted.
	MaxTotalSize Size `json:"maxTotalSize,omitempty"` // default 1GiB
	// OnError is what a recorded session does when its recording cannot be
	// written (disk full, read-only): continue unrecorded (and audited), or
	// close the session.
	OnError string `json:"onError,omitempty"` // continue (default) | close
	// KeyFile holds an HMAC key for the hash chain. Keep it away from the
	// recordings (e.g. a Kubernetes secret): without it, whoever can write the
	// recordings can also recompute an unkeyed chain.
	KeyFile string `json:"keyFile,omitempty"`
}

// Recording error policies (recordings.onError).
const (
	OnErrorContinue = "continue"
	OnErrorClose    = "close"
)

// Redaction lists what is masked in recordings. Each list replaces its
// default when set.
type Redaction struct {
	Headers    []string `json:"headers,omitempty"`    // default Authorization, Proxy-Authorization, Cookie, Set-Cookie, X-Api-Key
	JSONFields []string `json:"jsonFields,omitempty"` // default password, secret, token, api_key, apiKey, access_token, refresh_token, client_secret
	Patterns   []string `json:"patterns,omitempty"`   // default: every built-in pattern
}

// WorkloadSelector picks workloads by cgroup or Kubernetes pod; every field
// set must match.
type WorkloadSelector struct {
	// Cgroup is a glob (path.Match) on the cgroup path below the cgroup2
	// mount, e.g. "/system.slice/planner*.service"; it also covers every
	// cgroup below a match.
	Cgroup string `json:"cgroup,omitempty"`
	// Namespace and Labels match the pod the cgroup belongs to (needs
	// identity.pods).
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// Inject is a credential the agent adds to each HTTP request of a rule's
// connections, so the workload never holds it.
type Inject struct {
	Header    string `json:"header"`    // e.g. Authorization
	ValueFile string `json:"valueFile"` // the whole header value, e.g. "Bearer ..."; re-read when it changes
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
	Port int `json:"port,omitempty"` // default 15001
	// PodAddress: a host IPv4 address reachable from pod network namespaces
	// (e.g. the node IP). Enforced connects from other namespaces are sent
	// there, since pods cannot reach the host's loopback; the proxy listens
	// on it too. Empty: such connects are refused (fail closed).
	PodAddress       string   `json:"podAddress,omitempty"`
	DialTimeout      Duration `json:"dialTimeout,omitempty"`      // default 5s
	HandshakeTimeout Duration `json:"handshakeTimeout,omitempty"` // default 10s
	IdleTimeout      Duration `json:"idleTimeout,omitempty"`      // default 1h; 0 keeps the default, negative disables
	// DrainTimeout is how long a stopping agent lets established sessions
	// finish (it has stopped accepting) before cutting the rest.
	DrainTimeout Duration `json:"drainTimeout,omitempty"` // default 10s; a written 0 is refused
}

// Audit configures the JSON-lines audit trail.
type Audit struct {
	File string `json:"file,omitempty"` // "-" = stdout; default "-"
}

// Metrics configures the Prometheus and health endpoint.
type Metrics struct {
	Listen string `json:"listen,omitempty"` // default 127.0.0.1:9464; "off" disables
	// WorkloadLabels adds intransit_workload_connections_total with a
	// workload label (pod namespace/service account, container runtime,
	// or systemd unit): off by default for cardinality.
	WorkloadLabels bool `json:"workloadLabels,omitempty"`
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
	// Record is off (default), metadata (a record per session) or full
	// (both byte streams too, redacted). Enforce rules only.
	Record string `json:"record,omitempty"`
	// Inject adds a held credential to every HTTP/1.x request (enforce
	// rules only); non-HTTP connections are closed.
	Inject *Inject `json:"inject,omitempty"`
	// Workloads limits the rule to connects from matching cgroups (any
	// selector matches). Empty: every workload. At the same port and
	// destination prefix a rule with workloads wins over one without.
	Workloads []WorkloadSelector `json:"workloads,omitempty"`

	// Prefixes is Destinations parsed (IPv4 prefixes stay IPv4); filled by Load.
	Prefixes []netip.Prefix `json:"-"`
}

// Upstream says how an enforced connection leaves the host: exactly one of
// TLS and Tunnel for enforce rules.
type Upstream struct {
	TLS    *TLS    `json:"tls,omitempty"`
	Tunnel *Tunnel `json:"tunnel,omitempty"`
}

// TLS configures origination towards a TLS-capable destination.
type TLS struct {
	Port       int    `json:"port,omitempty"`       // default: the original destination port
	ServerName string `json:"serverName,omitempty"` // default: the destination IP
	CAFile     string `json:"caFile,omitempty"`     // default: system roots
	CertFile   string `json:"certFile,omitempty"`   // optional client certificate
	KeyFile    string `json:"keyFile,omitempty"`
}

// Tunnel carries enforced connections over TLS to the intransit agent on the
// destination's host (or the one peers names), which forwards them to a
// plaintext executor over loopback.
//
// Pooling (default true) multiplexes the connections as HTTP/2 streams over
// a few pooled TLS connections per peer, so a new connection costs no
// handshake. false gives each connection its own TLS connection, closed when
// it ends, never reused nor shared: for benchmarking and for peers that
// cannot multiplex. Compare Tunnels with Equal (Pooling is a pointer).
type Tunnel struct {
	Port       int    `json:"port,omitempty"`       // peer agent's inbound port; default 15008
	ServerName string `json:"serverName,omitempty"` // default: the peer address IP
	CAFile     string `json:"caFile,omitempty"`     // default: system roots
	CertFile   string `json:"certFile,omitempty"`   // optional mTLS client certificate
	KeyFile    string `json:"keyFile,omitempty"`
	Pooling    *bool  `json:"pooling,omitempty"` // default (nil): true
}

// Pools reports whether connections share pooled TLS connections (pooling
// unset or true).
func (t Tunnel) Pools() bool { return t.Pooling == nil || *t.Pooling }

// Equal reports whether t and u configure the same tunnel (Pooling compared
// by value, unset meaning true).
func (t Tunnel) Equal(u Tunnel) bool {
	tp, up := t.Pools(), u.Pools()
	t.Pooling, u.Pooling = nil, nil
	return t == u && tp == up
}

// Identity configures how this host's workloads authenticate to peer agents.
type Identity struct {
	// Pods resolves workloads to Kubernetes pods with an informer on this
	// node's pods: auto (default) when running in a cluster, on, off.
	Pods string `json:"pods,omitempty"`
	// Token is the workload token sent with each tunnelled connection; nil
	// sends none (tunnel rules then need a client certificate).
	Token *TokenSource `json:"token,omitempty"`
}

// TokenSource says where workload tokens come from: exactly one source.
type TokenSource struct {
	// File is re-read when it changes (a projected service-account token, or
	// a token written by another agent).
	File              string             `json:"file,omitempty"`
	ClientCredentials *ClientCredentials `json:"clientCredentials,omitempty"`
	Kubernetes        *KubernetesToken   `json:"kubernetes,omitempty"`
}

// ClientCredentials is an OAuth2 client-credentials grant.
type ClientCredentials struct {
	Issuer           string   `json:"issuer,omitempty"`   // OIDC discovery of the token endpoint; or
	TokenURL         string   `json:"tokenURL,omitempty"` // the token endpoint itself (exactly one of the two)
	ClientID         string   `json:"clientID"`           // required
	ClientSecretFile string   `json:"clientSecretFile"`   // required; secrets are never inline
	Scopes           []string `json:"scopes,omitempty"`
	Audience         string   `json:"audience,omitempty"`
}

// KubernetesToken mints a token for the source pod's own service account
// with the TokenRequest API.
type KubernetesToken struct {
	Audience string   `json:"audience,omitempty"` // default "intransit"
	TTL      Duration `json:"ttl,omitempty"`      // default 10m; 10m..24h
}

// Peer says where the intransit agent for some destinations listens (NAT,
// pods). The most specific match wins; see Config.PeerFor.
type Peer struct {
	Destinations []string `json:"destinations"` // required; CIDRs or IPs
	Address      string   `json:"address"`      // required; IP:port

	// Prefixes is Destinations parsed and AddrPort is Address parsed; both
	// filled by Load.
	Prefixes []netip.Prefix `json:"-"`
	AddrPort netip.AddrPort `json:"-"`
}

// Inbound accepts tunnels from peer agents and forwards them to local
// plaintext executors over loopback.
type Inbound struct {
	Listen string `json:"listen,omitempty"` // default 0.0.0.0:15008; host:port, host empty or an IP
	// Cgroup whose sockets (the executors) get the plaintext-ingress check.
	// Empty means the cgroup2 root.
	Cgroup   string     `json:"cgroup,omitempty"`
	TLS      InboundTLS `json:"tls"`
	OIDC     *OIDC      `json:"oidc,omitempty"`
	Services []Service  `json:"services"` // at least one
}

// InboundTLS is the tunnel listener's certificate, reloaded when the files
// change.
type InboundTLS struct {
	CertFile     string `json:"certFile"`               // required
	KeyFile      string `json:"keyFile"`                // required
	ClientCAFile string `json:"clientCAFile,omitempty"` // set: callers must present a certificate it signed
}

// OIDC verifies workload tokens presented by callers.
type OIDC struct {
	Issuer   string `json:"issuer"`             // required; https URL (http only for loopback)
	Audience string `json:"audience,omitempty"` // default "intransit"
	JWKSFile string `json:"jwksFile,omitempty"` // optional offline keys instead of discovery
}

// Service is a local plaintext executor reachable through the tunnel.
type Service struct {
	Name    string `json:"name"`    // unique, same pattern as rule names
	Port    int    `json:"port"`    // the port clients dial, and the plaintext port protected here; unique
	Forward string `json:"forward"` // loopback IP:port of the plaintext executor
	// Mode is what happens to plaintext reaching Port from off-host: audit
	// reports it, enforce (the default) drops and reports it. deny is not
	// valid here.
	Mode  Mode    `json:"mode,omitempty"`
	Allow []Allow `json:"allow"` // at least one entry; any entry allows
}

// Allow is one accepted caller: every non-empty field must match.
type Allow struct {
	Issuer   string `json:"iss,omitempty"`
	Subject  string `json:"sub,omitempty"`
	Audience string `json:"aud,omitempty"`
	// Claims are named claims compared as strings; a name is a "/"-separated
	// path into nested objects, e.g. "kubernetes.io/namespace": agents.
	Claims map[string]string `json:"claims,omitempty"`
	// PeerSubject matches the mTLS client certificate subject (CN or full DN).
	PeerSubject string `json:"peerSubject,omitempty"`
	// PeerSAN matches a SAN of the mTLS client certificate (DNS name, URI such
	// as spiffe://..., IP address).
	PeerSAN string `json:"peerSAN,omitempty"`
}

// HasTokenFields reports whether a matches on the caller's token.
func (a *Allow) HasTokenFields() bool {
	return a.Issuer != "" || a.Subject != "" || a.Audience != "" || len(a.Claims) > 0
}

// HasPeerFields reports whether a matches on the caller's client certificate.
func (a *Allow) HasPeerFields() bool { return a.PeerSubject != "" || a.PeerSAN != "" }
