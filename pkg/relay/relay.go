// Package relay copies bytes both ways between an accepted client connection
// and an upstream connection, passing half-closes through.
//
// Memory per idle connection matters (HAProxy needs about 58 KiB). Per relay:
//   - client->upstream holds no buffer while waiting when the client is a
//     plain *net.TCPConn: readiness is checked with poll(2) through the
//     runtime poller before a pooled 32 KiB buffer is taken, and the buffer
//     goes back after a short read (see waiter). Other clients: 32 KiB held.
//   - upstream->client holds a pooled 16 KiB buffer while blocked in
//     tls.Conn.Read: records already buffered inside the tls.Conn are
//     invisible at the socket, so readiness cannot be checked there. Plain
//     upstreams: 32 KiB.
//   - two goroutine stacks (the caller's and one more), the relay state and,
//     with an idle timeout, one runtime timer.
//
// BenchmarkIdleMemory measures about 24 KiB per idle relay for a plain client
// and a TLS upstream (57 KiB without the readiness wait), on top of the
// sockets and the tls.Conn's own record buffers.
package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrIdle is wrapped by Relay's error when the idle timeout ended the relay.
var ErrIdle = errors.New("idle timeout")

// Stats counts the bytes relayed in each direction.
type Stats struct {
	Sent     int64 // client -> upstream
	Received int64 // upstream -> client
}

// Relay copies both ways until both directions finish, then closes both
// conns.
//
// When one side reaches EOF, the other side's write direction is half-closed
// (TCP shutdown; for TLS a close_notify followed by a TCP shutdown) and the
// other direction keeps going. When either side fails, both conns are closed
// at once without close_notify, so the peers see a truncated stream rather
// than a clean end, and the other direction ends quickly. With idle > 0, a
// connection where no bytes moved in either direction for idle is ended with
// an error wrapping ErrIdle; idle <= 0 disables the timeout.
//
// Relay uses the calling goroutine and one more, and returns only after both
// have finished. The error is nil when both directions ended cleanly.
func Relay(client, upstream net.Conn, idle time.Duration) (Stats, error) {
	return RelayWith(client, upstream, idle, nil)
}

// Hooks observe or rewrite relayed bytes: session recording and credential
// injection. Each direction calls its hooks from its own goroutine.
type Hooks struct {
	// ClientTransform rewrites what the client sends before it goes
	// upstream, appending the bytes to forward to dst. An error ends the
	// relay at once (fail closed): nothing more is forwarded.
	ClientTransform func(dst, p []byte) ([]byte, error)
	// ClientEOF runs when the client's stream ends, before the half-close
	// is passed on; an error ends the relay (a transform holding an
	// incomplete request, say).
	ClientEOF func() error
	// Tap sees the bytes of each direction just before they are written
	// (client->upstream after ClientTransform), so a response is never
	// seen before its request. An error ends the relay unwritten.
	Tap func(toUpstream bool, p []byte) error
}

// RelayWith is Relay with hooks; h may be nil.
func RelayWith(client, upstream net.Conn, idle time.Duration, h *Hooks) (Stats, error) {
	r := &relay{client: client, upstream: upstream, hooks: h}
	if idle > 0 {
		r.startIdleTimer(idle)
	}
	// Splicing bypasses user-space buffers entirely but gives no hook to
	// observe activity, so only use it when there is no idle timeout and
	// nothing looks at the bytes.
	splice := idle <= 0 && h == nil && isPlainTCP(client) && isPlainTCP(upstream)

	sent := make(chan int64, 1)
	go func() { sent <- r.copy(upstream, client, "client", "upstream", splice) }()
	var st Stats
	st.Received = r.copy(client, upstream, "upstream", "client", splice)
	st.Sent = <-sent

	r.stopIdleTimer()
	// On a clean end both write sides are already shut (close_notify sent),
	// so these Closes send nothing and cannot block; after a failure the
	// sockets are already closed and these only release resources.
	_ = client.Close()
	_ = upstream.Close()
	if f := r.failure.Load(); f != nil {
		return st, f.err
	}
	return st, nil
}

type relay struct {
	client, upstream net.Conn
	hooks            *Hooks

	failure atomic.Pointer[failure] // first error; set once

	// Idle tracking: every completed write stores the time since start in
	// lastActive (one atomic store, no syscall), and a single timer per relay
	// compares it against now when it fires, re-arming itself for the
	// remaining time. That is far cheaper than SetReadDeadline per Read,
	// which re-arms a runtime timer on every call in both directions.
	start      time.Time
	idle       time.Duration // 0: disabled
	lastActive atomic.Int64  // nanoseconds since start

	mu       sync.Mutex // guards timer and finished against checkIdle
	timer    *time.Timer
	finished bool
}

type failure struct{ err error }

