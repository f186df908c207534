package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/intransit/intransit/internal/testutil"

	"golang.org/x/sys/unix"

	"github.com/intransit/intransit/pkg/config"
)

// testMark is the default mark from the config package documentation.
const testMark = 0x1e7a0001

// socketMark reads SO_MARK back from a dialed connection.
func socketMark(t *testing.T, c *tls.Conn) uint32 {
	t.Helper()
	rc, err := c.NetConn().(interface{ NetConn() net.Conn }).NetConn().(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	var mark int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
	}); err != nil {
		t.Fatalf("Control: %v", err)
	}
	if gerr != nil {
		t.Fatalf("getsockopt SO_MARK: %v", gerr)
	}
	return uint32(mark)
}

func TestSocketMark(t *testing.T) {
	testutil.RequireRoot(t) // SO_MARK needs CAP_NET_ADMIN
	p := newTestPKI(t)
	dst := startTLSServer(t, serverConfig(p.server))

	for _, mark := range []uint32{testMark, 0xffffffff} {
		d := newTestDialer(t, Options{TLS: config.TLS{CAFile: p.caFile}, Mark: mark})
		if got := socketMark(t, dialOK(t, d, dst)); got != mark {
			t.Errorf("SO_MARK = %#x, want %#x", got, mark)
		}
	}
	unmarked := newTestDialer(t, Options{TLS: config.TLS{CAFile: p.caFile}})
	if got := socketMark(t, dialOK(t, unmarked, dst)); got != 0 {
		t.Errorf("SO_MARK = %#x without a mark, want 0", got)
	}
}

func TestSocketMarkWithoutPrivilegeFailsClosed(t *testing.T) {
	dst := startSilentServer(t)
	d := newTestDialer(t, Options{Mark: testMark})

	// Capabilities are per thread: drop the ones that allow SO_MARK on a
	// locked thread, dial from it, and let the thread die with the goroutine
	// (no UnlockOSThread) so the reduced thread is never reused.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := dropCaps(unix.CAP_NET_ADMIN, unix.CAP_NET_RAW); err != nil {
			errc <- fmt.Errorf("drop capabilities: %w", err)
			return
		}
		c, err := d.Dial(context.Background(), dst)
		if err == nil {
			_ = c.Close()
			err = errors.New("dial succeeded without CAP_NET_ADMIN")
		}
		errc <- err
	}()
	err := <-errc
	if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Fatalf("err = %v, want EPERM naming CAP_NET_ADMIN", err)
	}
	if got := Reason(err); got != "dial_error" {
		t.Errorf("Reason = %q, want dial_error", got)
	}
	t.Logf("error: %v", err)
}

// dropCaps removes capabilities from the calling thread's effective set.
func dropCaps(caps ...int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	for _, c := range caps {
		data[c/32].Effective &^= 1 << (c % 32)
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}
