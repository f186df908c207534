package relay

import (
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// waiter blocks until a plain TCP socket has data, EOF or an error pending,
// without holding a read buffer, so idle connections pin no pooled memory.
type waiter struct {
	rc    syscall.RawConn
	peek  [1]byte
	ready func(fd uintptr) bool // bound once to avoid a closure per wait
	err   error                 // socket error consumed by the peek
}

// newWaiter returns nil unless c is exactly a *net.TCPConn: a wrapper could
// hold buffered bytes the kernel no longer has, and waiting on the socket
// would then stall.
func newWaiter(c net.Conn) *waiter {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &waiter{rc: rc}
	w.ready = w.check
	return w
}

// wait returns when a Read on the conn would not block, or with the socket's
// error. The runtime's poller parks the goroutine between checks.
func (w *waiter) wait() error {
	if err := w.rc.Read(w.ready); err != nil {
		return err
	}
	if w.err != nil {
		return os.NewSyscallError("recvfrom", w.err)
	}
	return nil
}

// check peeks one byte without consuming it: data or EOF mean Read will
// return at once. A pending socket error (e.g. ECONNRESET) is reported by
// the kernel only once, so it is kept for wait to return: a following Read
// would see a plain EOF and mistake a reset for a clean end.
func (w *waiter) check(fd uintptr) bool {
	for {
		_, _, err := unix.Recvfrom(int(fd), w.peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch err {
		case nil:
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		w.err = err
		return true
	}
}
