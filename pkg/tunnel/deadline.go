package tunnel

import (
	"net"
	"os"
	"sync"
	"time"
)

// deadlines implements net.Conn deadlines for a stream. An HTTP/2 body read
// or write cannot be interrupted without resetting the stream, so expiry
// calls expire (which resets it) and the stream stays failed.
type deadlines struct {
	mu      sync.Mutex
	timers  [2]*time.Timer
	gen     [2]uint64 // bumped by every set, so a stale timer does nothing
	expired bool
	expire  func() // resets the stream; called without mu held
}

const (
	readDir  = 0
	writeDir = 1
)

// set arms direction dir's deadline at t; the zero time disarms it.
func (d *deadlines) set(dir int, t time.Time) {
	d.mu.Lock()
	d.gen[dir]++
	if d.timers[dir] != nil {
		d.timers[dir].Stop()
		d.timers[dir] = nil
	}
	if d.expired || t.IsZero() {
		d.mu.Unlock()
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		d.expired = true
		d.mu.Unlock()
		d.expire()
		return
	}
	gen := d.gen[dir]
	d.timers[dir] = time.AfterFunc(wait, func() { d.fire(dir, gen) })
	d.mu.Unlock()
}

func (d *deadlines) fire(dir int, gen uint64) {
	d.mu.Lock()
	if d.gen[dir] != gen || d.expired {
		d.mu.Unlock()
		return
	}
	d.expired = true
	d.mu.Unlock()
	d.expire()
}

// hasExpired reports whether a deadline reset the stream.
func (d *deadlines) hasExpired() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expired
}

// stop disarms both timers for good.
func (d *deadlines) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, t := range d.timers {
		if t != nil {
			t.Stop()
			d.timers[i] = nil
		}
		d.gen[i]++
	}
}

// timeoutError is what I/O returns after a deadline expired: a net.Error
// whose Timeout() is true, wrapping os.ErrDeadlineExceeded.
func timeoutError(op string, local, remote net.Addr) error {
	return &net.OpError{Op: op, Net: "tunnel", Source: local, Addr: remote, Err: os.ErrDeadlineExceeded}
}

// SetDeadline and friends reset the stream when the deadline expires; see
// the package documentation. Both stream types embed deadlines.
func (d *deadlines) SetDeadline(t time.Time) error {
	d.set(readDir, t)
	d.set(writeDir, t)
	return nil
}

func (d *deadlines) SetReadDeadline(t time.Time) error {
	d.set(readDir, t)
	return nil
}

func (d *deadlines) SetWriteDeadline(t time.Time) error {
	d.set(writeDir, t)
	return nil
}
