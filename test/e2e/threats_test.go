package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/intransit/intransit/internal/testutil"
)

// TestExclusionIsByMarkAndCgroup (threat T4): only sockets carrying the
// agent's SO_MARK and processes outside the attached cgroup escape
// interception; both are documented. A marked socket in the cgroup reaches
// the plaintext port directly: setting SO_MARK needs CAP_NET_ADMIN, so only
// privileged processes can opt out.
func TestExclusionIsByMarkAndCgroup(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "plain")
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	r := startAgent(t, agentOpts{rules: fmt.Sprintf("  - {name: blocked, ports: [%d], mode: deny}\n", port)})

	// Outside the cgroup: untouched.
	if c, err := net.Dial("tcp4", ln.Addr().String()); err != nil {
		t.Fatalf("outside the cgroup the connect should pass: %v", err)
	} else {
		c.Close()
	}
	testutil.EnterCgroup(t, r.cgroup)
	if _, err := net.Dial("tcp4", ln.Addr().String()); err == nil {
		t.Fatal("inside the cgroup a deny rule must refuse the connect")
	}
	marked := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		_ = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(r.cfg.BPF.Mark))
		})
		return serr
	}}
	c, err := marked.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatalf("a socket with the agent's mark is excluded by design: %v", err)
	}
	c.Close()
	other := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		_ = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(r.cfg.BPF.Mark)+1)
		})
		return serr
	}}
	if _, err := other.Dial("tcp4", ln.Addr().String()); err == nil {
		t.Fatal("any other mark must not exclude a socket")
	}
}

// TestCommInjectionIsEscaped (threat T17): a workload names its thread with
// a newline and a forged JSON object; the audit trail keeps one line per event
// and the forged verdict never appears as an event of its own.
func TestCommInjectionIsEscaped(t *testing.T) {
	port := freePort(t)
	r := startAgent(t, agentOpts{enter: true, rules: fmt.Sprintf("  - {name: blocked, ports: [%d], mode: deny}\n", port)})
	evil := "x\n{\"verdict\":1}" // comm holds 15 bytes
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the renamed thread dies with the goroutine
		b := append([]byte(evil), 0)
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0); err != nil {
			done <- err
			return
		}
		_, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		done <- err
	}()
	if err := <-done; err == nil {
		t.Fatal("deny rule did not refuse")
	}
	evs := r.events(t, countAtLeast(1, "verdict", "DENIED"))
	raw, _ := os.ReadFile(r.audit)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != len(evs) || len(evs) != 1 {
		t.Fatalf("want exactly one audit line, got %d lines:\n%s", len(lines), raw)
	}
	proc := evs[0]["process"].(map[string]any)
	if !strings.HasPrefix(evil, fmt.Sprint(proc["comm"])) || !bytes.Contains(raw, []byte(`x\n{`)) {
		t.Errorf("comm = %q, want the escaped %q", proc["comm"], evil)
	}
}

// TestNoLeaksAfterChurn (threat T13): sessions that succeed, fail the
// handshake, or whose client leaves during the upstream dial all release
// their goroutines and file descriptors.
func TestNoLeaksAfterChurn(t *testing.T) {
	p := newPKI(t)
	srv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)
	// A black hole: accepts TCP, never speaks TLS (handshake timeout path).
	hole, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	held := make(chan net.Conn, 1024)
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			held <- c
		}
	}()
	good, stall := freePort(t), freePort(t)
	r := startAgent(t, agentOpts{enter: true, rules: enforceRule("good", good, srv.port, ", caFile: "+p.ca.File) +
		enforceRule("stall", stall, hole.Addr().(*net.TCPAddr).Port, ", caFile: "+p.ca.File)})
	// Shorter handshake timeout for the stall path.
	cfg := *r.cfg
	cfg.Proxy.HandshakeTimeout.Duration = 300 * time.Millisecond
	if err := r.agent.Reload(&cfg); err != nil {
		t.Fatal(err)
	}
	run := func(n int) {
		for i := range n {
			c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", good))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := roundTrip(c, "ping"); err != nil {
				t.Fatalf("session %d: %v", i, err)
			}
			c.Close()
			// Client gives up while the upstream handshake hangs.
			s, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", stall))
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
		}
	}
	run(20) // warm pools and lazily started goroutines
	time.Sleep(500 * time.Millisecond)
	g0, fd0 := runtime.NumGoroutine(), countFDs(t)
	run(200)
	time.Sleep(500 * time.Millisecond) // > handshake timeout: stalled dials end
	for len(held) > 0 {                // the black hole's own ends are ours
		(<-held).Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	var g, fd int
	for {
		g, fd = runtime.NumGoroutine(), countFDs(t)
		if (g <= g0+2 && fd <= fd0+2) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if g > g0+2 || fd > fd0+2 {
		t.Fatalf("after 400 sessions: goroutines %d -> %d, fds %d -> %d", g0, g, fd0, fd)
	}
	// T5: no stale original-destination entries once the sockets are gone.
	for _, m := range r.agent.Status().Maps {
		if m.Entries != 0 {
			t.Errorf("map %s holds %d entries after every connection closed", m.Map, m.Entries)
		}
	}
	// A client that leaves before the proxy accepts loses its entry at close:
	// that one is REFUSED rather than an upstream ERROR. Each is audited.
	stalled := func(evs []map[string]any) int {
		return len(having(evs, "rule", "stall", "verdict", "ERROR")) + len(having(evs, "verdict", "REFUSED"))
	}
	evs := r.events(t, func(evs []map[string]any) bool { return stalled(evs) >= 220 })
	if n := stalled(evs); n != 220 {
		t.Errorf("stalled sessions audited: %d, want 220", n)
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestMissingPrivilegesNamed: run as an unprivileged user, the agent says
// which capabilities it needs instead of the usual memlock advice.
func TestMissingPrivilegesNamed(t *testing.T) {
	testutil.RequireRoot(t)
	bin := agentBinary(t)
	dir, err := os.MkdirTemp("", "intransit-unpriv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	cg := testutil.NewCgroup(t)
	cfg := filepath.Join(dir, "intransit.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`cgroup: %s
bpf: {pinPath: /sys/fs/bpf/%s}
proxy: {port: %d}
metrics: {listen: "off"}
api: {socket: %s/api.sock}
rules:
  - {name: r, ports: [%d], mode: deny}
`, cg, testutil.RandomName("intransit-unpriv-"), freePort(t), dir, freePort(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "agent", "--config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("agent as nobody should fail:\n%s", out)
	}
	t.Logf("as nobody: %v\n%s", err, out)
	// The error itself (not just a startup warning) must name them.
	i := bytes.LastIndex(out, []byte("intransit: "))
	if i < 0 {
		t.Fatalf("no error line:\n%s", out)
	}
	for _, want := range []string{"CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"} {
		if !bytes.Contains(out[i:], []byte(want)) {
			t.Errorf("error lacks %s: %s", want, out[i:])
		}
	}
}
