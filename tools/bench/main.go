// Command bench measures what intransit costs on this machine, in one run:
//
//	(a) direct:  client ──TLS 1.3──► TLS server                  (the client speaks TLS itself)
//	(b) proxied: client ──plain──► intransit agent ──TLS 1.3──► same TLS server
//
// Scenarios follow shared/bench (tput, pingpong, connrate, idle); see
// tools/bench/README.md. Needs root (the agent attaches BPF programs).
//
//	go run ./tools/bench [-bin bin/intransit] [-rounds 3] [-quick]
//	bench server -addr 127.0.0.1:0 -cert F -key F   (internal: the TLS server subprocess)
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/intransit/intransit/pkg/redirect"
)

// params are the scenario sizes; -quick shrinks them.
type params struct {
	rounds     int
	tputBytes  int64
	chunk      int
	rrWarm     int
	rrN        int
	conc       int
	connDur    time.Duration
	idleN      int
	idleHold   time.Duration
	tputBound  time.Duration
	rrBound    time.Duration
	connBudget int
	only       map[string]bool // scenarios to run
	variants   map[string]bool // -mode tunnel: variants to run
	record     bool            // -mode record: (a) record off vs (b) record full
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "server" {
		runServer(os.Args[2:])
		return
	}
	bin := flag.String("bin", "bin/intransit", "intransit binary to run as the agent")
	mode := flag.String("mode", "tls", "tls: (a) client speaks TLS vs (b) plaintext client → agent → TLS server; tunnel: (a) direct plaintext vs (b) plaintext → agent A ═tunnel═ agent B → plaintext sink, (c) the same without pooling; record: (a) record: off vs (b) record: full, both through the agent")
	quick := flag.Bool("quick", false, "smoke run: 64 MiB tput, 2000 round trips, 1 s connrate, 100 idle conns, 1 round")
	var p params
	flag.IntVar(&p.rounds, "rounds", 3, "interleaved rounds")
	flag.Int64Var(&p.tputBytes, "bytes", 1<<30, "tput: bytes pushed over one stream")
	flag.IntVar(&p.chunk, "chunk", 256<<10, "tput: write size")
	flag.IntVar(&p.rrWarm, "rr-warm", 1000, "pingpong: warm-up round trips")
	flag.IntVar(&p.rrN, "rr", 20000, "pingpong: measured 1 KiB round trips")
	flag.IntVar(&p.conc, "c", 32, "connrate: concurrent workers")
	flag.DurationVar(&p.connDur, "conn-dur", 5*time.Second, "connrate: duration")
	flag.IntVar(&p.idleN, "idle", 1000, "idle: connections held open")
	flag.DurationVar(&p.idleHold, "idle-hold", 3*time.Second, "idle: settle time before sampling RSS")
	only := flag.String("only", "tput,rr,conn,idle", "scenarios to run (comma-separated)")
	keep := flag.Bool("keep", false, "leave the work dir (configs, agent logs, audit files) in place")
	variants := flag.String("variants", "a,b,c", "-mode tunnel: variants to run (comma-separated; useful under a profiler)")
	flag.Parse()
	p.only = map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		switch s = strings.TrimSpace(s); s {
		case "tput", "rr", "conn", "idle":
			p.only[s] = true
		default:
			fmt.Fprintf(os.Stderr, "bench: -only: unknown scenario %q (tput, rr, conn, idle)\n", s)
			os.Exit(2)
		}
	}
	p.tputBound, p.rrBound, p.connBudget = 40*time.Second, 30*time.Second, 100000
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quickDefault(set, "rounds", &p.rounds, 1)
		quickDefault(set, "bytes", &p.tputBytes, 64<<20)
		quickDefault(set, "rr-warm", &p.rrWarm, 200)
		quickDefault(set, "rr", &p.rrN, 2000)
		quickDefault(set, "conn-dur", &p.connDur, time.Second)
		quickDefault(set, "idle", &p.idleN, 100)
		quickDefault(set, "idle-hold", &p.idleHold, time.Second)
	}
	if p.rounds < 1 || p.tputBytes < 1 || p.chunk < 1 || p.rrWarm < 0 || p.rrN < 1 || p.conc < 1 || p.connDur <= 0 || p.idleN < 1 {
		fmt.Fprintln(os.Stderr, "bench: -rounds, -bytes, -chunk, -rr, -c, -conn-dur and -idle must be positive")
		os.Exit(2)
	}
	if *mode != "tls" && *mode != "tunnel" && *mode != "record" {
		fmt.Fprintf(os.Stderr, "bench: -mode: unknown mode %q (tls, tunnel, record)\n", *mode)
		os.Exit(2)
	}
	p.record = *mode == "record"
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (the agent attaches BPF programs to a cgroup)")
		os.Exit(2)
	}
	b := &bench{p: p, keep: *keep}
	if *mode == "tunnel" {
		p.variants = map[string]bool{}
		for _, v := range strings.Split(*variants, ",") {
			switch v = strings.TrimSpace(v); v {
			case "a", "b", "c":
				p.variants[v] = true
			default:
				fmt.Fprintf(os.Stderr, "bench: -variants: unknown variant %q (a, b, c)\n", v)
				os.Exit(2)
			}
		}
		b.p = p
		runTunnel(b, *bin)
		return
	}
	go b.onSignal()
	defer func() {
		if r := recover(); r != nil {
			b.cleanup()
			panic(r)
		}
	}()
	if err := b.setup(*bin); err != nil {
		b.die("setup: %v", err)
	}
	load0 := loadAvg()
	res := b.run()
	b.cleanup()
	printReport(os.Stdout, p, res, b.agentBin, load0)
}

