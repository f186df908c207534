package tunnel

import (
	"io"
	"net"
	"testing"
	"time"
)

// readErr starts a Read that blocks until the stream fails.
func readErr(s net.Conn) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(s)
		if err == nil {
			err = io.EOF // a clean end is as wrong here as no end
		}
		ch <- err
	}()
	return ch
}

func TestPeerRestart(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv := serveOn(t, ln, ServerOptions{TLS: pki.serverTLSConfig(), Handler: echo})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})
	peer := mustAddrPort(t, addr)

	var inflight []<-chan error
	for range 3 {
		s, err := c.Dial(dialCtx(t), peer, "10.0.0.7:8080", nil)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer s.Close()
		if _, err := s.Write([]byte("before the restart")); err != nil {
			t.Fatalf("Write: %v", err)
		}
		inflight = append(inflight, readErr(s))
	}

	// The peer agent dies: its listener and connections go at once.
	killed := time.Now()
	_ = srv.Close()
	for i, ch := range inflight {
		select {
		case err := <-ch:
			if err == io.EOF {
				t.Errorf("stream %d ended cleanly when its peer died", i)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("stream %d still open 2s after its peer died", i)
		}
	}
	t.Logf("in-flight streams failed %v after the peer died", time.Since(killed))
	waitFor(t, time.Second, "the pool to drop the dead connection", func() bool { return c.Stats().Conns == 0 })
	if _, err := c.Dial(dialCtx(t), peer, "10.0.0.7:8080", nil); err == nil {
		t.Fatal("Dial to a dead peer succeeded")
	}

	// It comes back on the same address.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again: %v", err)
	}
	serveOn(t, ln, ServerOptions{TLS: pki.serverTLSConfig(), Handler: echo})
	s, err := c.Dial(dialCtx(t), peer, "10.0.0.7:8080", nil)
	if err != nil {
		t.Fatalf("Dial after the restart: %v", err)
	}
	defer s.Close()
	if got, err := roundTrip(s, []byte("after")); err != nil || string(got) != "after" {
		t.Fatalf("echo after the restart = %q, %v", got, err)
	}
	if st := c.Stats(); st.Handshakes != 2 || st.Conns != 1 {
		t.Errorf("Stats = %+v, want 2 handshakes and 1 connection", st)
	}
}

func TestFrozenPeer(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	_, addr := startServer(t, ServerOptions{TLS: pki.serverTLSConfig(), Handler: echo})
	px, pxAddr := startProxy(t, addr)
	const interval, timeout = 200 * time.Millisecond, 300 * time.Millisecond
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig(), PingInterval: interval, PingTimeout: timeout})

	s, err := c.Dial(dialCtx(t), pxAddr, "10.0.0.7:8080", nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer s.Close()
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatalf("echo before freezing: %v", err)
	}
	pending := readErr(s)

	// The peer stops answering; nothing is closed.
	frozen := time.Now()
	px.freeze()
	select {
	case err := <-pending:
		if err == io.EOF {
			t.Error("stream ended cleanly on a frozen peer")
		}
		took := time.Since(frozen)
		t.Logf("stream failed %v after the peer froze (ping every %v, timeout %v)", took, interval, timeout)
		if took < timeout {
			t.Errorf("stream failed after %v, before any PING could time out", took)
		}
	case <-time.After(5 * (interval + timeout)):
		t.Fatal("stream on a frozen peer did not fail")
	}

	// New streams get a new connection.
	s2, err := c.Dial(dialCtx(t), pxAddr, "10.0.0.7:8080", nil)
	if err != nil {
		t.Fatalf("Dial after the freeze: %v", err)
	}
	defer s2.Close()
	if got, err := roundTrip(s2, []byte("fresh")); err != nil || string(got) != "fresh" {
		t.Fatalf("echo on the new connection = %q, %v", got, err)
	}
	if st := c.Stats(); st.Handshakes != 2 || st.Conns != 1 {
		t.Errorf("Stats = %+v, want a second handshake and only the new connection", st)
	}
}
