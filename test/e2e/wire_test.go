package e2e

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/intransit/intransit/internal/testutil"
	"github.com/intransit/intransit/pkg/redirect"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// agentBinary builds cmd/intransit once per test run.
func agentBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "intransit-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		// Readable by all: a test runs it as an unprivileged user too.
		if err := os.Chmod(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "intransit")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/intransit/intransit/cmd/intransit").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type agentProc struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
}

func startAgentProc(t *testing.T, bin, cfg, metrics string) *agentProc {
	t.Helper()
	return startAgentCmd(t, exec.Command(bin, "agent", "--config", cfg), metrics)
}

// startAgentCmd starts an agent command and waits for /readyz on metrics.
func startAgentCmd(t *testing.T, cmd *exec.Cmd, metrics string) *agentProc {
	t.Helper()
	p := &agentProc{cmd: cmd}
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + metrics + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready: %v\n%s", err, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKill9FailsClosedOnTheWire (threats T10, T3): a client in the cgroup
// talks to an executor in another namespace. With the agent up, only TLS
// crosses the veth. After kill -9, enforced connects are refused and nothing
// reaches the plaintext port; a restart reuses the pinned links (no second
// attachment) and serves again; uninstall detaches everything.
func TestKill9FailsClosedOnTheWire(t *testing.T) {
	testutil.RequireRoot(t)
	bin := agentBinary(t)
	peer := testutil.NewPeerNS(t, 91)
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "wire")
	cert := ca.Issue(t, dir, testutil.Leaf{CommonName: "executor", IPs: []net.IP{peer.RemoteIP}})

	// The executor: a plaintext port that must see nothing, and its TLS port.
	var plainAccepts atomic.Int64
	plain := peer.Listen(t, 8080)
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			plainAccepts.Add(1)
			c.Close()
		}
	}()
	tlsLn := peer.Listen(t, 8443)
	go serveTLSEcho(tlsLn, cert)

	cg := testutil.NewCgroup(t)
	pin := testutil.PinPath(t)
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := filepath.Join(dir, "intransit.yaml")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`cgroup: %s
bpf: {pinPath: %s}
proxy: {port: %d}
audit: {file: %s}
metrics: {listen: %s}
api: {socket: %s}
rules:
  - name: executor
    ports: [8080]
    destinations: [%s/32]
    mode: enforce
    upstream: {tls: {port: 8443, caFile: %s}}
`, cg, pin, freePort(t), filepath.Join(dir, "audit.jsonl"), metrics, filepath.Join(dir, "api.sock"), peer.RemoteIP, ca.File)), 0o600))

	cap := testutil.StartCapture(t, peer.HostIf)
	agent := startAgentProc(t, bin, cfg, metrics)
	testutil.EnterCgroup(t, cg)
	dst := fmt.Sprintf("%s:8080", peer.RemoteIP)
	canary := "Authorization: Bearer canary-" + testutil.RandomName("")
	talk := func() error {
		c, err := net.DialTimeout("tcp4", dst, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		got, err := roundTrip(c, canary)
		if err == nil && got != canary {
			err = fmt.Errorf("echo mismatch: %q", got)
		}
		return err
	}
	if err := talk(); err != nil {
		t.Fatalf("through the agent: %v\n%s", err, agent.stderr.String())
	}

	// kill -9: no chance to clean up. The pinned programs stay.
	must(t, agent.cmd.Process.Signal(syscall.SIGKILL))
	_ = agent.cmd.Wait()
	for i := range 5 {
		err := talk()
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connect %d with the agent killed: %v, want ECONNREFUSED (fail closed)", i, err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	syns, leaks := cap.Report(8080, []byte("canary-"))
	if syns != 0 || leaks != 0 || plainAccepts.Load() != 0 {
		t.Fatalf("on the wire: %d SYNs to :8080, %d frames with the canary, %d plaintext accepts; want none", syns, leaks, plainAccepts.Load())
	}
	tlsSyns, _ := cap.Report(8443, nil)
	if tlsSyns != 1 {
		t.Errorf("want exactly 1 TLS connection on the wire (before the kill), saw %d SYNs to :8443", tlsSyns)
	}

	// Restart: same pins, links updated in place.
	agent2 := startAgentProc(t, bin, cfg, metrics)
	if err := talk(); err != nil {
		t.Fatalf("after restart: %v\n%s", err, agent2.stderr.String())
	}
	counts, err := redirect.AttachedCounts(cg)
	must(t, err)
	for name, n := range counts {
		if n != 1 {
			t.Errorf("%s: %d programs attached to the cgroup after a restart, want 1", name, n)
		}
	}
	if out, err := exec.Command(bin, "status", "--config", cfg).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("programs (5 attached)")) {
		t.Errorf("intransit status: %v\n%s", err, out)
	}

	// Graceful stop, then uninstall: interception is gone.
	must(t, agent2.cmd.Process.Signal(syscall.SIGTERM))
	_ = agent2.cmd.Wait()
	if out, err := exec.Command(bin, "uninstall", "--config", cfg).CombinedOutput(); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	counts, err = redirect.AttachedCounts(cg)
	must(t, err)
	for name, n := range counts {
		if n != 0 {
			t.Errorf("%s: still %d programs attached after uninstall", name, n)
		}
	}
	c, err := net.DialTimeout("tcp4", dst, 3*time.Second)
	if err != nil {
		t.Fatalf("after uninstall the plaintext port should be reachable again: %v", err)
	}
	c.Close()
	deadline := time.Now().Add(2 * time.Second)
	for plainAccepts.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if plainAccepts.Load() != 1 {
		t.Errorf("plaintext accepts after uninstall = %d, want 1", plainAccepts.Load())
	}
}

func serveTLSEcho(ln net.Listener, cert testutil.Issued) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert.TLS}})
			_, _ = io.Copy(tc, tc)
		}()
	}
}
