package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// -mode tunnel measures the legacy-executor path against plaintext:
//
//	(a) direct:    client ──plain──────────────────────────────────────────────► plaintext sink
//	(b) tunnel:    client ──plain──► agent A ══TLS 1.3, HTTP/2 CONNECT══► agent B ──plain──► the same sink
//	(c) no pool:   the same, one TLS connection per client connection (upstream.tunnel.pooling: false)
//
// Agent A has two rules, one per variant, on two dummy ports; agent B two
// services on those ports forwarding to the sink. See tools/bench/README.md.

// tunnelVariants are the modes of -mode tunnel, in table order.
var tunnelVariants = []string{"a", "b", "c"}

// agentProc is one intransit agent subprocess.
type agentProc struct {
	name    string // "A" or "B"
	cfgPath string
	logPath string
	metrics string // host:port of /readyz
	pinPath string

	cmd *exec.Cmd
	ch  chan error
}

// tunnelBench is the tunnel mode's state; bench's fields hold the work dir,
// certificates, the sink (server), this process's cgroup (agent A's) and
// the original one.
type tunnelBench struct {
	*bench
	cgroupB     string // agent B's: empty, so its programs touch nothing
	agents      [2]*agentProc
	sinkPort    int
	tunnelPort  int
	portPooled  int // rule tunnel-pooled: (b)
	portSingle  int // rule tunnel-single: (c)
	cleanupOnce sync.Once
}

func runTunnel(b *bench, bin string) {
	t := &tunnelBench{bench: b}
	go t.onSignal()
	defer func() {
		if r := recover(); r != nil {
			t.cleanup()
			panic(r)
		}
	}()
	if err := t.setup(bin); err != nil {
		t.die("setup: %v", err)
	}
	load0 := loadAvg()
	res := t.run()
	t.cleanup()
	printTunnelReport(os.Stdout, t.p, res, t.agentBin, load0)
}

func (t *tunnelBench) die(format string, args ...any) { die(t.cleanup, format, args...) }

func (t *tunnelBench) onSignal() { cleanupOnSignal(t.cleanup) }

// freePorts returns n distinct free ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	seen := map[int]bool{}
	var ports []int
	for len(ports) < n {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports, nil
}

