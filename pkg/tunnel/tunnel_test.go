package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestConnectRoundTrip(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	seen := make(chan *Request, 1)
	_, addr := startServer(t, ServerOptions{
		TLS: pki.serverTLSConfig(),
		Handler: func(ctx context.Context, r *Request, accept func() (net.Conn, error)) error {
			seen <- r
			return echo(ctx, r, accept)
		},
	})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})

	hdr := http.Header{"Authorization": {"Bearer token-1"}, "Intransit-Source": {"ns/agents/planner"}}
	s, err := c.Dial(dialCtx(t), addr, "10.0.0.7:8080", hdr)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer s.Close()
	got, err := roundTrip(s, []byte("hello through the tunnel"))
	if err != nil || string(got) != "hello through the tunnel" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if s.RemoteAddr().String() != addr.String() {
		t.Errorf("RemoteAddr = %v, want %v", s.RemoteAddr(), addr)
	}
	if s.LocalAddr() == nil || s.LocalAddr().String() == addr.String() {
		t.Errorf("LocalAddr = %v", s.LocalAddr())
	}

	r := <-seen
	if r.Target != "10.0.0.7:8080" {
		t.Errorf("Target = %q", r.Target)
	}
	if r.Header.Get("Authorization") != "Bearer token-1" || r.Header.Get("Intransit-Source") != "ns/agents/planner" {
		t.Errorf("Header = %v", r.Header)
	}
	if len(r.PeerCerts) != 2 || len(r.PeerCerts[0].URIs) != 1 || r.PeerCerts[0].URIs[0].String() != testClientID {
		t.Errorf("PeerCerts = %v, want the verified chain of %s", r.PeerCerts, testClientID)
	}
	if r.RemoteAddr.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("RemoteAddr = %v", r.RemoteAddr)
	}
	if r.TLS == nil || r.TLS.Version != tls.VersionTLS13 || r.TLS.NegotiatedProtocol != "h2" {
		t.Errorf("TLS = %+v", r.TLS)
	}
}

func TestNoClientCertificate(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	seen := make(chan *Request, 1)
	stls := pki.serverTLSConfig()
	stls.ClientAuth = tls.NoClientCert
	_, addr := startServer(t, ServerOptions{TLS: stls, Handler: func(ctx context.Context, r *Request, accept func() (net.Conn, error)) error {
		seen <- r
		return echo(ctx, r, accept)
	}})
	ctls := pki.clientTLSConfig()
	ctls.Certificates = nil
	c := newTestClient(t, ClientOptions{TLS: ctls})
	s, err := c.Dial(dialCtx(t), addr, "10.0.0.7:8080", nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer s.Close()
	if got, err := roundTrip(s, []byte("x")); err != nil || string(got) != "x" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if r := <-seen; r.PeerCerts != nil {
		t.Errorf("PeerCerts = %v without a client certificate", r.PeerCerts)
	}
}

func TestRefusal(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	_, addr := startServer(t, ServerOptions{
		TLS: pki.serverTLSConfig(),
		Handler: func(_ context.Context, r *Request, accept func() (net.Conn, error)) error {
			switch r.Target {
			case "10.0.0.9:22":
				return &Refusal{Status: http.StatusForbidden, Reason: "unlisted target"}
			case "10.0.0.9:23":
				return errors.New("executor unreachable: secret detail")
			case "10.0.0.9:24":
				return &Refusal{Status: http.StatusOK, Reason: "bogus"}
			default:
				return nil // neither accepts nor refuses
			}
		},
	})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})

	for _, tc := range []struct {
		target string
		code   int
		reason string
	}{
		{"10.0.0.9:22", 403, "unlisted target"},
		{"10.0.0.9:23", 500, "internal error"},
		{"10.0.0.9:24", 500, "bogus"},
		{"10.0.0.9:25", 500, "stream neither accepted nor refused"},
	} {
		s, err := c.Dial(dialCtx(t), addr, tc.target, nil)
		var se *StatusError
		if !errors.As(err, &se) {
			if s != nil {
				s.Close()
			}
			t.Fatalf("Dial %s: %v, want *StatusError", tc.target, err)
		}
		if se.Code != tc.code || se.Reason != tc.reason {
			t.Errorf("Dial %s: %d %q, want %d %q", tc.target, se.Code, se.Reason, tc.code, tc.reason)
		}
	}
	if st := c.Stats(); st.Streams != 0 || st.Handshakes != 1 {
		t.Errorf("after refusals: %+v, want no streams and one handshake", st)
	}
}

