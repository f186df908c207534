package testutil

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// PeerNS is a network namespace behind a veth pair: a remote host on one
// machine.
type PeerNS struct {
	NS       netns.NsHandle
	HostIf   string
	HostIP   net.IP
	RemoteIP net.IP
}

func NewPeerNS(t testing.TB, subnet byte) *PeerNS {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // also switches this thread into it
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}
	p := &PeerNS{NS: ns, HostIf: RandomName("itw")[:11], HostIP: net.IPv4(10, 77, subnet, 1), RemoteIP: net.IPv4(10, 77, subnet, 2)}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(p.HostIf); err == nil {
			_ = netlink.LinkDel(l)
		}
		ns.Close() // the namespace goes with its last reference
	})
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.HostIf}, PeerName: p.HostIf + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	peer, err := netlink.LinkByName(p.HostIf + "p")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(peer, int(ns)); err != nil {
		t.Fatal(err)
	}
	host, _ := netlink.LinkByName(p.HostIf)
	must(t, netlink.AddrAdd(host, &netlink.Addr{IPNet: &net.IPNet{IP: p.HostIP, Mask: net.CIDRMask(24, 32)}}))
	must(t, netlink.LinkSetUp(host))
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	inner, err := h.LinkByName(p.HostIf + "p")
	if err != nil {
		t.Fatal(err)
	}
	must(t, h.AddrAdd(inner, &netlink.Addr{IPNet: &net.IPNet{IP: p.RemoteIP, Mask: net.CIDRMask(24, 32)}}))
	must(t, h.LinkSetUp(inner))
	lo, _ := h.LinkByName("lo")
	must(t, h.LinkSetUp(lo))
	return p
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// listen opens a listener inside the namespace (a socket belongs to the
// namespace it was created in).
func (p *PeerNS) Listen(t testing.TB, port int) net.Listener {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, _ := netns.Get()
	defer orig.Close()
	must(t, netns.Set(p.NS))
	ln, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", p.RemoteIP, port))
	must(t, netns.Set(orig))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// capture records every frame on an interface with an AF_PACKET socket.
type Capture struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
}

func StartCapture(t testing.TB, ifname string) *Capture {
	t.Helper()
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
		t.Fatal(err)
	}
	tv := unix.Timeval{Usec: 100000}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	c := &Capture{fd: fd, done: make(chan struct{})}
	var stopped atomic.Bool
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536)
		for !stopped.Load() {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue
			}
			c.mu.Lock()
			c.frames = append(c.frames, bytes.Clone(buf[:n]))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { stopped.Store(true); <-c.done; unix.Close(fd) })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// report counts SYNs to a port and frames containing needle.
func (c *Capture) Report(port uint16, needle []byte) (syns, leaks int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.frames {
		if bytes.Contains(f, needle) {
			leaks++
		}
		// Ethernet (14) + IPv4 header, TCP.
		if len(f) < 14+20+20 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 || f[14+9] != 6 {
			continue
		}
		ihl := int(f[14]&0x0f) * 4
		tcp := f[14+ihl:]
		if len(tcp) >= 14 && binary.BigEndian.Uint16(tcp[2:4]) == port && tcp[13]&0x02 != 0 && tcp[13]&0x10 == 0 {
			syns++
		}
	}
	return syns, leaks
}

// Dial connects from inside the namespace (the "remote host") to addr.
func (p *PeerNS) Dial(addr string, timeout time.Duration) (net.Conn, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	if err := netns.Set(p.NS); err != nil {
		return nil, err
	}
	defer netns.Set(orig) //nolint:errcheck // best effort back to the original namespace
	return net.DialTimeout("tcp", addr, timeout)
}

// ListenOn opens a TCP listener on addr inside the namespace.
func (p *PeerNS) ListenOn(t testing.TB, addr string) net.Listener {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, _ := netns.Get()
	defer orig.Close()
	must(t, netns.Set(p.NS))
	ln, err := net.Listen("tcp", addr)
	must(t, netns.Set(orig))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// NSFile returns the namespace as a file, e.g. to hand to a child process
// (nsenter --net=/proc/self/fd/N). The caller closes it.
func (p *PeerNS) NSFile() (*os.File, error) {
	fd, err := unix.Dup(int(p.NS))
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "netns"), nil
}
