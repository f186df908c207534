package tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"
)

// quietLog drops log lines: goroutines that outlive a test may still log,
// and t.Log panics then.
var quietLog = slog.New(slog.DiscardHandler)

// checkGoroutines fails the test if goroutines started during it are still
// running a few seconds after its cleanups (registered later, so run first).
func checkGoroutines(t testing.TB) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				var buf bytes.Buffer
				_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
				t.Errorf("goroutines: %d at start, %d now:\n%s", base, runtime.NumGoroutine(), buf.String())
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// startServer serves o on 127.0.0.1 until the test ends.
func startServer(t testing.TB, o ServerOptions) (*Server, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return serveOn(t, ln, o), netip.MustParseAddrPort(ln.Addr().String())
}

// serveOn serves o on ln until the test ends.
func serveOn(t testing.TB, ln net.Listener, o ServerOptions) *Server {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quietLog
	}
	s := NewServer(o)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		_ = s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s
}

// newTestClient returns a client closed when the test ends.
func newTestClient(t testing.TB, o ClientOptions) *Client {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quietLog
	}
	c := NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// echo accepts and sends back everything until the client's END_STREAM.
func echo(_ context.Context, _ *Request, accept func() (net.Conn, error)) error {
	c, err := accept()
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.Copy(c, c); err != nil {
		return err
	}
	return c.(interface{ CloseWrite() error }).CloseWrite()
}

func dialCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// roundTrip sends payload, half-closes and returns what came back.
func roundTrip(c net.Conn, payload []byte) ([]byte, error) {
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		werr <- err
	}()
	got, rerr := io.ReadAll(c)
	if err := <-werr; err != nil {
		return got, err
	}
	return got, rerr
}

// checksumRoundTrip sends n random bytes through an echo stream while
// reading the echo, and compares SHA-256 digests of both directions.
func checksumRoundTrip(c net.Conn, n int64, seed uint64) error {
	sent := sha256.New()
	werr := make(chan error, 1)
	go func() {
		src := io.LimitReader(rand.NewChaCha8(seedBytes(seed)), n)
		_, err := io.CopyBuffer(io.MultiWriter(c, sent), src, make([]byte, 32<<10))
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		werr <- err
	}()
	got := sha256.New()
	m, rerr := io.CopyBuffer(got, c, make([]byte, 32<<10))
	if err := <-werr; err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	if m != n {
		return fmt.Errorf("echo length differs: %d != %d", m, n)
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		return errors.New("echo checksum differs")
	}
	return nil
}

func seedBytes(seed uint64) [32]byte {
	var b [32]byte
	for i := range 4 {
		s := seed + uint64(i)
		for j := range 8 {
			b[i*8+j] = byte(s >> (8 * j))
		}
	}
	return b
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// proxy forwards TCP connections to target and can freeze the current ones,
// like a peer that stops answering without closing anything.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	links []*link
}

type link struct {
	a, b   net.Conn
	mu     sync.Mutex
	frozen bool
	closed chan struct{}
	once   sync.Once
}

func startProxy(t testing.TB, target netip.AddrPort) (*proxy, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &proxy{ln: ln, target: target.String()}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p, netip.MustParseAddrPort(ln.Addr().String())
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		a, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = a.Close()
			continue
		}
		l := &link{a: a, b: b, closed: make(chan struct{})}
		p.mu.Lock()
		p.links = append(p.links, l)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(l, a, b)
		go p.pipe(l, b, a)
	}
}

func (p *proxy) pipe(l *link, dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		l.mu.Lock()
		frozen := l.frozen
		l.mu.Unlock()
		if frozen {
			<-l.closed
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				l.close()
				return
			}
		}
		if err != nil {
			l.close()
			return
		}
	}
}

// freeze stops forwarding on every current connection, in both directions,
// without closing them. New connections are forwarded normally.
func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.links {
		l.mu.Lock()
		l.frozen = true
		l.mu.Unlock()
	}
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.closed)
		_ = l.a.Close()
		_ = l.b.Close()
	})
}

func (p *proxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, l := range p.links {
		l.close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// isTimeout reports whether err is a net.Error timeout wrapping
// os.ErrDeadlineExceeded.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

func mustAddrPort(t testing.TB, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}
