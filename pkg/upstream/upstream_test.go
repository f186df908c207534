package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/intransit/intransit/pkg/config"
)

// listen opens a loopback listener closed at test end.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

func addrOf(t testing.TB, ln net.Listener) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(ln.Addr().String())
	if err != nil {
		t.Fatalf("parse listener address: %v", err)
	}
	return ap
}

// serve accepts connections until the listener closes, handing each to fn in
// its own goroutine; connections are closed at test end.
func serve(t testing.TB, ln net.Listener, fn func(net.Conn)) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { _ = ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fn(c)
			}()
		}
	}()
}

// startTLSServer runs a TLS server that, after a successful handshake,
// writes "ok\n" and then discards input until EOF.
func startTLSServer(t testing.TB, cfg *tls.Config) netip.AddrPort {
	t.Helper()
	ln := listen(t)
	serve(t, ln, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			return
		}
		if _, err := tc.Write([]byte("ok\n")); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, tc)
	})
	return addrOf(t, ln)
}

// startSilentServer accepts TCP and never speaks TLS.
func startSilentServer(t testing.TB) netip.AddrPort {
	t.Helper()
	ln := listen(t)
	stop := make(chan struct{})
	serve(t, ln, func(c net.Conn) { <-stop })
	t.Cleanup(func() { close(stop) })
	return addrOf(t, ln)
}

func serverConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

func newTestDialer(t testing.TB, o Options) *Dialer {
	t.Helper()
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = 5 * time.Second
	}
	d, err := NewDialer(o)
	if err != nil {
		t.Fatalf("NewDialer: %v", err)
	}
	return d
}

// dialOK dials and checks the server's greeting, which also makes the client
// process TLS 1.3 session tickets sent ahead of it.
func dialOK(t testing.TB, d *Dialer, dst netip.AddrPort) *tls.Conn {
	t.Helper()
	c, err := d.Dial(context.Background(), dst)
	if err != nil {
		t.Fatalf("Dial %s: %v (reason %s)", dst, err, Reason(err))
	}
	t.Cleanup(func() { _ = c.Close() })
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ok\n" {
		t.Fatalf("read greeting: %q, %v", buf, err)
	}
	return c
}

func TestDialTLS13(t *testing.T) {
	p := newTestPKI(t)
	dst := startTLSServer(t, serverConfig(p.server))
	d := newTestDialer(t, Options{TLS: config.TLS{CAFile: p.caFile}})

	c := dialOK(t, d, dst)
	version, cipher := ConnectionState(c)
	if version != "TLS 1.3" {
		t.Errorf("version = %q, want TLS 1.3", version)
	}
	switch cipher {
	case "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256":
	default:
		t.Errorf("cipher = %q, want a TLS 1.3 suite", cipher)
	}
	if got := c.ConnectionState().CurveID; got != tls.X25519 {
		t.Errorf("key exchange = %v, want X25519", got)
	}
}

func TestDialTLS12UsesAEAD(t *testing.T) {
	p := newTestPKI(t)
	cfg := serverConfig(p.server)
	cfg.MaxVersion = tls.VersionTLS12
	dst := startTLSServer(t, cfg)
	d := newTestDialer(t, Options{TLS: config.TLS{CAFile: p.caFile}})

	version, cipher := ConnectionState(dialOK(t, d, dst))
	if version != "TLS 1.2" {
		t.Errorf("version = %q, want TLS 1.2", version)
	}
	if !strings.HasPrefix(cipher, "TLS_ECDHE_ECDSA_WITH_") ||
		!(strings.Contains(cipher, "_GCM_") || strings.Contains(cipher, "CHACHA20_POLY1305")) {
		t.Errorf("cipher = %q, want an ECDHE AEAD suite", cipher)
	}
}

