package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// gauge tracks a count and its peak.
type gauge struct{ n, peak atomic.Int64 }

func (g *gauge) inc() {
	n := g.n.Add(1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
}

func (g *gauge) dec() { g.n.Add(-1) }

// sampleGoroutines records the peak goroutine count until stop is called.
func sampleGoroutines() (peak func() int, stop func()) {
	var max atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if n := int64(runtime.NumGoroutine()); n > max.Load() {
				max.Store(n)
			}
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return func() int { return int(max.Load()) }, func() { close(done); wg.Wait() }
}

func TestMaxConcurrentStreams(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	const limit = 8
	var active gauge
	_, addr := startServer(t, ServerOptions{
		TLS:                  pki.serverTLSConfig(),
		MaxConcurrentStreams: limit,
		Handler: func(ctx context.Context, r *Request, accept func() (net.Conn, error)) error {
			active.inc()
			defer active.dec()
			time.Sleep(10 * time.Millisecond)
			return echo(ctx, r, accept)
		},
	})

	// A well-behaved client queues past the peer's limit.
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig(), MaxConnsPerPeer: 1})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil)
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			msg := fmt.Sprint("stream ", i)
			if got, err := roundTrip(s, []byte(msg)); err != nil || string(got) != msg {
				errs <- fmt.Errorf("echo %q = %q, %v", msg, got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if p := active.peak.Load(); p > limit {
		t.Errorf("%d handlers ran at once, limit %d", p, limit)
	}
	if st := c.Stats(); st.Handshakes != 1 {
		t.Errorf("Stats = %+v, want everything on one connection", st)
	}

	// A client ignoring the limit gets the extra streams refused.
	raw := dialRaw(t, addr, pki.clientTLSConfig())
	for i := range 2 * limit {
		if err := raw.open(uint32(2*i+1), "10.0.0.1:80"); err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
	}
	waitFor(t, 2*time.Second, "the extra streams to be refused", func() bool { return raw.resets.Load() >= limit })
	if p := active.peak.Load(); p > limit {
		t.Errorf("%d handlers ran at once, limit %d", p, limit)
	}
	s, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil)
	if err != nil {
		t.Fatalf("Dial after the flood: %v", err)
	}
	defer s.Close()
}

func TestHeaderLimits(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	var calls atomic.Int64
	_, addr := startServer(t, ServerOptions{
		TLS: pki.serverTLSConfig(),
		Handler: func(ctx context.Context, r *Request, accept func() (net.Conn, error)) error {
			calls.Add(1)
			return echo(ctx, r, accept)
		},
	})

	t.Run("client refuses locally", func(t *testing.T) {
		c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})
		huge := http.Header{"Authorization": {"Bearer " + strings.Repeat("x", 32<<10)}}
		if s, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", huge); err == nil {
			s.Close()
			t.Fatal("Dial with a 32 KiB header succeeded")
		}
		s, err := c.Dial(dialCtx(t), addr, "10.0.0.1:80", nil)
		if err != nil {
			t.Fatalf("Dial after the refused one: %v", err)
		}
		s.Close()
		if st := c.Stats(); st.Handshakes != 1 {
			t.Errorf("Stats = %+v: the big header cost the connection", st)
		}
	})

	t.Run("server answers 431", func(t *testing.T) {
		raw := dialRaw(t, addr, pki.clientTLSConfig())
		before := calls.Load()
		// Two 10 KiB fields: each fits, the list (20 KiB) does not.
		block := raw.headerBlock("10.0.0.1:80",
			hpack.HeaderField{Name: "authorization", Value: strings.Repeat("y", 10<<10)},
			hpack.HeaderField{Name: "intransit-source", Value: strings.Repeat("z", 10<<10)})
		err := raw.write(func() error {
			// Frames no bigger than the default, as a client must send
			// before it has seen the server's SETTINGS.
			const frame = 16 << 10
			if err := raw.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:frame]}); err != nil {
				return err
			}
			return raw.fr.WriteContinuation(1, true, block[frame:])
		})
		if err != nil {
			t.Fatalf("write: %v", err)
		}
		waitFor(t, 2*time.Second, "an answer", func() bool { return raw.status(1) != "" || raw.resets.Load() > 0 })
		if got := raw.status(1); got != "431" {
			t.Errorf(":status = %q, want 431", got)
		}
		if calls.Load() != before {
			t.Error("the Handler ran for an oversized header list")
		}
	})

	t.Run("one field over the limit", func(t *testing.T) {
		// x/net stops decoding a string longer than the whole list may be
		// and drops the connection (COMPRESSION_ERROR).
		raw := dialRaw(t, addr, pki.clientTLSConfig())
		block := raw.headerBlock("10.0.0.1:80", hpack.HeaderField{Name: "authorization", Value: strings.Repeat("y", 20<<10)})
		_ = raw.write(func() error {
			const frame = 16 << 10
			if err := raw.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:frame]}); err != nil {
				return err
			}
			return raw.fr.WriteContinuation(1, true, block[frame:])
		})
		if !raw.closed(2 * time.Second) {
			t.Fatal("connection still open after a 20 KiB header field")
		}
		if code, ok := raw.goAwayCode(); !ok || code != http2.ErrCodeCompression {
			t.Errorf("GOAWAY %v (%v), want COMPRESSION_ERROR", code, ok)
		}
	})

	t.Run("continuation flood", func(t *testing.T) {
		raw := dialRaw(t, addr, pki.clientTLSConfig())
		junk := []byte(strings.Repeat("a", 16<<10)) // decodes as endless small headers
		start := time.Now()
		err := raw.write(func() error {
			if err := raw.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: raw.headerBlock("10.0.0.1:80")}); err != nil {
				return err
			}
			for range 1000 { // 16 MiB of header block if nothing stopped it
				if err := raw.fr.WriteContinuation(1, false, junk); err != nil {
					return err
				}
			}
			return nil
		})
		if !raw.closed(2 * time.Second) {
			t.Fatal("the server still reads a CONTINUATION flood")
		}
		code, _ := raw.goAwayCode()
		t.Logf("connection closed after %v (write error %v, GOAWAY %v)", time.Since(start), err, code)
	})
}