func (t *tunnelBench) setup(bin string) error {
	var err error
	if t.agentBin, err = filepath.Abs(bin); err != nil {
		return err
	}
	if _, err := os.Stat(t.agentBin); err != nil {
		return fmt.Errorf("agent binary: %w (run make build, or pass -bin)", err)
	}
	root, err := t.prepare(true)
	if err != nil {
		return err
	}
	t.plainServer = true
	if err := t.startServer(); err != nil {
		return err
	}
	_, sp, _ := net.SplitHostPort(t.serverAddr)
	t.sinkPort, _ = strconv.Atoi(sp)

	suffix := randomSuffix()
	t.cgroup = filepath.Join(root, "intransit-bench-"+suffix)
	if err := os.Mkdir(t.cgroup, 0o755); err != nil {
		t.cgroup = ""
		return fmt.Errorf("create cgroup: %w", err)
	}
	t.cgroupB = filepath.Join(root, "intransit-bench-"+suffix+"-b")
	if err := os.Mkdir(t.cgroupB, 0o755); err != nil {
		t.cgroupB = ""
		return fmt.Errorf("create cgroup: %w", err)
	}
	ports, err := freePorts(7)
	if err != nil {
		return err
	}
	proxyA, metricsA, proxyB, metricsB := ports[0], ports[1], ports[2], ports[3]
	t.tunnelPort, t.portPooled, t.portSingle = ports[4], ports[5], ports[6]

	for i, name := range []string{"A", "B"} {
		lower := strings.ToLower(name)
		t.agents[i] = &agentProc{
			name:    name,
			cfgPath: filepath.Join(t.tmp, "agent-"+lower+".yaml"),
			logPath: filepath.Join(t.tmp, "agent-"+lower+".log"),
			metrics: fmt.Sprintf("127.0.0.1:%d", []int{metricsA, metricsB}[i]),
			pinPath: "/sys/fs/bpf/intransit-bench-" + suffix + "-" + lower,
		}
	}
	a, b := t.agents[0], t.agents[1]
	tunnel := fmt.Sprintf("port: %d, caFile: %s, certFile: %s, keyFile: %s", t.tunnelPort, t.certs.ca, t.certs.clientCert, t.certs.clientKey)
	cfgA := fmt.Sprintf(`# written by tools/bench -mode tunnel: agent A, beside the client
cgroup: %s
bpf: {pinPath: %s}
proxy: {port: %d}
audit: {file: %s}
metrics: {listen: %s}
api: {socket: %s}
rules:
  - name: tunnel-pooled
    ports: [%d]
    destinations: [127.0.0.1/32]
    mode: enforce
    upstream: {tunnel: {%s}}
  - name: tunnel-single
    ports: [%d]
    destinations: [127.0.0.1/32]
    mode: enforce
    upstream: {tunnel: {%s, pooling: false}}
`, t.cgroup, a.pinPath, proxyA, filepath.Join(t.tmp, "audit-a.jsonl"), a.metrics, filepath.Join(t.tmp, "api-a.sock"),
		t.portPooled, tunnel, t.portSingle, tunnel)
	svc := func(name string, port int) string {
		return fmt.Sprintf("    - {name: %s, port: %d, forward: 127.0.0.1:%d, mode: audit, allow: [{peerSAN: %q}]}\n", name, port, t.sinkPort, clientSAN)
	}
	cfgB := fmt.Sprintf(`# written by tools/bench -mode tunnel: agent B, beside the plaintext sink
cgroup: %s
bpf: {pinPath: %s}
proxy: {port: %d}
audit: {file: %s}
metrics: {listen: %s}
api: {socket: %s}
inbound:
  listen: 127.0.0.1:%d
  cgroup: %s
  tls: {certFile: %s, keyFile: %s, clientCAFile: %s}
  services:
`, t.cgroupB, b.pinPath, proxyB, filepath.Join(t.tmp, "audit-b.jsonl"), b.metrics, filepath.Join(t.tmp, "api-b.sock"),
		t.tunnelPort, t.cgroupB, t.certs.serverCert, t.certs.serverKey, t.certs.ca) +
		svc("sink-pooled", t.portPooled) + svc("sink-single", t.portSingle)
	for _, w := range []struct{ path, data string }{{a.cfgPath, cfgA}, {b.cfgPath, cfgB}} {
		if err := os.WriteFile(w.path, []byte(w.data), 0o600); err != nil {
			return err
		}
	}
	// From here on every connect of this process passes agent A's programs;
	// the agents and the sink were (and are) started in the original cgroup.
	if err := os.WriteFile(filepath.Join(t.cgroup, "cgroup.procs"), []byte(fmt.Sprint(os.Getpid())), 0); err != nil {
		return fmt.Errorf("enter cgroup %s: %w", t.cgroup, err)
	}
	t.entered = true
	progress("work dir %s, cgroup %s (agent B: %s), pins %s and %s, sink %s, tunnel port %d, protected ports %d (pooled) and %d (no pooling)",
		t.tmp, t.cgroup, t.cgroupB, a.pinPath, b.pinPath, t.serverAddr, t.tunnelPort, t.portPooled, t.portSingle)
	return nil
}

// startAgents starts B, then A, each fresh, and waits for their /readyz.
func (t *tunnelBench) startAgents() error {
	for _, ap := range []*agentProc{t.agents[1], t.agents[0]} {
		if err := t.startAgentProc(ap); err != nil {
			return err
		}
	}
	return nil
}

func (t *tunnelBench) startAgentProc(ap *agentProc) error {
	logf, err := os.OpenFile(ap.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := t.child(t.agentBin, "agent", "--config", ap.cfgPath, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return errors.New("shutting down")
	}
	if err := cmd.Start(); err != nil {
		t.mu.Unlock()
		return fmt.Errorf("start agent %s: %w", ap.name, err)
	}
	ch := make(chan error, 1)
	go func() { ch <- cmd.Wait() }()
	ap.cmd, ap.ch = cmd, ch
	t.mu.Unlock()

	return waitReady("agent "+ap.name, ap.metrics, ch, func() string { return tailLog(ap.logPath) })
}

func tailLog(path string) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return "log " + path + " (last lines):\n" + strings.Join(lines, "\n")
}

// stopAgents terminates A, then B (TERM, then KILL after 15 s). Their
// pinned programs stay attached until the next start, as in production.
func (t *tunnelBench) stopAgents() {
	for _, ap := range t.agents {
		if ap == nil {
			continue
		}
		t.mu.Lock()
		cmd, ch := ap.cmd, ap.ch
		ap.cmd = nil
		t.mu.Unlock()
		if cmd == nil {
			continue
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-ch:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-ch
		}
	}
}

