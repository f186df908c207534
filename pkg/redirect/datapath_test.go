package redirect_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/intransit/intransit/internal/testutil"
	"github.com/intransit/intransit/pkg/redirect"
)

// freePort returns a loopback TCP port nobody listens on right now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

type fixture struct {
	dp      *redirect.Datapath
	proxy   *net.TCPListener
	proxy6  *net.TCPListener
	port    uint16 // protected port
	cgroup  string
	pinPath string
}

func setup(t *testing.T, mode redirect.Mode, prefixes ...netip.Prefix) *fixture {
	t.Helper()
	testutil.RequireRoot(t)
	f := &fixture{cgroup: testutil.NewCgroup(t), pinPath: testutil.PinPath(t), port: freePort(t)}
	var err error
	f.proxy, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.proxy.Close() })
	proxyPort := uint16(f.proxy.Addr().(*net.TCPAddr).Port)
	f.proxy6, err = net.ListenTCP("tcp6", &net.TCPAddr{IP: net.IPv6loopback, Port: int(proxyPort)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.proxy6.Close() })
	f.dp, err = redirect.Install(redirect.Options{
		PinPath: f.pinPath, Cgroup: f.cgroup, MapSize: 1024, Mark: 0x1e7a0001, ProxyPort: proxyPort,
	}, []redirect.Rule{{ID: 1, Mode: mode, Ports: []uint16{f.port}, Prefixes: prefixes}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.dp.Close() })
	testutil.EnterCgroup(t, f.cgroup)
	return f
}

func TestEnforceRedirectsAndRecordsOrigin(t *testing.T) {
	f := setup(t, redirect.ModeEnforce)
	for _, tc := range []struct {
		name, network, addr string
		ln                  *net.TCPListener
	}{
		{"ipv4", "tcp4", "127.0.0.1", f.proxy},
		{"ipv6", "tcp6", "::1", f.proxy6},
		{"ipv4-mapped", "tcp6", "::ffff:127.0.0.1", f.proxy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := netip.AddrPortFrom(netip.MustParseAddr(tc.addr), f.port)
			var c net.Conn
			var err error
			if tc.name == "ipv4-mapped" {
				c, err = testutil.DialV4Mapped(dst)
			} else {
				c, err = net.DialTimeout(tc.network, dst.String(), 2*time.Second)
			}
			if err != nil {
				t.Fatalf("dial %s: %v", dst, err)
			}
			defer c.Close()
			if got := c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != dst {
				t.Errorf("getpeername = %s, want the original %s", got, dst)
			}
			_ = tc.ln.SetDeadline(time.Now().Add(2 * time.Second))
			sc, err := tc.ln.AcceptTCP()
			if err != nil {
				t.Fatalf("proxy accept: %v", err)
			}
			defer sc.Close()
			remote := sc.RemoteAddr().(*net.TCPAddr).AddrPort()
			o, err := f.dp.Take(netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()))
			if err != nil {
				t.Fatalf("take: %v", err)
			}
			if o.Destination.Addr().Unmap() != dst.Addr().Unmap() || o.Destination.Port() != dst.Port() {
				t.Errorf("original destination = %s, want %s", o.Destination, dst)
			}
			if o.PID != uint32(os.Getpid()) || o.RuleID != 1 || o.Comm == "" {
				t.Errorf("process = pid %d comm %q rule %d, want pid %d", o.PID, o.Comm, o.RuleID, os.Getpid())
			}
			if _, err := f.dp.Take(netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())); err != redirect.ErrNoEntry {
				t.Errorf("second take = %v, want ErrNoEntry (entries are consumed)", err)
			}
		})
	}
}

// TestPodNamespaceClients: a client in another network namespace (a pod)
// cannot reach the host's loopback, so its enforced connects go to the pod
// proxy address; the proxy there finds the original destination by the
// pod's address.
func TestPodNamespaceClients(t *testing.T) {
	testutil.RequireRoot(t)
	pod := testutil.NewPeerNS(t, 98)
	cg, pin := testutil.NewCgroup(t), testutil.PinPath(t)
	proxy, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: pod.HostIP})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	port := freePort(t)
	proxyPort := uint16(proxy.Addr().(*net.TCPAddr).Port)
	dp, err := redirect.Install(redirect.Options{
		PinPath: pin, Cgroup: cg, MapSize: 1024, Mark: 0x1e7a0001, ProxyPort: proxyPort,
		PodProxyIP: netip.MustParseAddr(pod.HostIP.String()),
	}, []redirect.Rule{{ID: 1, Mode: redirect.ModeEnforce, Ports: []uint16{port}}})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	testutil.EnterCgroup(t, cg)

	dst := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), port) // unroutable from the pod: must never be dialled
	c, err := pod.Dial(dst.String(), 2*time.Second)
	if err != nil {
		t.Fatalf("pod connect: %v", err)
	}
	defer c.Close()
	if got := c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != dst {
		t.Errorf("getpeername in the pod = %s, want %s", got, dst)
	}
	_ = proxy.SetDeadline(time.Now().Add(2 * time.Second))
	sc, err := proxy.AcceptTCP()
	if err != nil {
		t.Fatalf("proxy accept on the pod address: %v", err)
	}
	defer sc.Close()
	o, err := dp.Take(sc.RemoteAddr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatalf("take: %v", err)
	}
	if o.Destination != dst {
		t.Errorf("original destination = %s, want %s", o.Destination, dst)
	}
	// A host client in the same cgroup still goes to loopback.
	if _, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		t.Error("host client: nothing listens on the loopback proxy port here, the connect must be refused")
	}
}
