package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/intransit/intransit/internal/testutil"
)

// simPod is a "pod" on the simulated node: its own network namespace behind
// a veth pair (with a default route to the node) and its own cgroup below
// the agent's.
type simPod struct {
	ns     *testutil.PeerNS
	cgroup string
}

func newSimPod(t *testing.T, subnet byte, cgroup string) *simPod {
	t.Helper()
	ns := testutil.NewPeerNS(t, subnet)
	h, err := netlink.NewHandleAt(ns.NS)
	must(t, err)
	defer h.Close()
	must(t, h.RouteAdd(&netlink.Route{Gw: ns.HostIP}))
	must(t, os.MkdirAll(cgroup, 0o755))
	// Runs before the agent's cgroup is removed (cleanups run last first).
	t.Cleanup(func() {
		_ = os.Remove(cgroup)
		_ = os.Remove(filepath.Dir(cgroup))
	})
	return &simPod{ns: ns, cgroup: cgroup}
}

// exchange runs a client process in the pod (its netns and cgroup) that
// sends msg to addr and returns the reply (the same length is read back).
func (p *simPod) exchange(t *testing.T, addr, msg string) (string, error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	nsf, err := p.ns.NSFile()
	must(t, err)
	defer nsf.Close()
	cgfd, err := unix.Open(p.cgroup, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	must(t, err)
	defer unix.Close(cgfd)
	script := fmt.Sprintf(`exec 5<>/dev/tcp/%s/%s || exit 7; printf '%%s' '%s' >&5; timeout 3 head -c %d <&5`, host, port, msg, len(msg))
	cmd := exec.Command("nsenter", "--net=/proc/self/fd/3", "bash", "-c", script)
	cmd.ExtraFiles = []*os.File{nsf}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgfd}
	out, err := cmd.Output()
	return string(out), err
}

