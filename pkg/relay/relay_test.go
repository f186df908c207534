package relay

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// modes are the relay shapes under test: the client leg is always plain TCP
// (an intercepted connect); the upstream leg is plain TCP or TLS.
func modes(t testing.TB) []struct {
	name string
	tls  *testTLS
} {
	return []struct {
		name string
		tls  *testTLS
	}{
		{"tcp", nil},
		{"tls", newTestTLS(t)},
	}
}

// sendRandom writes n pseudo-random bytes in chunks, half-closes c and
// returns the SHA-256 of what it wrote.
func sendRandom(c net.Conn, seed uint64, n int64) ([32]byte, error) {
	h := sha256.New()
	src := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	w := io.MultiWriter(c, h)
	if _, err := io.CopyN(w, src, n); err != nil {
		return [32]byte{}, fmt.Errorf("send: %w", err)
	}
	if err := closeWrite(c); err != nil {
		return [32]byte{}, fmt.Errorf("half-close: %w", err)
	}
	return [32]byte(h.Sum(nil)), nil
}

// receiveAll reads c to EOF and returns the byte count and SHA-256.
func receiveAll(c net.Conn) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	return n, [32]byte(h.Sum(nil)), err
}

func TestLargeTransferBothWays(t *testing.T) {
	const size = 64 << 20
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			s := newSetup(t, m.tls)
			done := s.start(time.Minute)

			type sum struct {
				n   int64
				sum [32]byte
				err error
			}
			var wg sync.WaitGroup
			var sentUp, sentDown, gotUp, gotDown sum
			wg.Go(func() { sentUp.sum, sentUp.err = sendRandom(s.app, 1, size) })
			wg.Go(func() { sentDown.sum, sentDown.err = sendRandom(s.server, 2, size) })
			wg.Go(func() { gotUp.n, gotUp.sum, gotUp.err = receiveAll(s.server) })
			wg.Go(func() { gotDown.n, gotDown.sum, gotDown.err = receiveAll(s.app) })
			wg.Wait()

			for _, e := range []error{sentUp.err, sentDown.err, gotUp.err, gotDown.err} {
				if e != nil {
					t.Fatal(e)
				}
			}
			if gotUp.n != size || gotUp.sum != sentUp.sum {
				t.Errorf("client->upstream: got %d bytes, hash match %v", gotUp.n, gotUp.sum == sentUp.sum)
			}
			if gotDown.n != size || gotDown.sum != sentDown.sum {
				t.Errorf("upstream->client: got %d bytes, hash match %v", gotDown.n, gotDown.sum == sentDown.sum)
			}
			r := wait(t, done, 10*time.Second)
			if r.err != nil {
				t.Errorf("Relay error: %v", r.err)
			}
			if r.st != (Stats{Sent: size, Received: size}) {
				t.Errorf("Stats = %+v, want %d each way", r.st, size)
			}
		})
	}
}

func TestSpliceTransfer(t *testing.T) {
	// idle <= 0 with two plain TCP conns takes the splice path.
	const size = 8 << 20
	s := newSetup(t, nil)
	done := s.start(0)
	var wg sync.WaitGroup
	var sent, got [32]byte
	var n int64
	var errs [4]error
	wg.Go(func() { sent, errs[0] = sendRandom(s.app, 3, size) })
	wg.Go(func() { n, got, errs[1] = receiveAll(s.server) })
	wg.Go(func() { _, errs[2] = sendRandom(s.server, 4, 1) })
	wg.Go(func() { _, _, errs[3] = receiveAll(s.app) })
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		t.Fatal(err)
	}
	if n != size || got != sent {
		t.Errorf("got %d bytes, hash match %v", n, got == sent)
	}
	r := wait(t, done, 10*time.Second)
	if r.err != nil || r.st != (Stats{Sent: size, Received: 1}) {
		t.Errorf("Relay = %+v, %v", r.st, r.err)
	}
}

