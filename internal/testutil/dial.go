package testutil

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// DialV4Mapped connects an AF_INET6 socket to ::ffff:a.b.c.d, something Go's
// net package never does (it unmaps and uses AF_INET). Such a connect passes
// through cgroup/connect6 only, the classic interception bypass.
func DialV4Mapped(dst netip.AddrPort) (net.Conn, error) {
	if !dst.Addr().Is4() && !dst.Addr().Is4In6() {
		return nil, fmt.Errorf("dial v4-mapped: %s is not an IPv4 address", dst)
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("clear IPV6_V6ONLY: %w", err)
	}
	sa := &unix.SockaddrInet6{Port: int(dst.Port()), Addr: netip.AddrFrom16(dst.Addr().As16()).As16()}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect [::ffff:%s]:%d: %w", dst.Addr().Unmap(), dst.Port(), err)
	}
	f := os.NewFile(uintptr(fd), "v4mapped")
	defer f.Close()
	return net.FileConn(f)
}

// DialFastOpen sends data in the SYN with sendto(MSG_FASTOPEN), the TCP Fast
// Open path that skips connect(2) but still passes cgroup/connect4.
func DialFastOpen(dst netip.AddrPort, data []byte) (net.Conn, error) {
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().Unmap().As4()}
	if dst.Addr().Is6() && !dst.Addr().Is4In6() {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Sendto(fd, data, unix.MSG_FASTOPEN, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sendto MSG_FASTOPEN %s: %w", dst, err)
	}
	f := os.NewFile(uintptr(fd), "fastopen")
	defer f.Close()
	return net.FileConn(f)
}
