// Package audit writes the JSON-lines audit trail of intercepted connections
// and lets local readers (status, API streaming) follow it.
package audit

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"
	"unicode/utf8"
)

// Verdict is what intransit did with a connection.
type Verdict string

// Verdicts written to the audit trail.
const (
	VerdictAudit    Verdict = "AUDIT"    // observed and passed through in plaintext
	VerdictUpgraded Verdict = "UPGRADED" // proxied and upgraded to TLS
	VerdictDenied   Verdict = "DENIED"   // blocked by a deny rule
	VerdictRefused  Verdict = "REFUSED"  // enforce mode could not upgrade, so refused
	VerdictError    Verdict = "ERROR"    // internal failure
)

// Verdicts returns every known verdict, e.g. to pre-set metric labels.
func Verdicts() []Verdict {
	return []Verdict{VerdictAudit, VerdictUpgraded, VerdictDenied, VerdictRefused, VerdictError}
}

// Event kinds.
const (
	EventConnect      = "connect"
	EventSessionStart = "session_start"
	EventSessionEnd   = "session_end"
)

// Process identifies the workload that opened the connection.
type Process struct {
	PID        uint32 `json:"pid"`
	TGID       uint32 `json:"tgid,omitempty"`
	Comm       string `json:"comm"`
	UID        uint32 `json:"uid"`
	GID        uint32 `json:"gid"`
	Cgroup     uint64 `json:"cgroup"`
	CgroupPath string `json:"cgroup_path,omitempty"`
	// Exe is the executable path (/proc/PID/exe), Unknown if the process
	// was gone or hidden when the connect was handled.
	Exe string `json:"exe,omitempty"`
	// Container is set when the cgroup path is a container runtime's.
	Container *Container `json:"container,omitempty"`
	// Pod is set when the cgroup path is a Kubernetes pod's; fields the
	// agent could not look up are Unknown.
	Pod *Pod `json:"pod,omitempty"`
}

// Unknown marks an identity field that could not be resolved. It is never
// replaced by a guess.
const Unknown = "unknown"

// Container is the container a process runs in, from its cgroup path.
type Container struct {
	Runtime string `json:"runtime"` // containerd, cri-o, docker, podman
	ID      string `json:"id"`
}

// Pod is the Kubernetes pod a process runs in.
type Pod struct {
	Namespace      string            `json:"namespace"`
	Name           string            `json:"name"`
	UID            string            `json:"uid"`
	ServiceAccount string            `json:"service_account"`
	Labels         map[string]string `json:"labels,omitempty"`
}

// Workload names the process's workload in one string for filters and
// labels: "pod/NS/NAME", "container/RUNTIME/ID12", "cgroup/PATH" or Unknown.
func (p *Process) Workload() string {
	switch {
	case p == nil:
		return Unknown
	case p.Pod != nil && p.Pod.Name != Unknown:
		return "pod/" + p.Pod.Namespace + "/" + p.Pod.Name
	case p.Container != nil:
		id := p.Container.ID
		if len(id) > 12 {
			id = id[:12]
		}
		return "container/" + p.Container.Runtime + "/" + id
	case p.CgroupPath != "":
		return "cgroup" + p.CgroupPath
	}
	return Unknown
}

// TLSInfo describes the upstream TLS session.
type TLSInfo struct {
	Version     string `json:"version,omitempty"`
	Cipher      string `json:"cipher,omitempty"`
	ServerName  string `json:"server_name,omitempty"`
	PeerSubject string `json:"peer_subject,omitempty"`
	Resumed     bool   `json:"resumed"`
}

// Event is one line of the audit trail.
type Event struct {
	Time         time.Time `json:"time"` // written as RFC3339Nano UTC
	Event        string    `json:"event"`
	Verdict      Verdict   `json:"verdict"`
	Rule         string    `json:"rule,omitempty"`
	Mode         string    `json:"mode,omitempty"`
	Session      string    `json:"session,omitempty"`
	Source       string    `json:"source,omitempty"`
	Destination  string    `json:"destination,omitempty"` // original destination
	Upstream     string    `json:"upstream,omitempty"`
	Process      *Process  `json:"process,omitempty"`
	NetnsCookie  uint64    `json:"netns_cookie,omitempty"`
	SocketCookie uint64    `json:"socket_cookie,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	// Pointers so that a session_end with zero bytes still says 0.
	BytesSent       *int64   `json:"bytes_sent,omitempty"`
	BytesReceived   *int64   `json:"bytes_received,omitempty"`
	Duration        string   `json:"duration,omitempty"`
	DurationSeconds float64  `json:"duration_seconds,omitempty"`
	TLS             *TLSInfo `json:"tls,omitempty"`
	// Tunnel sessions: the service reached on the inbound side and who the
	// caller proved to be (token claims, mTLS certificate).
	Service  string    `json:"service,omitempty"`
	Identity *Identity `json:"identity,omitempty"`
}

// Identity is the authenticated caller of a tunnel stream, or on the
// outbound side what this host presented.
type Identity struct {
	Subject     string   `json:"subject,omitempty"` // token sub
	Issuer      string   `json:"issuer,omitempty"`  // token iss
	PeerSubject string   `json:"peer_subject,omitempty"`
	PeerSANs    []string `json:"peer_sans,omitempty"`
	Source      string   `json:"source,omitempty"` // the caller's own account of its workload
}

// SetBytes records transfer counters; zero values are still written.
func (e *Event) SetBytes(sent, received int64) {
	e.BytesSent = &sent
	e.BytesReceived = &received
}

// SetDuration fills both the human and the numeric duration fields.
func (e *Event) SetDuration(d time.Duration) {
	e.Duration = d.String()
	e.DurationSeconds = d.Seconds()
}

// NewSessionID returns a short random id (16 hex characters).
func NewSessionID() string {
	var b [8]byte
	// crypto/rand.Read never returns an error (it aborts the program instead).
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sanitize returns a copy of e whose workload-controlled strings are valid
// UTF-8 (threat T17). encoding/json escapes control characters and newlines
// itself; invalid bytes are replaced here explicitly rather than relying on
// the encoder, and the caller's Process/TLS structs are never mutated.
func sanitize(e Event) Event {
	e.Reason = validUTF8(e.Reason)
	if p := e.Process; p != nil && (!utf8.ValidString(p.Comm) || !utf8.ValidString(p.CgroupPath) || !utf8.ValidString(p.Exe)) {
		c := *p
		c.Comm = validUTF8(c.Comm)
		c.CgroupPath = validUTF8(c.CgroupPath)
		c.Exe = validUTF8(c.Exe)
		e.Process = &c
	}
	if t := e.TLS; t != nil && (!utf8.ValidString(t.ServerName) || !utf8.ValidString(t.PeerSubject)) {
		c := *t
		c.ServerName = validUTF8(c.ServerName)
		c.PeerSubject = validUTF8(c.PeerSubject)
		e.TLS = &c
	}
	if id := e.Identity; id != nil {
		c := *id
		c.Subject, c.Issuer = validUTF8(c.Subject), validUTF8(c.Issuer)
		c.PeerSubject, c.Source = validUTF8(c.PeerSubject), validUTF8(c.Source)
		c.PeerSANs = nil
		for _, s := range id.PeerSANs {
			c.PeerSANs = append(c.PeerSANs, validUTF8(s))
		}
		e.Identity = &c
	}
	return e
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