func TestHalfClose(t *testing.T) {
	request := []byte("GET / HTTP/1.0\r\n\r\n")
	reply := bytes.Repeat([]byte("0123456789abcdef"), 100_000) // 1.6 MB
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			s := newSetup(t, m.tls)
			done := s.start(time.Minute)

			serverErr := make(chan error, 1)
			go func() {
				// The server only answers after seeing the request's EOF.
				got, err := io.ReadAll(s.server)
				if err == nil && !bytes.Equal(got, request) {
					err = fmt.Errorf("server got %q", got)
				}
				if err == nil {
					_, err = s.server.Write(reply)
				}
				if cerr := s.server.Close(); err == nil {
					err = cerr
				}
				serverErr <- err
			}()

			if _, err := s.app.Write(request); err != nil {
				t.Fatal(err)
			}
			if err := s.app.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(s.app)
			if err != nil {
				t.Fatalf("client read: %v", err)
			}
			if !bytes.Equal(got, reply) {
				t.Errorf("client got %d bytes, want the %d byte reply", len(got), len(reply))
			}
			if err := <-serverErr; err != nil {
				t.Fatal(err)
			}
			r := wait(t, done, 5*time.Second)
			if r.err != nil {
				t.Errorf("Relay error: %v", r.err)
			}
			if want := (Stats{Sent: int64(len(request)), Received: int64(len(reply))}); r.st != want {
				t.Errorf("Stats = %+v, want %+v", r.st, want)
			}
		})
	}
}