func quickDefault[T any](set map[string]bool, name string, p *T, v T) {
	if !set[name] {
		*p = v
	}
}

// bench holds everything that must be undone on exit.
type bench struct {
	p        params
	keep     bool // -keep: leave tmp
	agentBin string
	tmp      string
	certs    certFiles

	origCgroup string // where this process came from (cgroup2 path)
	origFD     int    // open directory of origCgroup, for CLONE_INTO_CGROUP
	cgroup     string // throwaway child of the cgroup2 root, this process runs in it
	entered    bool
	pinPath    string
	cfgPath    string
	metrics    string // host:port of /readyz

	server      *exec.Cmd
	plainServer bool           // -mode tunnel: the server is a plaintext sink
	serverIn    io.WriteCloser // the server exits when this closes
	serverAddr  string
	dummyPort   int // protected port: nothing listens, connects are redirected
	recPort     int // -mode record: protected port of the record: full rule

	mu      sync.Mutex
	agent   *exec.Cmd
	agentCh chan error
	stopped bool
	once    sync.Once
}

func (b *bench) die(format string, args ...any) { die(b.cleanup, format, args...) }

func (b *bench) onSignal() { cleanupOnSignal(b.cleanup) }

// die cleans up and exits: the bench must never leave agents, pins or
// cgroups behind.
func die(cleanup func(), format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	cleanup()
	os.Exit(1)
}