func TestNotConnect(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	_, addr := startServer(t, ServerOptions{TLS: pki.serverTLSConfig(), Handler: echo})

	ctls := pki.clientTLSConfig()
	ctls.NextProtos = []string{"h2"}
	tr := &http.Transport{TLSClientConfig: ctls, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + addr.String() + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "CONNECT" || resp.ProtoMajor != 2 {
		t.Errorf("GET: %s %v Allow=%q, want 405 over HTTP/2", resp.Status, resp.Proto, resp.Header.Get("Allow"))
	}

	// HTTP/1.1 is not spoken at all: crypto/tls lets a client offering
	// http/1.1 through without ALPN, and the server then hangs up.
	ctls = pki.clientTLSConfig()
	ctls.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", addr.String(), ctls)
	if err != nil {
		t.Fatalf("TLS with ALPN http/1.1: %v", err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err == nil {
		if n, err := conn.Read(make([]byte, 64)); err == nil || isTimeout(err) {
			t.Errorf("HTTP/1.1 without h2 got %d bytes, %v; want the connection closed", n, err)
		}
	}
}

func TestBadTarget(t *testing.T) {
	c := newTestClient(t, ClientOptions{})
	if _, err := c.Dial(dialCtx(t), netip.MustParseAddrPort("127.0.0.1:1"), "no-port", nil); err == nil {
		t.Error("Dial with a target without port succeeded")
	}
}

func TestHalfClose(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	serverErr := make(chan error, 1)
	_, addr := startServer(t, ServerOptions{
		TLS: pki.serverTLSConfig(),
		Handler: func(_ context.Context, r *Request, accept func() (net.Conn, error)) error {
			c, err := accept()
			if err != nil {
				serverErr <- err
				return err
			}
			defer c.Close()
			if r.Target == "client-first:1" {
				// Read to EOF, then answer and half-close.
				req, err := io.ReadAll(c)
				if err != nil || string(req) != "ping" {
					serverErr <- errors.New("server read " + string(req))
					return err
				}
				_, err = c.Write([]byte("pong"))
				if err == nil {
					err = c.(interface{ CloseWrite() error }).CloseWrite()
				}
				serverErr <- err
				return err
			}
			// server-first: answer and half-close before the client is done.
			if _, err := c.Write([]byte("bye")); err != nil {
				return err
			}
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				return err
			}
			_, err = io.ReadAll(c)
			serverErr <- err
			return nil
		},
	})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})

	t.Run("client first", func(t *testing.T) {
		s, err := c.Dial(dialCtx(t), addr, "client-first:1", nil)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer s.Close()
		if _, err := s.Write([]byte("ping")); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if err := s.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
		got, err := io.ReadAll(s)
		if err != nil || string(got) != "pong" {
			t.Fatalf("read %q, %v; want pong then EOF", got, err)
		}
		if err := <-serverErr; err != nil {
			t.Fatalf("server: %v", err)
		}
	})

	t.Run("server first", func(t *testing.T) {
		s, err := c.Dial(dialCtx(t), addr, "server-first:1", nil)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer s.Close()
		got, err := io.ReadAll(s)
		if err != nil || string(got) != "bye" {
			t.Fatalf("read %q, %v; want bye then EOF", got, err)
		}
		// The server's reads end with ErrServerHalfClose, not a clean EOF
		// that could pass a cut-off upload for a complete one.
		if err := <-serverErr; !errors.Is(err, ErrServerHalfClose) {
			t.Fatalf("server read after CloseWrite: %v, want ErrServerHalfClose", err)
		}
		// And the client learns its upload was refused.
		waitFor(t, 2*time.Second, "client write to fail", func() bool {
			_, err := s.Write([]byte("late"))
			return err != nil
		})
	})
}

