package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/intransit/intransit/internal/testutil"
)

// twoHosts is a planner host (A, the root namespace) and an executor host
// (B, a namespace behind a veth), each with its own agent process.
type twoHosts struct {
	peer        *testutil.PeerNS
	bin, dir    string
	cgA, cgExec string
	issuer      *testutil.Issuer
	ca          *testutil.CA
	cfgA, cfgB  string
	metricsA    string
	metricsB    string
	auditA      string
	auditB      string
	agentA      *agentProc
	agentB      *agentProc
	plainSeen   atomic.Int64 // executor accepts that did not come from agent B
	executorLn  net.Listener
}

const (
	execPort   = 8080
	tunnelPort = 15008
)

// newTwoHosts sets up both hosts and starts both agents. tokenSub is the
// subject of the token agent A presents.
func newTwoHosts(t *testing.T, subnet byte, tokenSub string) *twoHosts {
	testutil.RequireRoot(t)
	h := &twoHosts{bin: agentBinary(t), peer: testutil.NewPeerNS(t, subnet)}
	dir, err := os.MkdirTemp("", "intransit-tunnel")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	h.dir = dir
	h.ca = testutil.NewCA(t, dir, "tunnel")
	serverB := h.ca.Issue(t, dir, testutil.Leaf{CommonName: "executor-host", IPs: []net.IP{h.peer.RemoteIP}})
	h.issuer = testutil.NewIssuer(t, h.peer.ListenOn(t, "127.0.0.1:0"))
	tok := h.issuer.Mint(t, tokenSub, "intransit", time.Hour, nil)
	must(t, os.WriteFile(filepath.Join(dir, "token"), []byte(tok), 0o600))

	// The executor: plaintext, on every address of host B (the legacy
	// habit this feature protects), its socket in the executors' cgroup.
	h.cgA, h.cgExec = testutil.NewCgroup(t), testutil.NewCgroup(t)
	home := testutil.OwnCgroup(t)
	testutil.MoveTo(t, h.cgExec)
	h.executorLn = h.peer.ListenOn(t, fmt.Sprintf("0.0.0.0:%d", execPort))
	testutil.MoveTo(t, home)
	go h.serveExecutor()

	h.metricsA = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	h.metricsB = fmt.Sprintf("%s:%d", h.peer.RemoteIP, 19464)
	h.auditA, h.auditB = filepath.Join(dir, "audit-a.jsonl"), filepath.Join(dir, "audit-b.jsonl")
	h.cfgA = filepath.Join(dir, "a.yaml")
	must(t, os.WriteFile(h.cfgA, []byte(fmt.Sprintf(`cgroup: %s
bpf: {pinPath: /sys/fs/bpf/%s}
proxy: {port: %d}
audit: {file: %s}
metrics: {listen: %s}
api: {socket: %s/a.sock}
identity:
  token: {file: %s/token}
rules:
  - name: executor
    ports: [%d, 9090]
    destinations: [%s/32]
    mode: enforce
    upstream: {tunnel: {port: %d, caFile: %s}}
`, h.cgA, testutil.RandomName("intransit-a-"), freePort(t), h.auditA, h.metricsA, dir, dir,
		execPort, h.peer.RemoteIP, tunnelPort, h.ca.File)), 0o600))
	h.cfgB = filepath.Join(dir, "b.yaml")
	must(t, os.WriteFile(h.cfgB, []byte(fmt.Sprintf(`bpf: {pinPath: /sys/fs/bpf/%s}
proxy: {port: 15001}
audit: {file: %s}
metrics: {listen: %s}
api: {socket: %s/b.sock}
inbound:
  listen: 0.0.0.0:%d
  cgroup: %s
  tls: {certFile: %s, keyFile: %s}
  oidc: {issuer: %s, audience: intransit}
  services:
    - name: executor
      port: %d
      forward: 127.0.0.1:%d
      mode: enforce
      allow: [{sub: "system:serviceaccount:agents:planner"}]
`, testutil.RandomName("intransit-b-"), h.auditB, h.metricsB, dir, tunnelPort, h.cgExec,
		serverB.CertFile, serverB.KeyFile, h.issuer.URL, execPort, execPort)), 0o600))
	t.Cleanup(func() {
		for _, cfg := range []string{h.cfgA, h.cfgB} {
			_ = exec.Command(h.bin, "uninstall", "--config", cfg).Run()
		}
	})
	h.startB(t)
	h.startA(t)
	return h
}

func (h *twoHosts) startA(t *testing.T) {
	h.agentA = startAgentProc(t, h.bin, h.cfgA, h.metricsA)
}