func (t *tunnelBench) pids() (a, b int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.agents[0].cmd; c != nil {
		a = c.Process.Pid
	}
	if c := t.agents[1].cmd; c != nil {
		b = c.Process.Pid
	}
	return a, b
}

// cleanup undoes everything, once: agents, their pins, agent B's cgroup,
// then what bench.cleanup undoes (this process back to its cgroup, agent
// A's cgroup, the sink, the work dir).
func (t *tunnelBench) cleanup() {
	t.cleanupOnce.Do(func() {
		t.mu.Lock()
		t.stopped = true
		t.mu.Unlock()
		t.stopAgents()
		for _, ap := range t.agents {
			if ap == nil {
				continue
			}
			if _, err := os.Stat(ap.pinPath); err != nil {
				continue // never created
			}
			if out, err := t.child(t.agentBin, "uninstall", "--pin-path", ap.pinPath).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "bench: intransit uninstall --pin-path %s: %v\n%s", ap.pinPath, err, out)
			}
		}
		if t.cgroupB != "" {
			if err := os.Remove(t.cgroupB); err != nil && !os.IsNotExist(err) {
				fmt.Fprintf(os.Stderr, "bench: remove cgroup %s: %v\n", t.cgroupB, err)
			}
		}
		t.bench.cleanup()
	})
}

// agentCPU is utime+stime ticks of both agents.
type agentCPU [2]int64

func (t *tunnelBench) cpu() agentCPU {
	a, b := t.pids()
	return agentCPU{cpuTicks(a), cpuTicks(b)}
}

// since returns the ticks of A and B since c0, -1 each when unknown.
func (c0 agentCPU) since(c1 agentCPU) (a, b int64) {
	a, b = -1, -1
	if c0[0] >= 0 && c1[0] >= 0 {
		a = c1[0] - c0[0]
	}
	if c0[1] >= 0 && c1[1] >= 0 {
		b = c1[1] - c0[1]
	}
	return a, b
}

// tunnelConns counts established TCP connections from agent A to agent B's
// tunnel port (the client ends, in /proc/net/tcp).
func (t *tunnelBench) tunnelConns() int {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return -1
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", t.tunnelPort)
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) > 3 && fl[3] == "01" && strings.HasSuffix(fl[2], want) {
			n++
		}
	}
	return n
}