func TestServerWithOnlyP384Connects(t *testing.T) {
	p := newTestPKI(t)
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		cfg := serverConfig(p.server)
		cfg.CurvePreferences = []tls.CurveID{tls.CurveP384}
		cfg.MaxVersion = v
		d := newTestDialer(t, Options{TLS: config.TLS{CAFile: p.caFile}})
		c := dialOK(t, d, startTLSServer(t, cfg))
		if got := c.ConnectionState().CurveID; got != tls.CurveP384 {
			t.Errorf("%s: key exchange = %v, want P-384", tls.VersionName(v), got)
		}
	}
}

func TestResumption(t *testing.T) {
	p := newTestPKI(t)
	dst := startTLSServer(t, serverConfig(p.server))
	d := newTestDialer(t, Options{TLS: config.TLS{CAFile: p.caFile}})

	if first := dialOK(t, d, dst); first.ConnectionState().DidResume {
		t.Fatal("first connection resumed with an empty session cache")
	}
	if second := dialOK(t, d, dst); !second.ConnectionState().DidResume {
		t.Error("second connection did not resume")
	}
}

func TestServerNameAndAddress(t *testing.T) {
	p := newTestPKI(t)
	dst := startTLSServer(t, serverConfig(p.server))

	tests := []struct {
		name string
		tls  config.TLS
		dst  netip.AddrPort
	}{
		// Empty ServerName: the destination IP is verified against IP SANs.
		{"default is destination IP", config.TLS{}, dst},
		{"explicit DNS name", config.TLS{ServerName: testDNSName}, dst},
		{"IPv4-mapped destination", config.TLS{}, netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())},
		{"port override", config.TLS{Port: int(dst.Port())}, netip.AddrPortFrom(dst.Addr(), 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.tls.CAFile = p.caFile
			dialOK(t, newTestDialer(t, Options{TLS: tt.tls}), tt.dst)
		})
	}
}

func TestDialFailures(t *testing.T) {
	p := newTestPKI(t)
	tests := []struct {
		name   string
		server func() *tls.Config
		tls    config.TLS
		want   string
	}{
		{
			name:   "wrong CA",
			server: func() *tls.Config { return serverConfig(p.server) },
			tls:    config.TLS{CAFile: p.otherCAFile},
			want:   "cert_unknown_authority",
		},
		{
			name:   "wrong name",
			server: func() *tls.Config { return serverConfig(p.server) },
			tls:    config.TLS{CAFile: p.caFile, ServerName: "other.test"},
			want:   "cert_name_mismatch",
		},
		{
			name:   "expired",
			server: func() *tls.Config { return serverConfig(p.expired) },
			tls:    config.TLS{CAFile: p.caFile},
			want:   "cert_expired",
		},
		{
			name:   "client-auth-only certificate as server",
			server: func() *tls.Config { return serverConfig(p.clientOnly) },
			tls:    config.TLS{CAFile: p.caFile},
			want:   "cert_invalid",
		},
		{
			name: "server only offers TLS 1.1",
			server: func() *tls.Config {
				c := serverConfig(p.server)
				c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
				return c
			},
			tls:  config.TLS{CAFile: p.caFile},
			want: "tls_version",
		},
		{
			name: "server only offers a CBC suite",
			server: func() *tls.Config {
				c := serverConfig(p.server)
				c.MaxVersion = tls.VersionTLS12
				c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
				return c
			},
			tls:  config.TLS{CAFile: p.caFile},
			want: "tls_alert",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := startTLSServer(t, tt.server())
			d := newTestDialer(t, Options{TLS: tt.tls})
			c, err := d.Dial(context.Background(), dst)
			if err == nil {
				_ = c.Close()
				t.Fatal("Dial succeeded, want an error")
			}
			t.Logf("error: %v", err)
			if got := Reason(err); got != tt.want {
				t.Errorf("Reason = %q, want %q (err: %v)", got, tt.want, err)
			}
			if !strings.Contains(err.Error(), "tls handshake with upstream "+dst.String()) {
				t.Errorf("error %q does not say what was being done", err)
			}
		})
	}
}

