package tunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countHandshakes counts the server's TLS handshakes, to check the client's
// own count from the other side.
func countHandshakes(c *tls.Config, n *atomic.Int64) *tls.Config {
	c.VerifyConnection = func(tls.ConnectionState) error {
		n.Add(1)
		return nil
	}
	return c
}

func TestThousandStreams(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	var serverHandshakes atomic.Int64
	_, addr := startServer(t, ServerOptions{TLS: countHandshakes(pki.serverTLSConfig(), &serverHandshakes), Handler: echo})
	const maxConns = 8
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig(), MaxConnsPerPeer: maxConns})

	const streams = 1000
	const size = 64 << 10
	// Generous: 200 of the streams queue for capacity, and -race is slow.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	var maxConnsSeen atomic.Int64
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := c.Dial(ctx, addr, fmt.Sprintf("10.1.%d.%d:80", i/250, i%250), nil)
			if err != nil {
				errs <- fmt.Errorf("stream %d: dial: %w", i, err)
				return
			}
			defer s.Close()
			if n := int64(c.Stats().Conns); n > maxConnsSeen.Load() {
				maxConnsSeen.Store(n) // racy max, good enough for a bound check
			}
			if err := checksumRoundTrip(s, size, uint64(i)); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 5 {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d streams failed", failed, streams)
	}

	st := c.Stats()
	t.Logf("pool after %d streams: %+v, server handshakes %d", streams, st, serverHandshakes.Load())
	if st.Handshakes > maxConns || maxConnsSeen.Load() > maxConns {
		t.Errorf("%d handshakes, up to %d connections: want at most %d", st.Handshakes, maxConnsSeen.Load(), maxConns)
	}
	if int64(st.Handshakes) != serverHandshakes.Load() || uint64(st.Conns) != st.Handshakes {
		t.Errorf("client handshakes %d, server handshakes %d, open connections %d: want all equal (no handshake per stream, no connection lost)",
			st.Handshakes, serverHandshakes.Load(), st.Conns)
	}
	if st.Streams != 0 {
		t.Errorf("%d streams still counted open", st.Streams)
	}
}

func TestLargeStream(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	_, addr := startServer(t, ServerOptions{TLS: pki.serverTLSConfig(), Handler: echo})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})
	s, err := c.Dial(dialCtx(t), addr, "10.0.0.7:8080", nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer s.Close()
	if err := checksumRoundTrip(s, 64<<20, 42); err != nil {
		t.Fatal(err)
	}
}
