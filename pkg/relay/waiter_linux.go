package relay

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// waiter blocks until a plain TCP socket has data, EOF or an error pending,
// without holding a read buffer, so idle connections pin no pooled memory.
type waiter struct {
	rc    syscall.RawConn
	ready func(fd uintptr) bool // bound once to avoid a closure per wait
	// Syscall arguments live here, already on the heap, so that a check
	// allocates nothing.
	fds  [1]unix.PollFd
	zero unix.Timespec // poll timeout 0: never block the thread
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

// wait returns when a Read on the conn would not block. Between checks the
// runtime's poller parks the goroutine, as it does for a blocked Read.
func (w *waiter) wait() error { return w.rc.Read(w.ready) }

// check asks the kernel whether the socket is readable, i.e. has data, EOF
// or an error. poll reports the state without consuming anything: peeking
// with recv would consume a pending ECONNRESET, and the Read after it would
// then see a plain EOF, mistaking a reset for a clean end.
func (w *waiter) check(fd uintptr) bool {
	w.fds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	for {
		n, err := unix.Ppoll(w.fds[:], &w.zero, nil)
		if err == unix.EINTR {
			continue
		}
		// On a poll failure let Read run and report the socket's state.
		return err != nil || n > 0
	}
}