// copy moves src to dst until EOF or error and returns the bytes written.
// from and to name the sides for error messages.
func (r *relay) copy(dst, src net.Conn, from, to string, splice bool) int64 {
	if splice {
		// *net.TCPConn.ReadFrom uses splice(2) on Linux: no user buffer.
		n, err := io.Copy(dst, src)
		if err != nil {
			r.fail(fmt.Errorf("copy %s to %s: %w", from, to, err))
			return n
		}
		r.halfClose(dst, to)
		return n
	}

	pool := poolFor(src)
	w := newWaiter(src) // nil: src has no cheap readiness check
	batch := batcherOf(dst)
	var bp *[]byte
	// Without a readiness check (TLS sources) a buffer is held while
	// blocked in Read. Block with a small one and take the large one only
	// once a read fills the small one: idle connections then pin 2 KiB
	// instead of 16, and request/response traffic rarely needs more.
	var small *[]byte
	if w == nil {
		small = smallBufs.Get().(*[]byte)
		bp = small
	}
	defer func() {
		if bp != nil && bp != small {
			pool.Put(bp)
		}
		if small != nil {
			smallBufs.Put(small)
		}
	}()
	var n int64
	toUpstream := dst == r.upstream
	var transform func(dst, p []byte) ([]byte, error)
	var tap func(bool, []byte) error
	var out []byte // transform output, reused
	if h := r.hooks; h != nil {
		tap = h.Tap
		if toUpstream {
			transform = h.ClientTransform
		}
	}
	for {
		if bp == nil {
			if w != nil {
				if err := w.wait(); err != nil {
					r.fail(fmt.Errorf("read from %s: %w", from, err))
					return n
				}
			}
			bp = pool.Get().(*[]byte)
		}
		buf := *bp
		nr, rerr := src.Read(buf)
		data := buf[:nr]
		if nr > 0 && transform != nil {
			var terr error
			if out, terr = transform(out[:0], data); terr != nil {
				r.fail(fmt.Errorf("from %s: %w", from, terr))
				return n
			}
			data = out
		}
		if len(data) > 0 && tap != nil {
			// Before the write: the upstream's answer must not be seen
			// before the request it answers.
			if err := tap(toUpstream, data); err != nil {
				r.fail(err)
				return n
			}
		}
		if len(data) > 0 {
			var nw int
			var werr error
			if batch != nil {
				batch.begin()
				nw, werr = dst.Write(data)
				if ferr := batch.flush(); werr == nil {
					werr = ferr
				}
			} else {
				nw, werr = dst.Write(data)
			}
			n += int64(nw)
			if werr != nil {
				r.fail(fmt.Errorf("write to %s: %w", to, werr))
				return n
			}
			r.touch()
		}
		if rerr == io.EOF {
			if toUpstream && r.hooks != nil && r.hooks.ClientEOF != nil {
				if err := r.hooks.ClientEOF(); err != nil {
					r.fail(fmt.Errorf("client stream ended: %w", err))
					return n
				}
			}
			r.halfClose(dst, to)
			return n
		}
		if rerr != nil {
			r.fail(fmt.Errorf("read from %s: %w", from, rerr))
			return n
		}
		// A short read means src is probably drained: give the buffer back
		// while waiting, so idle connections do not pin it.
		switch {
		case w != nil && nr < len(buf):
			pool.Put(bp)
			bp = nil
		case small != nil && bp == small && nr == len(buf):
			bp = pool.Get().(*[]byte) // bulk: switch to the large buffer
		case small != nil && bp != small && nr < len(buf):
			pool.Put(bp)
			bp = small
		}
	}
}

// halfClose passes EOF on to dst's peer.
func (r *relay) halfClose(dst net.Conn, to string) {
	if err := closeWrite(dst); err != nil {
		r.fail(fmt.Errorf("half-close %s: %w", to, err))
	}
}

// fail records the first error and closes both sockets, without TLS
// close_notify, to end the other direction promptly.
func (r *relay) fail(err error) {
	if !r.failure.CompareAndSwap(nil, &failure{err: err}) {
		return
	}
	abort(r.client)
	abort(r.upstream)
}

func (r *relay) touch() {
	if r.idle > 0 {
		r.lastActive.Store(int64(time.Since(r.start)))
	}
}

func (r *relay) startIdleTimer(idle time.Duration) {
	r.start = time.Now()
	r.idle = idle
	// Hold mu so checkIdle cannot run before r.timer is set.
	r.mu.Lock()
	r.timer = time.AfterFunc(idle, r.checkIdle)
	r.mu.Unlock()
}

func (r *relay) checkIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return
	}
	quiet := time.Since(r.start) - time.Duration(r.lastActive.Load())
	if quiet >= r.idle {
		r.fail(fmt.Errorf("no bytes in either direction for %v: %w", r.idle, ErrIdle))
		return
	}
	r.timer.Reset(r.idle - quiet)
}

// stopIdleTimer stops the timer for good; the finished flag stops a
// concurrently running checkIdle from re-arming it.
func (r *relay) stopIdleTimer() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished = true
	if r.timer != nil {
		r.timer.Stop()
	}
}

type closeWriter interface{ CloseWrite() error }

// closeWrite shuts down the write direction of c.
func closeWrite(c net.Conn) error {
	switch c := c.(type) {
	case *tls.Conn:
		// close_notify is the TLS end of stream; the TCP shutdown after it
		// lets peers that only watch the socket see EOF too.
		if err := c.CloseWrite(); err != nil {
			return fmt.Errorf("send close_notify: %w", err)
		}
		if cw, ok := c.NetConn().(closeWriter); ok {
			return cw.CloseWrite()
		}
		return nil
	case closeWriter:
		return c.CloseWrite()
	}
	// No half-close available: a full close is the only way to pass the
	// EOF on, which also ends the other direction.
	return c.Close()
}

// abort closes c's socket. For TLS it closes the underlying conn: Close would
// first send close_notify, which can block for seconds on a stalled peer and
// would make a truncated stream look complete.
func abort(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.NetConn().Close()
		return
	}
	_ = c.Close()
}

// isPlainTCP reports whether c is exactly a *net.TCPConn, with no wrapper
// that could buffer data the kernel no longer holds.
func isPlainTCP(c net.Conn) bool {
	_, ok := c.(*net.TCPConn)
	return ok
}