// TestCloseResets checks that Close without a clean end reaches the other
// side as an error, never as EOF.
func TestCloseResets(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	serverRead := make(chan error, 1)
	_, addr := startServer(t, ServerOptions{
		TLS: pki.serverTLSConfig(),
		Handler: func(_ context.Context, r *Request, accept func() (net.Conn, error)) error {
			c, err := accept()
			if r.Target == "server-aborts:1" {
				if err == nil {
					_, _ = c.Write([]byte("partial"))
					_ = c.Close()
				}
				return err
			}
			if err == nil {
				// accept fails instead when the client's reset beats it.
				_, err = io.Copy(io.Discard, c)
				c.Close()
			}
			serverRead <- err
			return nil
		},
	})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})

	s, err := c.Dial(dialCtx(t), addr, "client-aborts:1", nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	if _, err := s.Write([]byte("partial")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	s.Close()
	if err := <-serverRead; err == nil {
		t.Error("server read a clean EOF after the client's Close without CloseWrite")
	}

	s, err = c.Dial(dialCtx(t), addr, "server-aborts:1", nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer s.Close()
	if got, err := io.ReadAll(s); err == nil {
		t.Errorf("client read %q and a clean EOF after the server's Close without CloseWrite", got)
	}
	if _, err := s.Read(make([]byte, 1)); err == nil {
		t.Error("Read after a reset succeeded")
	}
}

func TestDeadlines(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	handlerDone := make(chan error, 4)
	_, addr := startServer(t, ServerOptions{
		TLS: pki.serverTLSConfig(),
		Handler: func(_ context.Context, r *Request, accept func() (net.Conn, error)) (err error) {
			// Report on every path: accept itself fails when the client's
			// reset beats the 200's write completion.
			defer func() { handlerDone <- err }()
			c, err := accept()
			if err != nil {
				return err
			}
			defer c.Close()
			if r.Target == "server-deadline:1" {
				_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
					return fmt.Errorf("server read = %v, want a timeout", err)
				}
				if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
					return fmt.Errorf("second server read = %v, want the timeout", err)
				}
				return nil
			}
			_, err = io.Copy(io.Discard, c)
			return err
		},
	})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})

	t.Run("client read deadline resets the stream", func(t *testing.T) {
		s, err := c.Dial(dialCtx(t), addr, "client-deadline:1", nil)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer s.Close()
		// A deadline that is moved away before it expires does nothing.
		_ = s.SetDeadline(time.Now().Add(20 * time.Millisecond))
		_ = s.SetDeadline(time.Time{})
		time.Sleep(40 * time.Millisecond)
		if _, err := s.Write([]byte("still fine")); err != nil {
			t.Fatalf("Write after a cleared deadline: %v", err)
		}

		_ = s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		start := time.Now()
		_, err = s.Read(make([]byte, 1))
		if !isTimeout(err) || time.Since(start) > 2*time.Second {
			t.Fatalf("Read = %v after %v, want a timeout", err, time.Since(start))
		}
		if _, err := s.Write([]byte("x")); !isTimeout(err) {
			t.Errorf("Write after expiry = %v, want the timeout", err)
		}
		if err := <-handlerDone; err == nil {
			t.Error("server read EOF, want the reset")
		}
	})

	t.Run("past deadline", func(t *testing.T) {
		s, err := c.Dial(dialCtx(t), addr, "client-deadline:2", nil)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer s.Close()
		_ = s.SetWriteDeadline(time.Now().Add(-time.Second))
		if _, err := s.Write([]byte("x")); !isTimeout(err) {
			t.Errorf("Write = %v, want a timeout", err)
		}
		<-handlerDone
	})

	t.Run("server read deadline", func(t *testing.T) {
		s, err := c.Dial(dialCtx(t), addr, "server-deadline:1", nil)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer s.Close()
		if err := <-handlerDone; err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(s); err == nil {
			t.Error("client read a clean EOF after the server's deadline reset the stream")
		}
	})
}