func TestRapidReset(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)

	t.Run("slow handlers", func(t *testing.T) {
		const limit = 16
		var active gauge
		_, addr := startServer(t, ServerOptions{
			TLS:                  pki.serverTLSConfig(),
			MaxConcurrentStreams: limit,
			Handler: func(ctx context.Context, r *Request, accept func() (net.Conn, error)) error {
				if r.Target == "legit:1" {
					return echo(ctx, r, accept)
				}
				active.inc()
				defer active.dec()
				time.Sleep(50 * time.Millisecond) // an authorizer that ignores cancellation
				return &Refusal{Status: http.StatusForbidden, Reason: "no"}
			},
		})
		base := runtime.NumGoroutine()
		peak, stop := sampleGoroutines()
		raw := dialRaw(t, addr, pki.clientTLSConfig())
		sent := attack(raw, 5000)
		closed := raw.closed(2 * time.Second)
		stop()
		code, goAway := raw.goAwayCode()
		t.Logf("sent %d open+reset pairs; closed=%v GOAWAY=%v %v; handlers peak %d; goroutines %d -> peak %d",
			sent, closed, goAway, code, active.peak.Load(), base, peak())
		if !closed {
			t.Error("the connection survived the rapid-reset loop")
		}
		if p := active.peak.Load(); p > limit {
			t.Errorf("%d handlers ran at once, limit %d", p, limit)
		}
		// Two goroutines per running stream (ServeHTTP and the Handler),
		// the connection's own, the sampler and the raw client.
		if bound := base + 2*limit + 20; peak() > bound {
			t.Errorf("goroutines peaked at %d, want at most %d", peak(), bound)
		}
		legit(t, pki, addr)
	})

	t.Run("fast handlers", func(t *testing.T) {
		var calls atomic.Int64
		_, addr := startServer(t, ServerOptions{
			TLS: pki.serverTLSConfig(),
			Handler: func(ctx context.Context, r *Request, accept func() (net.Conn, error)) error {
				if r.Target == "legit:1" {
					return echo(ctx, r, accept)
				}
				calls.Add(1)
				select { // an authorizer that stops when the stream does
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				return &Refusal{Status: http.StatusForbidden, Reason: "no"}
			},
		})
		raw := dialRaw(t, addr, pki.clientTLSConfig())
		sent := attack(raw, 5000)
		closed := raw.closed(2 * time.Second)
		t.Logf("sent %d open+reset pairs; closed=%v; handlers started %d", sent, closed, calls.Load())
		if !closed {
			t.Error("the connection survived the rapid-reset loop")
		}
		if n := calls.Load(); n > 2*resetBurst+500 {
			t.Errorf("%d handlers started before the connection was closed", n)
		}
		legit(t, pki, addr)
	})
}

// attack opens and resets up to n streams as fast as it can write, and
// returns how many pairs it sent before the server stopped it.
func attack(raw *rawClient, n int) int {
	for i := range n {
		if err := raw.openAndReset(uint32(2*i+1), "10.0.0.1:80"); err != nil {
			return i
		}
		select {
		case <-raw.done:
			return i + 1
		default:
		}
	}
	return n
}

// legit checks that a normal client is still served.
func legit(t *testing.T, pki *testPKI, addr netip.AddrPort) {
	t.Helper()
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})
	s, err := c.Dial(dialCtx(t), addr, "legit:1", nil)
	if err != nil {
		t.Fatalf("legitimate Dial after the attack: %v", err)
	}
	defer s.Close()
	if got, err := roundTrip(s, []byte("fine")); err != nil || string(got) != "fine" {
		t.Fatalf("legitimate echo after the attack = %q, %v", got, err)
	}
}
