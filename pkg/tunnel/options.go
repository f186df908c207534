package tunnel

import (
	"crypto/tls"
	"log/slog"
	"time"
)

// HTTP/2 sizes shared by both sides; the values are ztunnel's defaults.
const (
	streamWindow = 4 << 20  // initial receive window per stream
	connWindow   = 16 << 20 // receive window per connection
	maxFrameSize = 1 << 20  // largest DATA frame we accept
)

// ClientOptions configures a Client. Zero values take the defaults.
type ClientOptions struct {
	// TLS for the connections to peer agents; the caller sets RootCAs,
	// ServerName (default: the peer's IP) and client certificates.
	// NextProtos is forced to ["h2"], MinVersion to TLS 1.3, and a session
	// cache is added if there is none so reconnects resume.
	TLS *tls.Config
	// Mark is set as SO_MARK on each socket before connect, so the BPF
	// connect hook leaves the agent's own connections alone; 0 sets none.
	Mark uint32
	// DialTimeout bounds TCP connect, TLS handshake and the HTTP/2 SETTINGS
	// exchange of a new connection; default 10s.
	DialTimeout time.Duration
	// PingInterval: a connection that received nothing for this long is
	// sent a PING; default 15s.
	PingInterval time.Duration
	// PingTimeout: no PONG within this closes the connection; its streams
	// fail and new streams go elsewhere; default 5s.
	PingTimeout time.Duration
	// MaxStreamsPerConn opens another connection past this many streams;
	// default 100 (ztunnel's pool_max_streams_per_conn). The peer's
	// SETTINGS_MAX_CONCURRENT_STREAMS bounds it too.
	MaxStreamsPerConn int
	// MaxConnsPerPeer: when all are full, Dial waits for a stream to end
	// until its context is done; default 64, so 6,400 concurrent streams
	// per peer at the default MaxStreamsPerConn. (It was 8: connection
	// 801 to one peer then stalled until the dial timeout and failed,
	// which tools/bench -mode tunnel's 1,000 idle connections hit.)
	MaxConnsPerPeer int
	// IdleTimeout closes a pooled connection that carried no stream for this
	// long; default 5m (ztunnel's pool_unused_release_timeout).
	IdleTimeout time.Duration
	// SingleUse turns pooling off: each Dial gets a new connection of its
	// own (TCP, TLS handshake, HTTP/2 preface) that carries only its stream,
	// is never shared nor reused, and is closed when the stream is released.
	// MaxStreamsPerConn and MaxConnsPerPeer do not apply. For benchmarking
	// (one handshake per client connection) and for peers that cannot
	// multiplex.
	SingleUse bool
	// Logger reports connections breaking; default slog.Default().
	Logger *slog.Logger
}

func (o ClientOptions) withDefaults() ClientOptions {
	setDuration(&o.DialTimeout, 10*time.Second)
	setDuration(&o.PingInterval, 15*time.Second)
	setDuration(&o.PingTimeout, 5*time.Second)
	setDuration(&o.IdleTimeout, 5*time.Minute)
	if o.MaxStreamsPerConn <= 0 {
		o.MaxStreamsPerConn = 100
	}
	if o.MaxConnsPerPeer <= 0 {
		o.MaxConnsPerPeer = 64
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// ServerOptions configures a Server. Zero values take the defaults.
type ServerOptions struct {
	// TLS provides certificates (GetCertificate for reloads) and, for mTLS,
	// ClientAuth and ClientCAs. NextProtos is forced to ["h2"], MinVersion
	// to TLS 1.3.
	TLS *tls.Config
	// Handler decides and serves each stream.
	Handler Handler
	// MaxConcurrentStreams per connection; default 250.
	MaxConcurrentStreams uint32
	// MaxHeaderBytes bounds a CONNECT's header list (431 beyond); default
	// 16 KiB, plenty for a JWT and identity headers.
	MaxHeaderBytes int
	// IdleTimeout sends GOAWAY to a connection without streams for this
	// long; default 10m, longer than the client's 5m so clients close first.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake; default 10s.
	HandshakeTimeout time.Duration
	// PingInterval and PingTimeout detect dead clients like the client's
	// options do; defaults 15s and 5s.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (o ServerOptions) withDefaults() ServerOptions {
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = 250
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 16 << 10
	}
	setDuration(&o.IdleTimeout, 10*time.Minute)
	setDuration(&o.HandshakeTimeout, 10*time.Second)
	setDuration(&o.PingInterval, 15*time.Second)
	setDuration(&o.PingTimeout, 5*time.Second)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}