func TestDialContext(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	var cancelled atomic.Bool
	_, addr := startServer(t, ServerOptions{
		TLS: pki.serverTLSConfig(),
		Handler: func(ctx context.Context, r *Request, accept func() (net.Conn, error)) error {
			if r.Target == "slow:1" {
				<-ctx.Done() // an authorizer that never answers
				cancelled.Store(true)
				return &Refusal{Status: http.StatusGatewayTimeout, Reason: "too slow"}
			}
			return echo(ctx, r, accept)
		},
	})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Dial(ctx, addr, "slow:1", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial = %v, want DeadlineExceeded", err)
	}
	waitFor(t, 2*time.Second, "the handler's context to end", cancelled.Load)
	if st := c.Stats(); st.Streams != 0 {
		t.Errorf("Stats after a cancelled Dial: %+v, want no stream held", st)
	}
	s, err := c.Dial(dialCtx(t), addr, "fast:1", nil)
	if err != nil {
		t.Fatalf("Dial after a cancelled one: %v", err)
	}
	defer s.Close()
	if got, err := roundTrip(s, []byte("ok")); err != nil || string(got) != "ok" {
		t.Fatalf("echo = %q, %v", got, err)
	}

	// The stream outlives the Dial context.
	ctx2, cancel2 := context.WithCancel(context.Background())
	s2, err := c.Dial(ctx2, addr, "fast:1", nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer s2.Close()
	cancel2()
	if got, err := roundTrip(s2, []byte("still here")); err != nil || string(got) != "still here" {
		t.Fatalf("echo after the Dial context ended = %q, %v", got, err)
	}
}

func TestPoolFull(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	_, addr := startServer(t, ServerOptions{TLS: pki.serverTLSConfig(), Handler: echo})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig(), MaxConnsPerPeer: 1, MaxStreamsPerConn: 2})

	held := make([]net.Conn, 2)
	for i := range held {
		s, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil)
		if err != nil {
			t.Fatalf("Dial %d: %v", i, err)
		}
		held[i] = s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Dial(ctx, addr, "10.0.0.1:80", nil); !errors.Is(err, ErrPoolFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third Dial = %v, want ErrPoolFull", err)
	}

	// A Dial waiting for capacity gets the slot a closing stream frees.
	got := make(chan error, 1)
	go func() {
		s, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil)
		if err == nil {
			s.Close()
		}
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	held[0].Close()
	if err := <-got; err != nil {
		t.Fatalf("waiting Dial: %v", err)
	}
	held[1].Close()
	if st := c.Stats(); st.Handshakes != 1 {
		t.Errorf("Stats = %+v, want one handshake", st)
	}
}

func TestShutdownDrains(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	srv := serveOn(t, ln, ServerOptions{TLS: pki.serverTLSConfig(), Handler: echo})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})

	s, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer s.Close()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(dialCtx(t)) }()

	// GOAWAY: the client stops using the connection but the stream goes on.
	waitFor(t, 2*time.Second, "the connection to drain", func() bool {
		st := c.Stats().Peers[addr]
		return st.Draining == 1 && st.Conns == 0
	})
	if _, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil); err == nil {
		t.Error("Dial to a shut down server succeeded")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a stream open", err)
	default:
	}
	if got, err := roundTrip(s, []byte("during shutdown")); err != nil || string(got) != "during shutdown" {
		t.Fatalf("echo during shutdown = %q, %v", got, err)
	}
	s.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return after the last stream ended")
	}
	waitFor(t, 2*time.Second, "the drained connection to close", func() bool { return c.Stats().Conns == 0 })
}

