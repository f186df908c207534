package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestSingleUse: without pooling every Dial costs its own connection and
// handshake, the connection carries only that stream and is gone once the
// stream is closed; MaxConnsPerPeer does not apply.
func TestSingleUse(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	var (
		mu      sync.Mutex
		remotes = map[netip.AddrPort]int{} // client address of each stream's connection
	)
	_, addr := startServer(t, ServerOptions{
		TLS: pki.serverTLSConfig(),
		Handler: func(ctx context.Context, r *Request, accept func() (net.Conn, error)) error {
			if r.Target == "10.0.0.9:22" {
				return &Refusal{Status: http.StatusForbidden, Reason: "unlisted target"}
			}
			mu.Lock()
			remotes[r.RemoteAddr]++
			mu.Unlock()
			return echo(ctx, r, accept)
		},
	})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig(), SingleUse: true, MaxConnsPerPeer: 1})

	const n = 5
	for i := range n {
		s, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil)
		if err != nil {
			t.Fatalf("Dial %d: %v", i, err)
		}
		if st := c.Stats(); st.Conns != 1 || st.Streams != 1 {
			t.Errorf("Dial %d: open stream: Stats = %+v, want 1 connection, 1 stream", i, st)
		}
		msg := fmt.Sprintf("hello %d", i)
		if got, err := roundTrip(s, []byte(msg)); err != nil || string(got) != msg {
			t.Fatalf("Dial %d: echo = %q, %v", i, got, err)
		}
		_ = s.Close()
		st := c.Stats()
		if st.Handshakes != uint64(i+1) {
			t.Errorf("after %d Dials: %d handshakes, want %d", i+1, st.Handshakes, i+1)
		}
		if st.Conns != 0 || st.Streams != 0 || len(st.Peers) != 0 {
			t.Errorf("after Dial %d closed: Stats = %+v, want no connection left", i, st)
		}
	}
	mu.Lock()
	if len(remotes) != n {
		t.Errorf("the server saw %d client connections for %d streams, want one each: %v", len(remotes), n, remotes)
	}
	mu.Unlock()

	// Concurrent streams never share a connection, past MaxConnsPerPeer.
	var open []net.Conn
	for i := range 3 {
		s, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil)
		if err != nil {
			t.Fatalf("concurrent Dial %d: %v", i, err)
		}
		open = append(open, s)
	}
	if st := c.Stats(); st.Conns != 3 || st.Streams != 3 || st.Handshakes != n+3 {
		t.Errorf("3 open streams: Stats = %+v, want 3 connections, 3 streams, %d handshakes", st, n+3)
	}
	for _, s := range open {
		_ = s.Close() // reset, not a clean end: the connection goes too
	}
	waitFor(t, 2*time.Second, "the connections to close", func() bool {
		st := c.Stats()
		return st.Conns == 0 && st.Streams == 0 && len(st.Peers) == 0
	})
	// A refused CONNECT leaves nothing behind either.
	var se *StatusError
	if s, err := c.Dial(dialCtx(t), addr, "10.0.0.9:22", nil); !errors.As(err, &se) || se.Code != http.StatusForbidden {
		if s != nil {
			_ = s.Close()
		}
		t.Fatalf("Dial of a refused target: %v, want 403", err)
	}
	if st := c.Stats(); st.Conns != 0 || st.Streams != 0 || st.Handshakes != n+4 {
		t.Errorf("after a refused Dial: Stats = %+v, want no connection, %d handshakes", st, n+4)
	}
}

// TestSingleUseVersusPooled: the same sequential Dials on a pooled client
// cost one handshake.
func TestSingleUseVersusPooled(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	_, addr := startServer(t, ServerOptions{TLS: pki.serverTLSConfig(), Handler: echo})
	for _, single := range []bool{false, true} {
		c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig(), SingleUse: single})
		const n = 4
		for i := range n {
			s, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil)
			if err != nil {
				t.Fatalf("SingleUse %v: Dial %d: %v", single, i, err)
			}
			if _, err := roundTrip(s, []byte("x")); err != nil {
				t.Fatal(err)
			}
			_ = s.Close()
		}
		want, wantConns := uint64(1), 1
		if single {
			want, wantConns = n, 0
		}
		if st := c.Stats(); st.Handshakes != want || st.Conns != wantConns {
			t.Errorf("SingleUse %v: Stats = %+v, want %d handshakes, %d connections", single, st, want, wantConns)
		}
		_ = c.Close()
	}
}

// TestDefaultPoolCapacity: by default a peer takes more concurrent streams
// than tools/bench's 1,000 idle connections before Dial has to wait.
func TestDefaultPoolCapacity(t *testing.T) {
	o := ClientOptions{}.withDefaults()
	if n := o.MaxConnsPerPeer * o.MaxStreamsPerConn; n < 5000 {
		t.Errorf("default capacity %d streams per peer (%d connections × %d streams), want at least 5000", n, o.MaxConnsPerPeer, o.MaxStreamsPerConn)
	}
}
