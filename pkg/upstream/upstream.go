// Package upstream originates TLS connections towards the original
// destination of a redirected plaintext connect.
//
// It never falls back to plaintext: Dial returns either a connection whose
// handshake completed and whose peer certificate verified, or an error.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/relay"

	"github.com/intransit/intransit/pkg/sockmark"
)

// sessionCacheSize bounds the resumption tickets kept per Dialer; one ticket
// per destination name is enough, so 1024 covers large fleets in little memory.
const sessionCacheSize = 1024

// Options configures a Dialer for one rule.
type Options struct {
	TLS config.TLS
	// Mark is set as SO_MARK on the socket before connect so the BPF connect
	// hook recognises the proxy's own sockets and does not redirect them.
	// Zero sets no mark.
	Mark uint32
	// DialTimeout bounds the TCP connect; zero means no limit beyond ctx.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake; zero means no limit beyond ctx.
	HandshakeTimeout time.Duration
}

// Dialer dials the original destination with TLS for one rule.
// It is safe for concurrent use.
type Dialer struct {
	cfg              *tls.Config // shared so the session cache is shared
	port             uint16      // 0: use the original destination port
	net              net.Dialer
	handshakeTimeout time.Duration
}

// NewDialer builds a Dialer, loading the CA and client certificate files now
// so that configuration mistakes surface at startup, not per connection.
func NewDialer(o Options) (*Dialer, error) {
	if o.TLS.Port < 0 || o.TLS.Port > 65535 {
		return nil, fmt.Errorf("upstream tls port %d out of range", o.TLS.Port)
	}
	cfg, err := clientConfig(o.TLS)
	if err != nil {
		return nil, err
	}
	d := &Dialer{
		cfg:              cfg,
		port:             uint16(o.TLS.Port),
		handshakeTimeout: o.HandshakeTimeout,
		net:              net.Dialer{Timeout: o.DialTimeout},
	}
	if o.Mark != 0 {
		d.net.Control = sockmark.Control(o.Mark)
	}
	return d, nil
}

// clientConfig builds the shared client tls.Config from the rule settings.
func clientConfig(t config.TLS) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// TLS 1.3 suites are not configurable (all AEAD). For TLS 1.2 allow
		// only forward-secret AEAD suites; Go orders them itself.
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		// Key exchange: classical ECDHE only. Go's default adds the hybrid
		// post-quantum X25519MLKEM768 (and its P-256/P-384 variants) and then
		// sends two key shares per ClientHello; BenchmarkHandshake measured
		// 1.5x the CPU per full handshake and 1.9x per resumed one (TLS 1.3
		// resumption still does a key exchange), and the new-connection rate
		// is the proxy's bottleneck. The price is no post-quantum protection
		// for recorded traffic; revisit when ML-KEM gets cheaper or needed.
		// Go ignores the order and prefers X25519, the only key share sent.
		// P-384 costs nothing unless a server supports nothing else (common
		// "ssl_ecdh_curve secp384r1" hardening), where it turns a hard
		// failure into one HelloRetryRequest round trip.
		CurvePreferences:   []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384},
		ClientSessionCache: tls.NewLRUClientSessionCache(sessionCacheSize),
		// Empty ServerName is filled per dial with the destination IP, which
		// Go then verifies against the certificate's IP SANs.
		ServerName: t.ServerName,
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read upstream ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read upstream ca file %s: no PEM certificates found", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("upstream client certificate needs both certFile and keyFile")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load upstream client certificate %s with key %s: %w", t.CertFile, t.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Dial connects to dst, the original destination, on the rule's TLS port (or
// dst's port when none is configured) and completes the TLS handshake.
// Canceling ctx aborts the dial or handshake. On error the socket is closed
// and the error can be classified with Reason.
func (d *Dialer) Dial(ctx context.Context, dst netip.AddrPort) (*tls.Conn, error) {
	// Unmap: the kernel may report IPv4 destinations as ::ffff:a.b.c.d, and
	// the certificate's IP SAN and the connect both want the IPv4 form.
	ip := dst.Addr().Unmap()
	port := d.port
	if port == 0 {
		port = dst.Port()
	}
	addr := netip.AddrPortFrom(ip, port)
	if !ip.IsValid() || port == 0 {
		return nil, &stageError{stage: stageDial, addr: addr, err: errors.New("invalid destination address")}
	}

	raw, err := d.net.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, &stageError{stage: stageDial, addr: addr, err: err}
	}

	cfg := d.cfg
	if cfg.ServerName == "" {
		// Clone shares the session cache; WithZone drops any IPv6 zone,
		// which can never appear in a certificate.
		cfg = cfg.Clone()
		cfg.ServerName = ip.WithZone("").String()
	}
	// BatchConn lets the relay send the records of one large write at once.
	conn := tls.Client(relay.NewBatchConn(raw), cfg)
	if err := d.handshake(ctx, raw, conn); err != nil {
		_ = raw.Close()
		return nil, &stageError{stage: stageHandshake, addr: addr, name: cfg.ServerName, err: err}
	}
	return conn, nil
}

// handshake runs the TLS handshake within HandshakeTimeout. A socket deadline
// rather than a derived context: no extra context per connection, and our
// timeout (os.ErrDeadlineExceeded) stays distinct from the caller canceling
// ctx (context.Canceled).
func (d *Dialer) handshake(ctx context.Context, raw net.Conn, conn *tls.Conn) error {
	if d.handshakeTimeout <= 0 {
		return conn.HandshakeContext(ctx)
	}
	if err := raw.SetDeadline(time.Now().Add(d.handshakeTimeout)); err != nil {
		return err
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		return err
	}
	// The relay must not inherit the handshake deadline.
	return raw.SetDeadline(time.Time{})
}

// ConnectionState reports the negotiated TLS version and cipher suite names
// for audit records, e.g. "TLS 1.3" and "TLS_AES_128_GCM_SHA256".
func ConnectionState(c *tls.Conn) (version, cipher string) {
	st := c.ConnectionState()
	return tls.VersionName(st.Version), suiteName(st.CipherSuite)
}

// suiteNames is built once: tls.CipherSuiteName rebuilds the whole suite
// list on every call, which showed up in per-connection profiles.
var suiteNames = sync.OnceValue(func() map[uint16]string {
	m := make(map[uint16]string)
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		m[s.ID] = s.Name
	}
	return m
})

func suiteName(id uint16) string {
	if n, ok := suiteNames()[id]; ok {
		return n
	}
	return tls.CipherSuiteName(id)
}
