// Package sockmark sets SO_MARK on the agent's own sockets before connect, so
// the BPF connect hook recognises them and never redirects them (no loops).
package sockmark

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Control returns a net.Dialer Control hook that sets SO_MARK on the
// socket before connect, which is when the BPF connect hook looks at it.
func Control(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// The kernel reads the option as u32; int keeps all 32 bits.
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		})
		if err != nil {
			return fmt.Errorf("set SO_MARK %#x: %w", mark, err)
		}
		if errors.Is(serr, unix.EPERM) {
			return fmt.Errorf("set SO_MARK %#x: %w (setting a socket mark needs CAP_NET_ADMIN, or CAP_NET_RAW on Linux 5.17+)", mark, serr)
		}
		if serr != nil {
			return fmt.Errorf("set SO_MARK %#x: %w", mark, serr)
		}
		return nil
	}
}
