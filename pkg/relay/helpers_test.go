package relay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection; the caller closes them.
func tcpPair(t testing.TB) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	type res struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.AcceptTCP()
		ch <- res{c, err}
	}()
	dialed, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	r := <-ch
	if r.err != nil {
		_ = dialed.Close()
		t.Fatalf("accept: %v", r.err)
	}
	return dialed, r.c
}

// testTLS holds a self-signed server identity and a client config trusting it.
type testTLS struct {
	server *tls.Config
	client *tls.Config
}

func newTestTLS(t testing.TB) *testTLS {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "relay test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testTLS{
		server: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		client: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
	}
}

// pair returns a handshaken TLS connection over loopback TCP.
func (tt *testTLS) pair(t testing.TB) (client, server *tls.Conn) {
	t.Helper()
	dialed, accepted := tcpPair(t)
	client = tls.Client(dialed, tt.client)
	server = tls.Server(accepted, tt.server)
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return client, server
}

// setup is one relay under test: app <-> [clientSide RELAY upstreamSide] <-> server.
type setup struct {
	app      *net.TCPConn // the application that made the plaintext connect
	server   net.Conn     // the upstream destination (*net.TCPConn or *tls.Conn)
	client   net.Conn     // Relay's client conn
	upstream net.Conn     // Relay's upstream conn
}

// newSetup builds the four endpoints, closed at test end; a non-nil tt makes
// the upstream leg TLS.
func newSetup(t testing.TB, tt *testTLS) *setup {
	t.Helper()
	s := buildSetup(t, tt)
	t.Cleanup(s.closeAll)
	return s
}

// buildSetup is newSetup without the cleanup, for loops that close each
// setup themselves instead of piling sockets up until the test ends.
func buildSetup(t testing.TB, tt *testTLS) *setup {
	t.Helper()
	app, client := tcpPair(t)
	s := &setup{app: app, client: client}
	if tt == nil {
		s.upstream, s.server = tcpPair(t)
	} else {
		s.upstream, s.server = tt.pair(t)
	}
	return s
}

func (s *setup) closeAll() {
	for _, c := range []net.Conn{s.app, s.server, s.client, s.upstream} {
		_ = c.Close()
	}
}

type relayResult struct {
	st  Stats
	err error
}

// start runs Relay in the background.
func (s *setup) start(idle time.Duration) <-chan relayResult {
	ch := make(chan relayResult, 1)
	go func() {
		st, err := Relay(s.client, s.upstream, idle)
		ch <- relayResult{st, err}
	}()
	return ch
}

// wait returns the relay result or fails after d.
func wait(t testing.TB, ch <-chan relayResult, d time.Duration) relayResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		t.Fatalf("relay did not finish within %v", d)
		return relayResult{}
	}
}