func TestSessionResumption(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	// Both server instances must share ticket keys, as a restarted agent
	// would only with a fixed key; here it is about the client caching.
	stls := pki.serverTLSConfig()
	stls.SetSessionTicketKeys([][32]byte{{1, 2, 3}})
	srv, addr := startServer(t, ServerOptions{TLS: stls, Handler: echo})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})
	for i := range 2 {
		s, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil)
		if err != nil {
			t.Fatalf("Dial %d: %v", i, err)
		}
		if _, err := roundTrip(s, []byte("x")); err != nil {
			t.Fatal(err)
		}
		s.Close()
		// Drop the connection so the next Dial has to reconnect.
		_ = srv.Close()
		waitFor(t, 2*time.Second, "the connection to close", func() bool { return c.Stats().Conns == 0 })
		ln, err := net.Listen("tcp", addr.String())
		if err != nil {
			t.Fatalf("listen again: %v", err)
		}
		srv = serveOn(t, ln, ServerOptions{TLS: stls, Handler: echo})
	}
	if st := c.Stats(); st.Handshakes != 2 || st.Resumed != 1 {
		t.Errorf("Stats = %+v, want 2 handshakes, the second resumed", st)
	}
}

func TestHandlerPanic(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	_, addr := startServer(t, ServerOptions{
		TLS: pki.serverTLSConfig(),
		Handler: func(ctx context.Context, r *Request, accept func() (net.Conn, error)) error {
			if r.Target == "boom:1" {
				panic("handler bug")
			}
			return echo(ctx, r, accept)
		},
	})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})
	var se *StatusError
	if _, err := c.Dial(dialCtx(t), addr, "boom:1", nil); !errors.As(err, &se) || se.Code != http.StatusInternalServerError {
		t.Fatalf("Dial to a panicking handler = %v, want 500", err)
	}
	s, err := c.Dial(dialCtx(t), addr, "fine:1", nil)
	if err != nil {
		t.Fatalf("Dial after the panic: %v", err)
	}
	defer s.Close()
	if got, err := roundTrip(s, []byte("alive")); err != nil || string(got) != "alive" {
		t.Fatalf("echo = %q, %v", got, err)
	}
}

func TestDialErrors(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	_, addr := startServer(t, ServerOptions{TLS: pki.serverTLSConfig(), Handler: echo})

	t.Run("unknown CA", func(t *testing.T) {
		other := newTestPKI(t)
		c := newTestClient(t, ClientOptions{TLS: other.clientTLSConfig()})
		if _, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil); err == nil || !strings.Contains(err.Error(), "tls") {
			t.Fatalf("Dial with an unknown CA = %v, want a TLS error", err)
		}
		if st := c.Stats(); st.Conns != 0 {
			t.Errorf("Stats = %+v, want no connection", st)
		}
	})

	t.Run("wrong name", func(t *testing.T) {
		ctls := pki.clientTLSConfig()
		ctls.ServerName = "someone-else.test"
		c := newTestClient(t, ClientOptions{TLS: ctls})
		if _, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil); err == nil {
			t.Fatal("Dial to a peer with another name succeeded")
		}
	})

	t.Run("IP as default name", func(t *testing.T) {
		ctls := pki.clientTLSConfig()
		ctls.ServerName = "" // the certificate has IP SAN 127.0.0.1
		c := newTestClient(t, ClientOptions{TLS: ctls})
		s, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil)
		if err != nil {
			t.Fatalf("Dial verifying the peer's IP: %v", err)
		}
		s.Close()
	})

	t.Run("nobody listening", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := netip.MustParseAddrPort(ln.Addr().String())
		ln.Close()
		c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})
		start := time.Now()
		if _, err := c.Dial(dialCtx(t), dead, "10.0.0.1:80", nil); err == nil {
			t.Fatal("Dial to a closed port succeeded")
		}
		if time.Since(start) > time.Second {
			t.Errorf("refused Dial took %v", time.Since(start))
		}
	})

	t.Run("closed client", func(t *testing.T) {
		c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})
		c.Close()
		if _, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil); !errors.Is(err, ErrClientClosed) {
			t.Fatalf("Dial after Close = %v, want ErrClientClosed", err)
		}
	})
}