// TestWorkloadSelectorsOnPods: two pods on one node, one enforced and one
// audited by workload selector on the same port; a pod added while the
// agent runs is covered within a second; a pod dialling the agent's port
// directly is refused.
func TestWorkloadSelectorsOnPods(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Fatalf("nsenter (util-linux) is needed: %v", err)
	}
	nodeA := testutil.NewPeerNS(t, 61) // pod a1's veth: the node address pods reach
	p := newPKI(t)
	cert := p.ca.Issue(t, p.dir, testutil.Leaf{CommonName: "node-service", IPs: []net.IP{nodeA.HostIP}})
	tlsSrv := startTLSServer(t, "tcp4", "0.0.0.0:0", cert.TLS, echo)
	plain, err := net.Listen("tcp4", "0.0.0.0:0")
	must(t, err)
	t.Cleanup(func() { plain.Close() })
	plainHits := make(chan string, 10)
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			plainHits <- c.RemoteAddr().String()
			go echo(c)
		}
	}()
	port := plain.Addr().(*net.TCPAddr).Port
	r := startAgent(t, agentOpts{podAddr: nodeA.HostIP.String(), rules: fmt.Sprintf(`  - name: pods-enforce
    ports: [%d]
    mode: enforce
    workloads: [{cgroup: "/intransit-test-*/pods/a*"}]
    upstream: {tls: {port: %d, caFile: %s}}
  - name: pods-audit
    ports: [%d]
    mode: audit
    workloads: [{cgroup: "/intransit-test-*/pods/b"}]
`, port, tlsSrv.port, p.ca.File, port)})
	dst := fmt.Sprintf("%s:%d", nodeA.HostIP, port)

	// Pods created while the agent runs: covered within a second.
	podA := &simPod{ns: nodeA, cgroup: filepath.Join(r.cgroup, "pods", "a1")}
	must(t, os.MkdirAll(podA.cgroup, 0o755))
	t.Cleanup(func() {
		_ = os.Remove(podA.cgroup)
		_ = os.Remove(filepath.Dir(podA.cgroup))
	})
	h, err := netlink.NewHandleAt(nodeA.NS)
	must(t, err)
	must(t, h.RouteAdd(&netlink.Route{Gw: nodeA.HostIP}))
	h.Close()
	podB := newSimPod(t, 62, filepath.Join(r.cgroup, "pods", "b"))
	created := time.Now()
	for {
		before := tlsSrv.accepted.Load()
		got, err := podA.exchange(t, dst, "hello-from-a")
		if err == nil && got == "hello-from-a" && tlsSrv.accepted.Load() == before+1 {
			break
		}
		if time.Since(created) > time.Second {
			t.Fatalf("pod a not upgraded within 1s of its cgroup appearing (reply %q, %v)", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("pod a covered %v after its cgroup appeared", time.Since(created).Round(time.Millisecond))
	// Drain the plaintext hits of attempts made before the pod was covered.
	for len(plainHits) > 0 {
		<-plainHits
	}

	// Pod b: audited, so its connect passes in plaintext (and is reported).
	before := tlsSrv.accepted.Load()
	if got, err := podB.exchange(t, dst, "hello-from-b"); err != nil || got != "hello-from-b" {
		t.Fatalf("pod b: %q, %v", got, err)
	}
	select {
	case from := <-plainHits:
		if !strings.HasPrefix(from, podB.ns.RemoteIP.String()+":") {
			t.Errorf("plaintext server saw %s, want pod b (%s)", from, podB.ns.RemoteIP)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("pod b's plaintext connect did not reach the server")
	}
	if tlsSrv.accepted.Load() != before {
		t.Error("pod b was upgraded: its rule is audit")
	}
	evs := r.events(t, countAtLeast(1, "event", "connect", "verdict", "AUDIT", "rule", "pods-audit"))
	if len(having(evs, "event", "connect", "verdict", "AUDIT", "rule", "pods-audit")) == 0 {
		t.Fatalf("no AUDIT event for pod b: %v", evs)
	}
	var sawA bool
	for _, e := range having(evs, "event", "session_start", "verdict", "UPGRADED", "rule", "pods-enforce") {
		pr, _ := e["process"].(map[string]any)
		if strings.HasSuffix(fmt.Sprint(pr["cgroup_path"]), "/pods/a1") {
			sawA = true
		}
	}
	if !sawA {
		t.Errorf("no UPGRADED session_start from pods/a1: %v", evs)
	}

	// A pod dialling the agent's port directly is refused (no redirect
	// entry): nothing is forwarded anywhere.
	proxy := fmt.Sprintf("%s:%d", nodeA.HostIP, r.cfg.Proxy.Port)
	before = tlsSrv.accepted.Load()
	if got, err := podB.exchange(t, proxy, "direct"); err == nil && got == "direct" {
		t.Fatalf("direct dial to the agent port was served: %q", got)
	}
	if tlsSrv.accepted.Load() != before {
		t.Error("a direct dial reached the upstream")
	}
	r.events(t, countAtLeast(1, "verdict", "REFUSED"))
	if len(having(r.events(t, nil), "verdict", "REFUSED")) == 0 {
		t.Error("the direct dial was not audited as REFUSED")
	}
}

// TestPodNamespaceDiscovered: without proxy.podAddress, the agent finds a
// pod's network namespace from the processes in its cgroup, listens on the
// pod's gateway (a host address) and sends that namespace's enforced
// connects there; the pod's connects are upgraded.
func TestPodNamespaceDiscovered(t *testing.T) {
	testutil.RequireRoot(t)
	p := newPKI(t)
	srv := startTLSServer(t, "tcp4", "0.0.0.0:0", p.server.TLS, echo)
	port := freePort(t)
	r := startAgent(t, agentOpts{rules: enforceRule("pods", port, srv.port, ", serverName: executor.test, caFile: "+p.ca.File)})
	pod := newSimPod(t, 63, filepath.Join(r.cgroup, "pods", "c"))

	// The pod's long-lived process, as its pause container would be.
	nsf, err := pod.ns.NSFile()
	must(t, err)
	defer nsf.Close()
	cgfd, err := unix.Open(pod.cgroup, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	must(t, err)
	defer unix.Close(cgfd)
	holder := exec.Command("nsenter", "--net=/proc/self/fd/3", "sleep", "30")
	holder.ExtraFiles = []*os.File{nsf}
	holder.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgfd}
	must(t, holder.Start())
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })

	// Within a second the agent listens on the pod's gateway.
	want := fmt.Sprintf("%s:%d", pod.ns.HostIP, r.cfg.Proxy.Port)
	deadline := time.Now().Add(2 * time.Second)
	for {
		found := false
		for _, a := range r.agent.Status().Proxy {
			found = found || a == want
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy addresses %v lack the pod gateway %s", r.agent.Status().Proxy, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	dst := fmt.Sprintf("%s:%d", pod.ns.HostIP, port)
	before := srv.accepted.Load()
	if got, err := pod.exchange(t, dst, "hello-from-c"); err != nil || got != "hello-from-c" {
		t.Fatalf("pod c: %q, %v", got, err)
	}
	if srv.accepted.Load() != before+1 {
		t.Fatal("pod c's connect was not upgraded")
	}
}