// startB runs agent B inside host B's namespace.
func (h *twoHosts) startB(t *testing.T) {
	nsf, err := h.peer.NSFile()
	must(t, err)
	defer nsf.Close()
	cmd := exec.Command("nsenter", "--net=/proc/self/fd/3", "--", h.bin, "agent", "--config", h.cfgB)
	cmd.ExtraFiles = []*os.File{nsf}
	h.agentB = startAgentCmd(t, cmd, h.metricsB)
}

// serveExecutor echoes; it counts connections that did not come over
// loopback (i.e. from anywhere but agent B).
func (h *twoHosts) serveExecutor() {
	for {
		c, err := h.executorLn.Accept()
		if err != nil {
			return
		}
		if !c.RemoteAddr().(*net.TCPAddr).IP.IsLoopback() {
			h.plainSeen.Add(1)
		}
		go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
	}
}

func (h *twoHosts) dst() string { return fmt.Sprintf("%s:%d", h.peer.RemoteIP, execPort) }

// TestTunnelPlannerToLegacyExecutor: the planner's plaintext connect reaches
// the loopback-only executor through the tunnel; the wire carries only TLS
// to the tunnel port; both sides audit the token subject; plaintext from A
// straight to B's executor port is dropped and audited; an unlisted target
// is refused; many concurrent streams keep their bytes intact.
func TestTunnelPlannerToLegacyExecutor(t *testing.T) {
	h := newTwoHosts(t, 95, "system:serviceaccount:agents:planner")
	capture := testutil.StartCapture(t, h.peer.HostIf)
	canary := "Authorization: Bearer canary-" + testutil.RandomName("")

	testutil.EnterCgroup(t, h.cgA)
	c, err := net.DialTimeout("tcp4", h.dst(), 3*time.Second)
	if err != nil {
		t.Fatalf("planner connect: %v\nA: %s\nB: %s", err, h.agentA.stderr.String(), h.agentB.stderr.String())
	}
	if got, err := roundTrip(c, canary); err != nil || got != canary {
		t.Fatalf("through the tunnel: %q, %v\nA: %s\nB: %s", got, err, h.agentA.stderr.String(), h.agentB.stderr.String())
	}
	c.Close()

	// Many concurrent streams over the pooled tunnel, checksummed.
	const streams = 300
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp4", h.dst(), 10*time.Second)
			if err != nil {
				failed.Add(1)
				return
			}
			defer c.Close()
			payload := make([]byte, 32<<10)
			_, _ = rand.Read(payload)
			want := sha256.Sum256(payload)
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			go func() { _, _ = c.Write(payload) }()
			got := make([]byte, len(payload))
			if _, err := io.ReadFull(c, got); err != nil || sha256.Sum256(got) != want {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d concurrent tunnelled connections failed", n, streams)
	}

	// An unlisted target (port 9090 is in A's rule, not a service on B).
	if c, err := net.DialTimeout("tcp4", fmt.Sprintf("%s:9090", h.peer.RemoteIP), 3*time.Second); err == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		n, rerr := c.Read(make([]byte, 1))
		if n != 0 || rerr == nil {
			t.Errorf("unlisted target: read %d, %v: want the connection closed", n, rerr)
		}
		c.Close()
	}

	// Plaintext from host A (outside the planner cgroup) straight to the
	// executor port on B: dropped by B's ingress program.
	testutil.MoveTo(t, filepath.Dir(h.cgA))
	if c, err := net.DialTimeout("tcp4", h.dst(), 700*time.Millisecond); err == nil {
		c.Close()
		t.Error("plaintext to the executor port from off-host must be dropped")
	}
	testutil.MoveTo(t, h.cgA)

	time.Sleep(300 * time.Millisecond)
	if syns, leaks := capture.Report(tunnelPort, []byte("canary-")); leaks != 0 || syns == 0 {
		t.Errorf("wire: %d frames with the canary, %d SYNs to the tunnel port", leaks, syns)
	}
	if h.plainSeen.Load() != 0 {
		t.Errorf("the executor saw %d connections not from agent B", h.plainSeen.Load())
	}

	evA := readEvents(t, h.auditA)
	evB := waitEvents(t, h.auditB, func(evs []map[string]any) bool {
		return len(having(evs, "event", "ingress", "verdict", "DENIED")) > 0 && len(having(evs, "verdict", "REFUSED")) > 0
	})
	ups := having(evB, "event", "session_start", "verdict", "UPGRADED", "service", "executor")
	if len(ups) < streams+1 {
		t.Errorf("B audited %d upgraded streams, want %d", len(ups), streams+1)
	} else if id, _ := ups[0]["identity"].(map[string]any); id["subject"] != "system:serviceaccount:agents:planner" || !strings.Contains(fmt.Sprint(id["source"]), "pid=") {
		t.Errorf("B's identity = %v", id)
	}
	if a := having(evA, "event", "session_start", "verdict", "UPGRADED"); len(a) == 0 {
		t.Error("A audited no upgraded session")
	} else if id, _ := a[0]["identity"].(map[string]any); id["subject"] != "system:serviceaccount:agents:planner" {
		t.Errorf("A's identity = %v", id)
	} else if tlsInfo, _ := a[0]["tls"].(map[string]any); tlsInfo["version"] != "TLS 1.3" || !strings.Contains(fmt.Sprint(tlsInfo["peer_subject"]), "executor-host") {
		t.Errorf("A's view of the peer agent: %v", tlsInfo)
	}
	if r := having(evB, "verdict", "REFUSED"); len(r) == 0 || !strings.Contains(fmt.Sprint(r[0]["reason"]), "no local service for port 9090") {
		t.Errorf("unlisted target on B: %v", r)
	}
	if d := having(evB, "event", "ingress", "verdict", "DENIED"); len(d) == 0 || !strings.HasPrefix(fmt.Sprint(d[0]["source"]), h.peer.HostIP.String()) {
		t.Errorf("ingress drop on B: %v", d)
	}
}