func TestSystemRootsRejectTestCA(t *testing.T) {
	p := newTestPKI(t)
	dst := startTLSServer(t, serverConfig(p.server))
	// No caFile: system roots, which must not know the test CA. The exact
	// label depends on whether the host has a system root store at all.
	_, err := newTestDialer(t, Options{}).Dial(context.Background(), dst)
	if got := Reason(err); got != "cert_unknown_authority" && got != "cert_invalid" {
		t.Errorf("Reason = %q, want a certificate failure (err: %v)", got, err)
	}
}

func TestPlaintextServerIsHandshakeError(t *testing.T) {
	ln := listen(t)
	serve(t, ln, func(c net.Conn) {
		_, _ = c.Read(make([]byte, 512))
		_, _ = io.WriteString(c, "HTTP/1.0 400 Bad Request\r\n\r\n")
	})
	d := newTestDialer(t, Options{})
	_, err := d.Dial(context.Background(), addrOf(t, ln))
	var rh tls.RecordHeaderError
	if !errors.As(err, &rh) {
		t.Fatalf("err = %v, want a tls.RecordHeaderError", err)
	}
	if got := Reason(err); got != "handshake_error" {
		t.Errorf("Reason = %q, want handshake_error", got)
	}
}

func TestDialRefused(t *testing.T) {
	ln := listen(t)
	dst := addrOf(t, ln)
	_ = ln.Close()

	_, err := newTestDialer(t, Options{}).Dial(context.Background(), dst)
	if got := Reason(err); got != "dial_refused" {
		t.Errorf("Reason = %q, want dial_refused (err: %v)", got, err)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	dst := startSilentServer(t)
	d := newTestDialer(t, Options{HandshakeTimeout: 200 * time.Millisecond})

	start := time.Now()
	_, err := d.Dial(context.Background(), dst)
	if got := Reason(err); got != "handshake_timeout" {
		t.Errorf("Reason = %q, want handshake_timeout (err: %v)", got, err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("Dial took %v with a 200ms handshake timeout", el)
	}
}

func TestDialCanceledMidHandshake(t *testing.T) {
	dst := startSilentServer(t)
	d := newTestDialer(t, Options{HandshakeTimeout: 30 * time.Second})

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := d.Dial(ctx, dst)
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Dial took %v after cancel", el)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if got := Reason(err); got != "canceled" {
		t.Errorf("Reason = %q, want canceled", got)
	}
}

func TestDialCanceledBeforeConnect(t *testing.T) {
	dst := startSilentServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := newTestDialer(t, Options{}).Dial(ctx, dst)
	if got := Reason(err); got != "canceled" {
		t.Errorf("Reason = %q, want canceled (err: %v)", got, err)
	}
}

func TestMutualTLS(t *testing.T) {
	p := newTestPKI(t)
	mtls := func(maxVersion uint16) netip.AddrPort {
		cfg := serverConfig(p.server)
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = p.caPool
		cfg.MaxVersion = maxVersion
		return startTLSServer(t, cfg)
	}
	withCert := config.TLS{CAFile: p.caFile, CertFile: p.clientOnlyCertFile, KeyFile: p.clientOnlyKeyFile}
	noCert := config.TLS{CAFile: p.caFile}

	t.Run("accepted with client certificate", func(t *testing.T) {
		for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
			dialOK(t, newTestDialer(t, Options{TLS: withCert}), mtls(v))
		}
	})
	t.Run("refused without client certificate TLS 1.2", func(t *testing.T) {
		_, err := newTestDialer(t, Options{TLS: noCert}).Dial(context.Background(), mtls(tls.VersionTLS12))
		if got := Reason(err); got != "tls_alert" {
			t.Errorf("Reason = %q, want tls_alert (err: %v)", got, err)
		}
	})
	t.Run("refused without client certificate TLS 1.3", func(t *testing.T) {
		// In TLS 1.3 the client finishes first; the server's refusal
		// arrives as an alert on the first read, before any server data.
		c, err := newTestDialer(t, Options{TLS: noCert}).Dial(context.Background(), mtls(tls.VersionTLS13))
		if err != nil {
			if got := Reason(err); got != "tls_alert" {
				t.Errorf("Reason = %q, want tls_alert (err: %v)", got, err)
			}
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(make([]byte, 16))
		if err == nil || n > 0 {
			t.Fatalf("read %d bytes, err %v; want the server's refusal", n, err)
		}
		if !strings.Contains(err.Error(), "certificate required") {
			t.Errorf("read err = %v, want certificate required alert", err)
		}
	})
}

func TestNewDialerErrors(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name string
		tls  config.TLS
		want string // substring of the error
	}{
		{"missing CA file", config.TLS{CAFile: missing}, missing},
		{"CA file without certificates", config.TLS{CAFile: garbage}, garbage},
		{"cert without key", config.TLS{CertFile: p.clientOnlyCertFile}, "keyFile"},
		{"key without cert", config.TLS{KeyFile: p.clientOnlyKeyFile}, "certFile"},
		{"bad key file", config.TLS{CertFile: p.clientOnlyCertFile, KeyFile: garbage}, garbage},
		{"missing cert file", config.TLS{CertFile: missing, KeyFile: p.clientOnlyKeyFile}, missing},
		{"port out of range", config.TLS{Port: 70000}, "70000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewDialer(Options{TLS: tt.tls})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestReasonClassifiesWrappedErrors(t *testing.T) {
	dst := netip.MustParseAddrPort("192.0.2.1:443")
	dial := func(err error) error { return &stageError{stage: stageDial, addr: dst, err: err} }
	hs := func(err error) error { return &stageError{stage: stageHandshake, addr: dst, name: "x", err: err} }
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{dial(&net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded}), "dial_timeout"},
		{dial(context.DeadlineExceeded), "dial_timeout"},
		{dial(&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), "dial_refused"},
		{dial(&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}), "dial_error"},
		{hs(context.DeadlineExceeded), "handshake_timeout"},
		{hs(context.Canceled), "canceled"},
		{hs(tls.AlertError(70)), "tls_version"},
		{hs(tls.AlertError(40)), "tls_alert"},
		{hs(errors.New("tls: server selected unsupported protocol version 301")), "tls_version"},
		{hs(io.EOF), "handshake_error"},
		{errors.New("unstaged"), "dial_error"},
	}
	for _, tt := range tests {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// BenchmarkHandshake measures the CPU cost of a new connection (client and
// server together, over an in-memory pipe so TCP setup and TIME_WAIT do not
// drown the signal) for the chosen key exchanges against Go's default, which
// adds the hybrid post-quantum X25519MLKEM768 key share.
func BenchmarkHandshake(b *testing.B) {
	p := newTestPKI(b)
	for _, bc := range []struct {
		name      string
		goDefault bool // Go's default key exchanges instead of the Dialer's
		resumed   bool
	}{
		{name: "chosen/full"},
		{name: "go-default/full", goDefault: true},
		{name: "chosen/resumed", resumed: true},
		{name: "go-default/resumed", goDefault: true, resumed: true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := serverConfig(p.server)
			srv.SessionTicketsDisabled = !bc.resumed
			d := newTestDialer(b, Options{TLS: config.TLS{CAFile: p.caFile, ServerName: "127.0.0.1"}})
			if bc.goDefault {
				d.cfg.CurvePreferences = nil
			}
			handshake := func() {
				cc, sc := net.Pipe()
				done := make(chan error, 1)
				go func() {
					s := tls.Server(sc, srv)
					err := s.Handshake()
					if err == nil {
						_, err = s.Write([]byte("ok\n"))
					}
					_ = sc.Close()
					done <- err
				}()
				c := tls.Client(cc, d.cfg)
				// Reading the greeting processes the session ticket.
				if _, err := io.ReadFull(c, make([]byte, 3)); err != nil {
					b.Fatal(err)
				}
				_ = cc.Close()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
			handshake() // fill the session cache
			for b.Loop() {
				handshake()
			}
		})
	}
}