func TestTinyWrites(t *testing.T) {
	const count = 10000
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			s := newSetup(t, m.tls)
			done := s.start(time.Minute)

			send := func(c net.Conn) error {
				for i := range count {
					if _, err := c.Write([]byte{byte(i)}); err != nil {
						return err
					}
				}
				return closeWrite(c)
			}
			check := func(c net.Conn) error {
				got, err := io.ReadAll(c)
				if err != nil {
					return err
				}
				if len(got) != count {
					return fmt.Errorf("got %d bytes, want %d", len(got), count)
				}
				for i, b := range got {
					if b != byte(i) {
						return fmt.Errorf("byte %d = %d, want %d", i, b, byte(i))
					}
				}
				return nil
			}
			var wg sync.WaitGroup
			var errs [4]error
			wg.Go(func() { errs[0] = send(s.app) })
			wg.Go(func() { errs[1] = send(s.server) })
			wg.Go(func() { errs[2] = check(s.server) })
			wg.Go(func() { errs[3] = check(s.app) })
			wg.Wait()
			if err := errors.Join(errs[:]...); err != nil {
				t.Fatal(err)
			}
			r := wait(t, done, 5*time.Second)
			if r.err != nil || r.st != (Stats{Sent: count, Received: count}) {
				t.Errorf("Relay = %+v, %v", r.st, r.err)
			}
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name+"/idle relay ends", func(t *testing.T) {
			const idle = 200 * time.Millisecond
			s := newSetup(t, m.tls)
			start := time.Now()
			r := wait(t, s.start(idle), 5*time.Second)
			if !errors.Is(r.err, ErrIdle) {
				t.Errorf("err = %v, want ErrIdle", r.err)
			}
			if el := time.Since(start); el < idle {
				t.Errorf("ended after %v, before the %v idle timeout", el, idle)
			}
			// Both peers see the connection end.
			for name, c := range map[string]net.Conn{"app": s.app, "server": s.server} {
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if n, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
					t.Errorf("%s read after idle end: %d, %v; want EOF or reset", name, n, err)
				}
			}
		})

		t.Run(m.name+"/active relay stays", func(t *testing.T) {
			// Writes every idle/10 leave ample slack for a loaded machine.
			const idle, writes = 500 * time.Millisecond, 30
			s := newSetup(t, m.tls)
			done := s.start(idle)
			go func() { _, _ = io.Copy(io.Discard, s.server) }()
			// Only one direction is active, for 3x the idle timeout.
			for range writes {
				if _, err := s.app.Write([]byte("x")); err != nil {
					t.Fatalf("write while active: %v", err)
				}
				time.Sleep(idle / 10)
				select {
				case r := <-done:
					t.Fatalf("relay ended while active: %+v, %v", r.st, r.err)
				default:
				}
			}
			r := wait(t, done, 5*time.Second)
			if !errors.Is(r.err, ErrIdle) || r.st.Sent != writes {
				t.Errorf("after going quiet: %+v, %v; want %d bytes sent and ErrIdle", r.st, r.err, writes)
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// reset makes c send a TCP RST instead of a FIN.
func reset(t *testing.T, c net.Conn) {
	t.Helper()
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	if err := c.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
}

func TestResetEndsRelay(t *testing.T) {
	for _, m := range modes(t) {
		for _, side := range []string{"app", "server"} {
			t.Run(m.name+"/"+side, func(t *testing.T) {
				s := newSetup(t, m.tls)
				// Idle timeout far away: only the reset may end the relay.
				done := s.start(time.Hour)
				// Some traffic first, so the relay is mid-stream.
				if _, err := s.app.Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(s.server, make([]byte, 4)); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				other := net.Conn(s.server)
				if side == "app" {
					reset(t, s.app)
				} else {
					reset(t, s.server)
					other = s.app
				}
				r := wait(t, done, 2*time.Second)
				if r.err == nil || errors.Is(r.err, ErrIdle) {
					t.Errorf("err = %v, want the reset", r.err)
				}
				if el := time.Since(start); el > time.Second {
					t.Errorf("relay took %v to end after a reset", el)
				}
				// The other peer is cut off too.
				_ = other.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := other.Read(make([]byte, 1)); err == nil || isTimeout(err) {
					t.Errorf("other side read: %v; want EOF or reset", err)
				}
			})
		}
	}
}

func TestStatsExact(t *testing.T) {
	const up, down = 1_234_567, 7_654_321
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			s := newSetup(t, m.tls)
			done := s.start(time.Minute)
			var wg sync.WaitGroup
			var errs [4]error
			wg.Go(func() { _, errs[0] = sendRandom(s.app, 5, up) })
			wg.Go(func() { _, errs[1] = sendRandom(s.server, 6, down) })
			wg.Go(func() { _, _, errs[2] = receiveAll(s.server) })
			wg.Go(func() { _, _, errs[3] = receiveAll(s.app) })
			wg.Wait()
			if err := errors.Join(errs[:]...); err != nil {
				t.Fatal(err)
			}
			r := wait(t, done, 5*time.Second)
			if r.err != nil || r.st != (Stats{Sent: up, Received: down}) {
				t.Errorf("Relay = %+v, %v; want Sent %d Received %d", r.st, r.err, up, down)
			}
		})
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	tt := newTestTLS(t)
	// Let helper goroutines from earlier tests settle before the baseline.
	time.Sleep(50 * time.Millisecond)
	base := runtime.NumGoroutine()

	for i := range 200 {
		func() {
			var mode *testTLS
			if i%2 == 1 {
				mode = tt
			}
			s := buildSetup(t, mode)
			defer s.closeAll()
			done := s.start(time.Minute)
			switch i % 4 {
			case 0, 1: // clean request/response
				go func() {
					_, _ = io.ReadAll(s.server)
					_, _ = s.server.Write([]byte("pong"))
					_ = s.server.Close()
				}()
				_, _ = s.app.Write([]byte("ping"))
				_ = s.app.CloseWrite()
				_, _ = io.ReadAll(s.app)
			case 2: // reset
				reset(t, s.app)
			case 3: // upstream closes first, client never half-closes
				_ = s.server.Close()
				_, _ = io.ReadAll(s.app)
				_ = s.app.Close()
			}
			wait(t, done, 5*time.Second)
		}()
	}

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after 200 relays, baseline %d\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}