// TestTunnelWrongSubjectRefused: a valid token for another workload is
// refused by B's allow policy; the client connection fails, nothing reaches
// the executor, both sides audit it.
func TestTunnelWrongSubjectRefused(t *testing.T) {
	h := newTwoHosts(t, 96, "system:serviceaccount:other:intruder")
	testutil.EnterCgroup(t, h.cgA)
	c, err := net.DialTimeout("tcp4", h.dst(), 3*time.Second)
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte("hello"))
		n, rerr := c.Read(make([]byte, 8))
		if n != 0 || rerr == nil {
			t.Fatalf("read %d, %v: want the connection closed", n, rerr)
		}
		c.Close()
	}
	evB := waitEvents(t, h.auditB, func(evs []map[string]any) bool { return len(having(evs, "verdict", "REFUSED")) > 0 })
	r := having(evB, "verdict", "REFUSED")
	if len(r) == 0 || !strings.Contains(fmt.Sprint(r[0]["reason"]), "system:serviceaccount:other:intruder") {
		t.Fatalf("B: %v", evB)
	}
	evA := waitEvents(t, h.auditA, func(evs []map[string]any) bool { return len(having(evs, "verdict", "ERROR")) > 0 })
	if e := having(evA, "verdict", "ERROR"); len(e) == 0 || !strings.HasPrefix(fmt.Sprint(e[0]["reason"]), "tunnel_refused") {
		t.Fatalf("A: %v", evA)
	}
}

// TestTunnelKill9EitherAgent (T10): with either agent killed, the planner's
// connect fails and no plaintext crosses; a restarted agent B is reached
// again by A's pool.
func TestTunnelKill9EitherAgent(t *testing.T) {
	h := newTwoHosts(t, 97, "system:serviceaccount:agents:planner")
	capture := testutil.StartCapture(t, h.peer.HostIf)
	testutil.EnterCgroup(t, h.cgA)
	talk := func() error {
		c, err := net.DialTimeout("tcp4", h.dst(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		got, err := roundTrip(c, "canary-kill")
		if err == nil && got != "canary-kill" {
			err = errors.New("echo mismatch")
		}
		return err
	}
	must(t, talk())

	must(t, h.agentB.cmd.Process.Signal(syscall.SIGKILL))
	_ = h.agentB.cmd.Wait()
	if err := talk(); err == nil {
		t.Fatal("with agent B killed the connection must fail")
	}
	h.startB(t)
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for err = talk(); err != nil && time.Now().Before(deadline); err = talk() {
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("after B restarted: %v", err)
	}

	must(t, h.agentA.cmd.Process.Signal(syscall.SIGKILL))
	_ = h.agentA.cmd.Wait()
	if err := talk(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("with agent A killed: %v, want ECONNREFUSED", err)
	}
	time.Sleep(200 * time.Millisecond)
	if syns, leaks := capture.Report(execPort, []byte("canary-")); syns != 0 || leaks != 0 {
		t.Fatalf("wire: %d SYNs to the executor port, %d frames with the canary", syns, leaks)
	}
	if h.plainSeen.Load() != 0 {
		t.Fatalf("executor saw %d off-host connections", h.plainSeen.Load())
	}
}

func waitEvents(t *testing.T, path string, ok func([]map[string]any) bool) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs := readEvents(t, path)
		if ok(evs) || time.Now().After(deadline) {
			return evs
		}
		time.Sleep(50 * time.Millisecond)
	}
}
