package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listen binds a unixgram socket standing in for systemd and points
// $NOTIFY_SOCKET at it. It returns a channel of received messages.
func listen(t *testing.T, name string) <-chan string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", name)
	msgs := make(chan string, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, _, err := c.ReadFromUnix(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return msgs
}

func next(t *testing.T, msgs <-chan string) string {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(2 * time.Second):
		t.Fatal("no message within 2s")
		return ""
	}
}

func fields(msg string) map[string]string {
	out := map[string]string{}
	for l := range strings.SplitSeq(msg, "\n") {
		k, v, _ := strings.Cut(l, "=")
		out[k] = v
	}
	return out
}

func testStates(t *testing.T, name string) {
	msgs := listen(t, name)
	n, err := New()
	if err != nil || !n.Enabled() {
		t.Fatalf("New: %v, enabled %t", err, n.Enabled())
	}

	must(t, n.Ready("serving 3 rules"))
	if got := next(t, msgs); got != "READY=1\nSTATUS=serving 3 rules" {
		t.Errorf("ready: %q", got)
	}

	var ts unix.Timespec
	must(t, unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts))
	before := ts.Sec*1e6 + ts.Nsec/1e3
	must(t, n.Reloading("reloading\nconfiguration"))
	m := fields(next(t, msgs))
	must(t, unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts))
	after := ts.Sec*1e6 + ts.Nsec/1e3
	usec, err := strconv.ParseInt(m["MONOTONIC_USEC"], 10, 64)
	if m["RELOADING"] != "1" || err != nil || usec < before || usec > after {
		t.Errorf("reloading: %v; want RELOADING=1 and MONOTONIC_USEC in [%d, %d]", m, before, after)
	}
	if m["STATUS"] != "reloading; configuration" {
		t.Errorf("a status must stay on one line: %q", m["STATUS"])
	}

	must(t, n.Stopping(""))
	if got := next(t, msgs); got != "STOPPING=1" {
		t.Errorf("stopping: %q", got)
	}
	must(t, n.Status("draining 2 sessions"))
	if got := next(t, msgs); got != "STATUS=draining 2 sessions" {
		t.Errorf("status: %q", got)
	}
	must(t, n.Watchdog())
	if got := next(t, msgs); got != "WATCHDOG=1" {
		t.Errorf("watchdog: %q", got)
	}
}

func TestPathSocket(t *testing.T) {
	testStates(t, filepath.Join(t.TempDir(), "notify.sock"))
}

func TestAbstractSocket(t *testing.T) {
	testStates(t, fmt.Sprintf("@intransit-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
}

func TestUnsetIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := New()
	if err != nil || n.Enabled() {
		t.Fatalf("New: %v, enabled %t", err, n.Enabled())
	}
	for _, err := range []error{n.Ready("x"), n.Reloading(""), n.Stopping(""), n.Watchdog(), n.Status("x")} {
		if err != nil {
			t.Errorf("no-op notifier returned %v", err)
		}
	}
	var zero *Notifier
	if zero.Enabled() || zero.Ready("") != nil {
		t.Error("nil notifier is not a no-op")
	}

	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	if n, err := New(); err == nil || n.Enabled() {
		t.Errorf("vsock address: %v, enabled %t; want an error and a no-op notifier", err, n.Enabled())
	}
}

func TestSendFailsWithoutListener(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody.sock"))
	n, _ := New()
	if err := n.Ready(""); err == nil {
		t.Error("Ready to a missing socket succeeded")
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", "")
	if d, ok := WatchdogInterval(); !ok || d != 15*time.Second {
		t.Errorf("WATCHDOG_USEC=30s: %v %t, want 15s", d, ok)
	}
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if _, ok := WatchdogInterval(); !ok {
		t.Error("WATCHDOG_PID is ours: want the watchdog on")
	}
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	if _, ok := WatchdogInterval(); ok {
		t.Error("WATCHDOG_PID is another process: want the watchdog off")
	}
	t.Setenv("WATCHDOG_PID", "")
	for _, v := range []string{"", "0", "-5", "soon"} {
		t.Setenv("WATCHDOG_USEC", v)
		if _, ok := WatchdogInterval(); ok {
			t.Errorf("WATCHDOG_USEC=%q: want the watchdog off", v)
		}
	}
}

func TestRunWatchdogPingsAtHalfTheTimeout(t *testing.T) {
	msgs := listen(t, filepath.Join(t.TempDir(), "notify.sock"))
	t.Setenv("WATCHDOG_USEC", "200000") // 200ms: a ping every 100ms
	t.Setenv("WATCHDOG_PID", "")
	n, _ := New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() { n.RunWatchdog(ctx, nil); close(done) }()
	var at []time.Duration
	for range 6 {
		if m := next(t, msgs); m != "WATCHDOG=1" {
			t.Fatalf("got %q", m)
		}
		at = append(at, time.Since(start))
	}
	cancel()
	<-done
	if at[0] > 50*time.Millisecond {
		t.Errorf("first ping after %v, want one at once", at[0])
	}
	// Half the timeout on average, and never near the timeout itself.
	if mean := (at[len(at)-1] - at[0]) / time.Duration(len(at)-1); mean < 85*time.Millisecond || mean > 130*time.Millisecond {
		t.Errorf("mean interval %v, want about 100ms (half of WATCHDOG_USEC): %v", mean, at)
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i] - at[i-1]; gap > 180*time.Millisecond {
			t.Errorf("ping %d came %v after the previous one: too close to the 200ms timeout: %v", i, gap, at)
		}
	}
	select {
	case m := <-msgs:
		// At most one ping may have been in flight when ctx ended.
		select {
		case m2 := <-msgs:
			t.Errorf("pings after the context ended: %q %q", m, m2)
		case <-time.After(250 * time.Millisecond):
		}
	case <-time.After(250 * time.Millisecond):
	}

	// No watchdog configured: returns at once, sends nothing.
	t.Setenv("WATCHDOG_USEC", "")
	n.RunWatchdog(context.Background(), nil)
	select {
	case m := <-msgs:
		t.Errorf("sent %q without a watchdog", m)
	case <-time.After(100 * time.Millisecond):
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