// cleanupOnSignal waits for Ctrl-C or a stop signal, cleans up and exits.
func cleanupOnSignal(cleanup func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	s := <-ch
	fmt.Fprintf(os.Stderr, "\nbench: %v: cleaning up\n", s)
	cleanup()
	os.Exit(130)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func randomSuffix() string {
	r := make([]byte, 4)
	_, _ = rand.Read(r)
	return hex.EncodeToString(r)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (b *bench) setup(bin string) error {
	var err error
	if b.agentBin, err = filepath.Abs(bin); err != nil {
		return err
	}
	if _, err := os.Stat(b.agentBin); err != nil {
		return fmt.Errorf("agent binary: %w (run make build, or pass -bin)", err)
	}
	root, err := b.prepare(false)
	if err != nil {
		return err
	}
	if err := b.startServer(); err != nil {
		return err
	}

	suffix := randomSuffix()
	b.cgroup = filepath.Join(root, "intransit-bench-"+suffix)
	if err := os.Mkdir(b.cgroup, 0o755); err != nil {
		b.cgroup = ""
		return fmt.Errorf("create cgroup: %w", err)
	}
	b.pinPath = "/sys/fs/bpf/intransit-bench-" + suffix
	ports := make([]int, 4)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return err
		}
	}
	proxyPort, metricsPort := ports[0], ports[1]
	b.dummyPort, b.recPort = ports[2], ports[3]
	b.metrics = fmt.Sprintf("127.0.0.1:%d", metricsPort)
	_, serverPort, _ := net.SplitHostPort(b.serverAddr)
	cfg := fmt.Sprintf(`# written by tools/bench
cgroup: %s
bpf: {pinPath: %s}
proxy: {port: %d}
audit: {file: %s}
metrics: {listen: %s}
api: {socket: %s}
rules:
  - name: bench
    ports: [%d]
    destinations: [127.0.0.1/32]
    mode: enforce
    upstream: {tls: {port: %s, caFile: %s}}
`, b.cgroup, b.pinPath, proxyPort, filepath.Join(b.tmp, "audit.jsonl"), b.metrics,
		filepath.Join(b.tmp, "api.sock"), b.dummyPort, serverPort, b.certs.ca)
	if b.p.record {
		// Same upstream, recorded in full (redaction is always on); caps
		// large enough that the tput stream is recorded to the end.
		cfg += fmt.Sprintf(`  - name: bench-rec
    ports: [%d]
    destinations: [127.0.0.1/32]
    mode: enforce
    record: full
    upstream: {tls: {port: %s, caFile: %s}}
recordings: {dir: %s, maxSessionSize: 4GiB, maxTotalSize: 6GiB}
`, b.recPort, serverPort, b.certs.ca, filepath.Join(b.tmp, "recordings"))
	}
	b.cfgPath = filepath.Join(b.tmp, "intransit.yaml")
	if err := os.WriteFile(b.cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	// From here on every connect of this process passes the agent's
	// programs; the agent and the server were (and are) started in the
	// original cgroup, outside.
	if err := os.WriteFile(filepath.Join(b.cgroup, "cgroup.procs"), []byte(fmt.Sprint(os.Getpid())), 0); err != nil {
		return fmt.Errorf("enter cgroup %s: %w", b.cgroup, err)
	}
	b.entered = true
	progress("work dir %s, cgroup %s, pins %s, TLS server %s, protected port %d, proxy port %d",
		b.tmp, b.cgroup, b.pinPath, b.serverAddr, b.dummyPort, proxyPort)
	return nil
}

// prepare is the first part of setup, shared by both modes: RLIMIT_NOFILE,
// the work dir with the certificates (a client certificate for agent A too
// when clientCert), and the original cgroup. It returns the cgroup2 root.
func (b *bench) prepare(clientCert bool) (root string, err error) {
	// 1000 idle connections need ~4000 descriptors across the processes;
	// children inherit the raised limit (Go restores the original soft limit
	// in children only while the program has not set one itself).
	// Without CAP_SYS_RESOURCE the hard limit cannot be raised: settle for it.
	lim := syscall.Rlimit{Cur: 65536, Max: 65536}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return "", err
		}
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return "", fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
		}
		progress("RLIMIT_NOFILE: hard limit %d cannot be raised to 65536 (no CAP_SYS_RESOURCE); using %d", lim.Max, lim.Cur)
	}
	if b.tmp, err = os.MkdirTemp("", "intransit-bench-"); err != nil {
		return "", err
	}
	if b.certs, err = writeCerts(b.tmp, clientCert); err != nil {
		return "", fmt.Errorf("certificates: %w", err)
	}

	if root, err = redirect.Cgroup2Root(); err != nil {
		return "", err
	}
	if b.origCgroup, err = ownCgroup(root); err != nil {
		return "", err
	}
	if b.origFD, err = syscall.Open(b.origCgroup, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0); err != nil {
		return "", fmt.Errorf("open own cgroup %s: %w", b.origCgroup, err)
	}
	return root, nil
}

// ownCgroup returns this process's cgroup2 directory ("0::/path").
func ownCgroup(root string) (string, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if rel, ok := strings.CutPrefix(l, "0::"); ok {
			return filepath.Join(root, rel), nil
		}
	}
	return "", errors.New("no cgroup2 entry in /proc/self/cgroup")
}

// child returns a command that starts in the original cgroup (not the
// throwaway one this process may be in) and in its own process group, so a
// Ctrl-C reaches only this process, which then shuts everything down in order.
func (b *bench) child(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:     true,
		UseCgroupFD: true,
		CgroupFD:    b.origFD,
		Pdeathsig:   syscall.SIGTERM,
	}
	return cmd
}

