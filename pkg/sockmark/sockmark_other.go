//go:build !linux

package sockmark

import (
	"fmt"
	"syscall"
)

// Control fails every dial: without SO_MARK the BPF hook would redirect
// the proxy's own connects back to itself, so there is no safe fallback.
func Control(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, _ syscall.RawConn) error {
		return fmt.Errorf("set SO_MARK %#x: socket marks are only supported on linux", mark)
	}
}
