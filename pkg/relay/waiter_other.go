//go:build !linux

package relay

import "net"

// waiter is Linux-only; elsewhere reads hold their buffer while blocked.
type waiter struct{}

func newWaiter(net.Conn) *waiter { return nil }

func (*waiter) wait() error { return nil }