func (b *bench) startServer() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"server", "-addr", "127.0.0.1:0", "-cert", b.certs.serverCert, "-key", b.certs.serverKey}
	if b.plainServer {
		args = []string{"server", "-addr", "127.0.0.1:0", "-plain"}
	}
	cmd := b.child(self, args...)
	cmd.Stderr = os.Stderr
	if b.serverIn, err = cmd.StdinPipe(); err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start TLS server: %w", err)
	}
	b.server = cmd
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTEN ")
	if err != nil || !ok {
		return fmt.Errorf("TLS server did not report its address (%q, %v)", line, err)
	}
	b.serverAddr = addr
	return nil
}

// startAgent starts a fresh agent and waits for /readyz.
func (b *bench) startAgent() error {
	logf, err := os.OpenFile(filepath.Join(b.tmp, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := b.child(b.agentBin, "agent", "--config", b.cfgPath, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return errors.New("shutting down")
	}
	if err := cmd.Start(); err != nil {
		b.mu.Unlock()
		return fmt.Errorf("start agent: %w", err)
	}
	ch := make(chan error, 1)
	go func() { ch <- cmd.Wait() }()
	b.agent, b.agentCh = cmd, ch
	b.mu.Unlock()

	return waitReady("agent", b.metrics, ch, b.agentLog)
}

// waitReady polls an agent's /readyz until it answers 200, the agent exits
// (ch) or 15 s pass; errors carry the tail of its log.
func waitReady(name, metrics string, ch chan error, logTail func() string) error {
	cl := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-ch:
			ch <- err
			return fmt.Errorf("%s exited before ready: %v\n%s", name, err, logTail())
		default:
		}
		if resp, err := cl.Get("http://" + metrics + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 15s\n%s", name, logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *bench) agentPID() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.agent == nil {
		return 0
	}
	return b.agent.Process.Pid
}

func (b *bench) agentLog() string {
	data, _ := os.ReadFile(filepath.Join(b.tmp, "agent.log"))
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return "agent log (last lines):\n" + strings.Join(lines, "\n")
}

// stopAgent terminates the agent (TERM, then KILL after 15 s). Its pinned
// programs stay attached, so until the next start connects to the protected
// port are refused, as in production.
func (b *bench) stopAgent() {
	b.mu.Lock()
	cmd, ch := b.agent, b.agentCh
	b.agent = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ch:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-ch
	}
}

// cleanup undoes everything, once, whatever state setup reached: agent,
// pins, this process's cgroup, the cgroup, the TLS server, the work dir.
func (b *bench) cleanup() {
	b.once.Do(func() {
		b.mu.Lock()
		b.stopped = true
		b.mu.Unlock()
		b.stopAgent()
		if b.entered {
			if err := os.WriteFile(filepath.Join(b.origCgroup, "cgroup.procs"), []byte(fmt.Sprint(os.Getpid())), 0); err != nil {
				fmt.Fprintf(os.Stderr, "bench: move back to %s: %v\n", b.origCgroup, err)
			}
		}
		if b.pinPath != "" {
			if out, err := b.child(b.agentBin, "uninstall", "--pin-path", b.pinPath).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "bench: intransit uninstall --pin-path %s: %v\n%s", b.pinPath, err, out)
			}
		}
		if b.cgroup != "" {
			for i := 0; ; i++ {
				err := os.Remove(b.cgroup)
				if err == nil || os.IsNotExist(err) {
					break
				}
				if i == 100 {
					fmt.Fprintf(os.Stderr, "bench: remove cgroup %s: %v\n", b.cgroup, err)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		if b.server != nil {
			_ = b.serverIn.Close()
			_ = b.server.Process.Signal(syscall.SIGTERM)
			_, _ = b.server.Process.Wait()
		}
		if b.origFD > 0 {
			_ = syscall.Close(b.origFD)
		}
		if b.tmp != "" && b.keep {
			fmt.Fprintf(os.Stderr, "bench: -keep: work dir %s left in place\n", b.tmp)
		} else if b.tmp != "" {
			_ = os.RemoveAll(b.tmp)
		}
	})
}