// run measures every round. Each tunnel variant's idle scenario gets a
// fresh pair of agents (RSS growth of a process that already grew its heap
// says little); then a fresh pair serves tput, pingpong and connrate with
// (a), (b) and (c) interleaved, the first variant rotating between rounds.
func (t *tunnelBench) run() *results {
	res := &results{}
	nd := &net.Dialer{Timeout: 5 * time.Second}
	dialTo := func(port int) dialFunc {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		return func() (net.Conn, error) { return nd.Dial("tcp", addr) }
	}
	dials := map[string]dialFunc{"a": dialTo(t.sinkPort), "b": dialTo(t.portPooled), "c": dialTo(t.portSingle)}
	p := t.p
	for round := 1; round <= p.rounds; round++ {
		m := map[string]float64{}
		res.rounds = append(res.rounds, m)
		k := (round - 1) % len(tunnelVariants)
		var order []string
		for _, v := range append(append([]string{}, tunnelVariants[k:]...), tunnelVariants[:k]...) {
			if p.variants[v] {
				order = append(order, v)
			}
		}
		progress("round %d/%d: order %s", round, p.rounds, strings.Join(order, ", "))

		if p.only["idle"] {
			for _, v := range order {
				if v == "a" {
					continue // no agent on the direct path
				}
				if err := t.startAgents(); err != nil {
					t.die("round %d: %v", round, err)
				}
				pa, pb := t.pids()
				tconns := -1
				kib, err := idleRSS(dials[v], p.idleN, p.idleHold, func() { tconns = t.tunnelConns() }, pa, pb)
				if err != nil {
					res.note("round %d (%s) idle: %v", round, v, err)
				} else {
					m[v+".idle"], m[v+".idleA"], m[v+".idleB"] = kib[0]+kib[1], kib[0], kib[1]
					m[v+".tconns"] = float64(tconns)
					progress("  (%s) idle: %.1f KiB/conn (A %.1f + B %.1f), %d TCP connections A→B", v, kib[0]+kib[1], kib[0], kib[1], tconns)
				}
				t.stopAgents()
			}
		}
		if !p.only["tput"] && !p.only["rr"] && !p.only["conn"] {
			continue
		}
		if err := t.startAgents(); err != nil {
			t.die("round %d: %v", round, err)
		}
		pa, pb := t.pids()
		progress("  agents: A pid %d, B pid %d", pa, pb)
		if p.only["tput"] {
			for _, v := range order {
				c0 := t.cpu()
				gbps, _, err := tput(dials[v], p.tputBytes, p.chunk, p.tputBound, 0)
				if err != nil {
					res.note("round %d (%s) tput: %v", round, v, err)
					continue
				}
				m[v+".tput"] = gbps
				cpuS := "-"
				if v != "a" {
					if da, db := c0.since(t.cpu()); da >= 0 && db >= 0 {
						gib := float64(p.tputBytes) / (1 << 30)
						m[v+".tputcpuA"], m[v+".tputcpuB"] = float64(da)/100/gib, float64(db)/100/gib
						m[v+".tputcpu"] = m[v+".tputcpuA"] + m[v+".tputcpuB"]
						cpuS = fmt.Sprintf("%.2f s/GiB (A %.2f + B %.2f)", m[v+".tputcpu"], m[v+".tputcpuA"], m[v+".tputcpuB"])
					}
				}
				progress("  (%s) tput: %.2f Gbit/s, agents CPU %s", v, gbps, cpuS)
			}
		}
		if p.only["rr"] {
			for _, v := range order {
				p50, p99, err := pingpong(dials[v], p.rrWarm, p.rrN, p.rrBound)
				if err != nil {
					res.note("round %d (%s) pingpong: %v", round, v, err)
					continue
				}
				m[v+".p50"], m[v+".p99"] = p50, p99
				progress("  (%s) pingpong: p50 %.0f µs, p99 %.0f µs", v, p50, p99)
			}
		}
		if p.only["conn"] {
			for _, v := range order {
				c0 := t.cpu()
				cr, err := connrate(dials[v], p.conc, p.connDur, p.connBudget, 0)
				if err != nil {
					res.note("round %d (%s) connrate: %v", round, v, err)
					continue
				}
				if cr.errs > 0 {
					res.note("round %d (%s) connrate: %d failed connections (first: %s)", round, v, cr.errs, cr.firstErr)
				}
				m[v+".cps"], m[v+".cp99"] = cr.perSec, cr.p99ms
				cpuS := "-"
				if v != "a" {
					if da, db := c0.since(t.cpu()); da >= 0 && db >= 0 {
						n := float64(cr.n)
						m[v+".conncpuA"], m[v+".conncpuB"] = float64(da)*10/n, float64(db)*10/n
						m[v+".conncpu"] = m[v+".conncpuA"] + m[v+".conncpuB"]
						cpuS = fmt.Sprintf("%.3f ms/conn (A %.3f + B %.3f)", m[v+".conncpu"], m[v+".conncpuA"], m[v+".conncpuB"])
					}
				}
				progress("  (%s) connrate: %.0f conn/s, p99 %.1f ms, agents CPU %s", v, cr.perSec, cr.p99ms, cpuS)
			}
		}
		t.stopAgents()
	}
	t.noteLogs(res)
	return res
}

// noteLogs adds a note per agent whose log (warn level and up, every
// start) has lines: how many, and the most frequent messages.
func (t *tunnelBench) noteLogs(res *results) {
	for _, ap := range t.agents {
		data, err := os.ReadFile(ap.logPath)
		if err != nil || len(strings.TrimSpace(string(data))) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		count := map[string]int{}
		var msgs []string
		for _, l := range lines {
			msg := l
			// slog text: time=... level=... msg="..." key=...
			if i := strings.Index(l, "msg="); i >= 0 {
				msg = l[i:]
				if j := strings.Index(msg, "\" "); j >= 0 && strings.HasPrefix(msg, "msg=\"") {
					msg = msg[:j+1]
				} else if j := strings.IndexByte(msg, ' '); j >= 0 {
					msg = msg[:j]
				}
			}
			if count[msg] == 0 {
				msgs = append(msgs, msg)
			}
			count[msg]++
		}
		var top []string
		for i, m := range msgs {
			if i == 3 {
				top = append(top, "...")
				break
			}
			top = append(top, fmt.Sprintf("%d× %s", count[m], m))
		}
		res.note("agent %s log: %d lines (%s)", ap.name, len(lines), strings.Join(top, "; "))
	}
}
