package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	"github.com/intransit/intransit/pkg/agent"
	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/configwatch"
	"github.com/intransit/intransit/pkg/redirect"
)

// liveEnv is what outlives one agent: files, cgroup, pins, ports.
type liveEnv struct {
	dir, base string
	cm        *testutil.ConfigMap
	cgroup    string
	pin       string
	audit     string
	metrics   string
}

// newLiveEnv writes a main file (proxy extra keys and rules given) and a
// ConfigMap-style drop-in directory.
func newLiveEnv(t *testing.T, proxyExtra, baseRules string, dropIns map[string]string) *liveEnv {
	t.Helper()
	testutil.RequireRoot(t)
	e := &liveEnv{dir: t.TempDir(), cgroup: testutil.NewCgroup(t), pin: testutil.PinPath(t),
		metrics: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	e.audit = filepath.Join(e.dir, "audit.jsonl")
	e.base = filepath.Join(e.dir, "intransit.yaml")
	yaml := fmt.Sprintf(`cgroup: %s
bpf: {pinPath: %s, mapSize: 4096}
proxy: {port: %d, handshakeTimeout: 3s, dialTimeout: 2s%s}
audit: {file: %s}
metrics: {listen: %s}
api: {socket: %s}
rules:
%s`, e.cgroup, e.pin, freePort(t), proxyExtra, e.audit, e.metrics, filepath.Join(e.dir, "api.sock"), baseRules)
	must(t, os.WriteFile(e.base, []byte(yaml), 0o600))
	e.cm = testutil.NewConfigMap(t, filepath.Join(t.TempDir(), "conf.d"), dropIns)
	return e
}

func (e *liveEnv) sources() config.Sources { return config.Sources{Base: e.base, Dir: e.cm.Dir} }

// liveAgent is an in-process agent run the way `intransit agent --config
// F --config-dir D` runs it (cmd/intransit runAgent): the Reloader loads the
// sources, the agent runs, and once it is ready the Reloader watches the
// files; Reload is the SIGHUP path.
type liveAgent struct {
	agent   *agent.Agent
	rl      *configwatch.Reloader
	cancel  context.CancelFunc
	done    chan error
	results chan error // one per reload: nil applied, or why it was refused
	stopped atomic.Bool
}

func (e *liveEnv) start(t *testing.T) *liveAgent {
	t.Helper()
	log := slog.New(slog.NewJSONHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	la := &liveAgent{done: make(chan error, 1), results: make(chan error, 100)}
	la.rl = &configwatch.Reloader{Sources: e.sources(), Logger: log}
	cfg, err := la.rl.Load()
	if err != nil {
		t.Fatal(err)
	}
	if la.agent, err = agent.New(cfg, agent.Options{Logger: log}); err != nil {
		t.Fatal(err)
	}
	la.rl.Apply = la.agent.Reload
	la.rl.After = func(_ *config.Config, err error) { la.results <- err }
	ctx, cancel := context.WithCancel(context.Background())
	la.cancel = cancel
	go func() { la.done <- la.agent.Run(ctx) }()
	t.Cleanup(func() {
		if _, err := la.stop(t); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for la.agent.Ready() != nil {
		select {
		case err := <-la.done:
			la.done <- err
			t.Fatalf("agent exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("agent not ready after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	go la.rl.Watch(ctx, configwatch.Options{}) // the defaults main uses
	return la
}

// stop is SIGTERM: it returns how long Run took to return, and its result.
func (la *liveAgent) stop(t *testing.T) (time.Duration, error) {
	if !la.stopped.CompareAndSwap(false, true) {
		return 0, nil
	}
	start := time.Now()
	la.cancel()
	select {
	case err := <-la.done:
		return time.Since(start), err
	case <-time.After(20 * time.Second):
		t.Error("agent did not stop within 20s")
		return time.Since(start), nil
	}
}

// nextResult waits for the next reload's result.
func (la *liveAgent) nextResult(t *testing.T) error {
	t.Helper()
	select {
	case err := <-la.results:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no reload within 5s")
		return nil
	}
}

// plainServer is the plaintext port a protected rule covers: whatever it
// accepts went around the proxy.
type plainServer struct{ accepts atomic.Int64 }

func startPlainServer(t *testing.T, port int) *plainServer {
	t.Helper()
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	s := &plainServer{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			_, _ = io.WriteString(c, "PLAINTEXT")
			c.Close()
		}
	}()
	return s
}

func ruleYAML(name string, port int, mode string) string {
	return fmt.Sprintf("  - {name: %s, ports: [%d], mode: %s}\n", name, port, mode)
}

// upgraded reports whether a connect to addr is relayed to the TLS echo.
func upgraded(addr string) error {
	c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	got, err := roundTrip(c, "through the proxy")
	if err == nil && got != "through the proxy" {
		err = fmt.Errorf("got %q: not the TLS echo", got)
	}
	return err
}

// TestLiveDropInAddsEnforceRule: a ConfigMap update adding a drop-in with an
// enforce rule is picked up from the file change alone, and within 2s a
// connect to that port is upgraded instead of reaching the plaintext port.
func TestLiveDropInAddsEnforceRule(t *testing.T) {
	p := newPKI(t)
	srv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)
	port := freePort(t)
	plain := startPlainServer(t, port)
	env := newLiveEnv(t, "", ruleYAML("base", freePort(t), "audit"), map[string]string{})
	la := env.start(t)
	testutil.EnterCgroup(t, env.cgroup)
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	if err := upgraded(addr); err == nil || plain.accepts.Load() != 1 {
		t.Fatalf("before the drop-in: %v, %d plaintext accepts; want the plaintext port reached", err, plain.accepts.Load())
	}

	env.cm.Update(map[string]string{"10-exec.yaml": "rules:\n" + enforceRule("exec", port, srv.port, ", caFile: "+p.ca.File)})
	start := time.Now()
	for {
		err := upgraded(addr)
		if err == nil {
			break
		}
		if time.Since(start) > 2*time.Second {
			t.Fatalf("not upgraded 2s after the ConfigMap update: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("upgraded %v after the ConfigMap update", time.Since(start).Round(time.Millisecond))
	if err := la.nextResult(t); err != nil {
		t.Fatalf("reload: %v", err)
	}
	before := plain.accepts.Load()
	for i := range 5 {
		if err := upgraded(addr); err != nil {
			t.Fatalf("connect %d after the reload: %v", i, err)
		}
	}
	if n := plain.accepts.Load() - before; n != 0 {
		t.Errorf("%d connects reached the plaintext port after the reload", n)
	}
	if evs := readEvents(t, env.audit); len(having(evs, "event", "session_start", "rule", "exec", "verdict", "UPGRADED")) < 6 {
		t.Errorf("want 6 UPGRADED session_start events for rule exec, got %v", having(evs, "rule", "exec"))
	}
	select {
	case err := <-la.results:
		t.Errorf("a second reload for one update: %v", err)
	default:
	}
}

// TestLiveReloadUnderLoad: reloads that change another rule's mode (file
// changes and the SIGHUP path) while a long-lived stream carries data both
// ways; the stream is never interrupted and every byte comes back intact.
// Meanwhile new connects to the stream's port keep being upgraded: the rule
// tables are updated in place, with no moment without programs or rules.
func TestLiveReloadUnderLoad(t *testing.T) {
	p := newPKI(t)
	srv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)
	streamPort, otherPort := freePort(t), freePort(t)
	plain := startPlainServer(t, streamPort)
	env := newLiveEnv(t, "", enforceRule("stream", streamPort, srv.port, ", caFile: "+p.ca.File),
		map[string]string{"20-other.yaml": "rules:\n" + ruleYAML("other", otherPort, "audit")})
	la := env.start(t)
	testutil.EnterCgroup(t, env.cgroup)

	c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", streamPort), 2*time.Second)
	must(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	stop := make(chan struct{})
	sentSum, recvSum := sha256.New(), sha256.New()
	var sent, recv atomic.Int64
	var writeErr, readErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 16<<10)
		for {
			select {
			case <-stop:
				writeErr = c.(*net.TCPConn).CloseWrite()
				return
			default:
			}
			_, _ = rand.Read(buf)
			n, err := c.Write(buf)
			sentSum.Write(buf[:n])
			sent.Add(int64(n))
			if err != nil {
				writeErr = err
				return
			}
		}
	})
	wg.Go(func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			recvSum.Write(buf[:n])
			recv.Add(int64(n))
			if err == io.EOF {
				return
			}
			if err != nil {
				readErr = err
				return
			}
		}
	})

	var churned atomic.Int64
	var churnErr error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := upgraded(fmt.Sprintf("127.0.0.1:%d", streamPort)); err != nil {
				churnErr = fmt.Errorf("new connect #%d during reloads: %w", churned.Load(), err)
				return
			}
			churned.Add(1)
		}
	})

	other := fmt.Sprintf("127.0.0.1:%d", otherPort)
	for i := range 6 {
		mode := []string{"deny", "audit"}[i%2]
		flowing := recv.Load()
		env.cm.Update(map[string]string{"20-other.yaml": "rules:\n" + ruleYAML("other", otherPort, mode)})
		if i == 4 {
			// The SIGHUP path, racing the file watch: one of them applies
			// the change, the other finds nothing new or reapplies it.
			if err := la.rl.Reload("SIGHUP"); err != nil {
				t.Fatalf("SIGHUP reload: %v", err)
			}
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			_, err := net.DialTimeout("tcp4", other, time.Second)
			if errors.Is(err, syscall.EPERM) == (mode == "deny") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("reload %d: other should be %s 2s after the update, a connect gave %v", i, mode, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		deadline = time.Now().Add(2 * time.Second)
		for recv.Load() < flowing+1<<20 {
			if time.Now().After(deadline) {
				t.Fatalf("reload %d: the stream stalled (%d bytes back in 2s)", i, recv.Load()-flowing)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	for n := len(la.results); n > 0; n-- {
		if err := <-la.results; err != nil {
			t.Errorf("a reload failed: %v", err)
		}
	}
	if writeErr != nil || readErr != nil {
		t.Fatalf("stream broken: write %v, read %v", writeErr, readErr)
	}
	if churnErr != nil || plain.accepts.Load() != 0 {
		t.Fatalf("%v; %d connects reached the plaintext port", churnErr, plain.accepts.Load())
	}
	if sent.Load() != recv.Load() || !bytes.Equal(sentSum.Sum(nil), recvSum.Sum(nil)) {
		t.Fatalf("sent %d bytes, got %d back; checksums equal: %t", sent.Load(), recv.Load(), bytes.Equal(sentSum.Sum(nil), recvSum.Sum(nil)))
	}
	t.Logf("%d MiB each way across 6 reloads, checksums equal; %d new connects upgraded meanwhile", sent.Load()>>20, churned.Load())
}

// TestLiveBadDropInKeepsServing: drop-ins that cannot be applied (unknown
// key, a key that needs a restart, a missing file) are refused with the
// file and the key, by the file watch and by the SIGHUP path, and the
// running configuration keeps serving; a fixed drop-in then applies.
func TestLiveBadDropInKeepsServing(t *testing.T) {
	p := newPKI(t)
	srv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)
	port, port2 := freePort(t), freePort(t)
	env := newLiveEnv(t, "", enforceRule("exec", port, srv.port, ", caFile: "+p.ca.File), map[string]string{})
	la := env.start(t)
	testutil.EnterCgroup(t, env.cgroup)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	serving := func(stage string) {
		t.Helper()
		if err := upgraded(addr); err != nil {
			t.Fatalf("%s: the running configuration stopped serving: %v", stage, err)
		}
	}
	serving("start")
	bad := filepath.Join(env.cm.Dir, "30-bad.yaml")

	env.cm.Update(map[string]string{"30-bad.yaml": "rules: [{name: x, ports: [" + fmt.Sprint(port2) + "], mode: audit, mdoe: deny}]\n"})
	want := bad + `: unknown key "rules[0].mdoe" (did you mean "mode"?)`
	if err := la.nextResult(t); err == nil || err.Error() != want {
		t.Fatalf("unknown key: %v, want %q", err, want)
	}
	serving("after an unknown key")
	if err := la.rl.Reload("SIGHUP"); err == nil || err.Error() != want {
		t.Fatalf("SIGHUP with the unknown key: %v, want %q", err, want)
	}
	<-la.results
	serving("after SIGHUP")

	env.cm.Update(map[string]string{"30-bad.yaml": fmt.Sprintf("proxy: {port: %d}\n", freePort(t))})
	if err := la.nextResult(t); err == nil || !strings.Contains(err.Error(), "proxy.port") || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("proxy.port change: %v, want a refusal naming proxy.port", err)
	}
	serving("after a key that needs a restart")

	env.cm.Update(map[string]string{"30-bad.yaml": "rules:\n" + enforceRule("second", port2, srv.port, ", caFile: /nonexistent/ca.pem")})
	if err := la.nextResult(t); err == nil || !strings.HasPrefix(err.Error(), bad+": rules[0].upstream.tls.caFile: ") {
		t.Fatalf("missing caFile: %v, want the file and key", err)
	}
	serving("after a missing caFile")

	env.cm.Update(map[string]string{"30-good.yaml": "rules:\n" + enforceRule("second", port2, srv.port, ", caFile: "+p.ca.File)})
	if err := la.nextResult(t); err != nil {
		t.Fatalf("fixed drop-in: %v", err)
	}
	serving("after the fix")
	if err := upgraded(fmt.Sprintf("127.0.0.1:%d", port2)); err != nil {
		t.Fatalf("the fixed drop-in's rule: %v", err)
	}
}

// TestGracefulShutdownDrains: on SIGTERM the agent stops accepting (new
// enforced connects are refused, never plaintext), a session that ends
// within proxy.drainTimeout completes, one that does not is cut at the
// timeout; the programs stay pinned, and a restarted agent takes them over
// without a second attachment.
func TestGracefulShutdownDrains(t *testing.T) {
	p := newPKI(t)
	srv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)
	port := freePort(t)
	plain := startPlainServer(t, port)
	const drain = 2 * time.Second
	env := newLiveEnv(t, ", drainTimeout: 2s", enforceRule("exec", port, srv.port, ", caFile: "+p.ca.File), nil)
	la := env.start(t)
	testutil.EnterCgroup(t, env.cgroup)
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	dial := func() net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		must(t, err)
		t.Cleanup(func() { c.Close() })
		if got, err := roundTrip(c, "hello"); err != nil || got != "hello" {
			t.Fatalf("echo %q, %v", got, err)
		}
		return c
	}
	finishing, lingering := dial(), dial()

	stopped := make(chan time.Duration, 1)
	go func() {
		d, err := la.stop(t)
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		stopped <- d
	}()
	t0 := time.Now()

	// New connects: refused once the listener is closed, and never plaintext.
	for {
		c, err := net.DialTimeout("tcp4", addr, time.Second)
		if err == nil {
			c.Close() // accepted just before the listener closed
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		if time.Since(t0) > time.Second {
			t.Fatalf("new connects still accepted 1s into shutdown: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := range 5 {
		if _, err := net.DialTimeout("tcp4", addr, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connect %d while draining: %v, want ECONNREFUSED", i, err)
		}
	}

	// The established sessions keep working while the agent drains.
	for i := range 3 {
		msg := fmt.Sprintf("still relayed %d", i)
		if got, err := roundTrip(finishing, msg); err != nil || got != msg {
			t.Fatalf("session during the drain: %q, %v", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	must(t, finishing.(*net.TCPConn).CloseWrite())
	_ = finishing.SetReadDeadline(time.Now().Add(2 * time.Second))
	if rest, err := io.ReadAll(finishing); err != nil || len(rest) != 0 {
		t.Fatalf("finishing session: %q, %v; want a clean end", rest, err)
	}
	select {
	case d := <-stopped:
		t.Fatalf("the agent stopped after %v with a session still open; want it to wait up to %v", d, drain)
	case <-time.After(drain / 4):
	}
	if got, err := roundTrip(lingering, "still here"); err != nil || got != "still here" {
		t.Fatalf("lingering session before the timeout: %q, %v", got, err)
	}

	// The lingering one is cut at the drain timeout.
	var took time.Duration
	select {
	case took = <-stopped:
	case <-time.After(drain + 5*time.Second):
		t.Fatal("agent still running 5s past the drain timeout")
	}
	if took < drain-100*time.Millisecond || took > drain+2*time.Second {
		t.Errorf("stopped after %v, want about the %v drain timeout", took, drain)
	}
	_ = lingering.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := lingering.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Errorf("lingering session after the drain timeout: read %d, %v; want it cut", n, err)
	}
	evs := readEvents(t, env.audit)
	if ends := having(evs, "event", "session_end", "source", finishing.LocalAddr().String()); len(ends) != 1 || ends[0]["reason"] != nil {
		t.Errorf("finishing session: want one session_end without a reason (ended by the client), got %v", ends)
	}
	if ends := having(evs, "event", "session_end", "source", lingering.LocalAddr().String()); len(ends) != 1 || ends[0]["reason"] == nil {
		t.Errorf("lingering session: want one session_end with the reason it was cut, got %v", ends)
	}

	// Stopped: enforced connects are refused (pins stay), never plaintext.
	for i := range 3 {
		if _, err := net.DialTimeout("tcp4", addr, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connect %d with the agent stopped: %v, want ECONNREFUSED", i, err)
		}
	}
	if n := plain.accepts.Load(); n != 0 {
		t.Fatalf("%d connects reached the plaintext port: not fail closed", n)
	}
	counts, err := redirect.AttachedCounts(env.cgroup)
	must(t, err)
	for name, n := range counts {
		if n != 1 {
			t.Errorf("%s: %d programs attached with the agent stopped, want 1 (pinned)", name, n)
		}
	}

	// Restart on the same pins: serving again, nothing attached twice.
	env.start(t)
	if err := upgraded(addr); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	counts, err = redirect.AttachedCounts(env.cgroup)
	must(t, err)
	for name, n := range counts {
		if n != 1 {
			t.Errorf("%s: %d programs attached after a restart, want 1", name, n)
		}
	}
	if n := plain.accepts.Load(); n != 0 {
		t.Errorf("%d connects reached the plaintext port", n)
	}
}

// notifySocket stands in for systemd's $NOTIFY_SOCKET.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify.sock")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	must(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, _, err := c.ReadFromUnix(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return n
}

// wait returns the first message from index from on that has every line in
// want (and its index), waiting up to 5s.
func (n *notifySocket) wait(t *testing.T, from int, want ...string) (string, int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n.mu.Lock()
		msgs := append([]string(nil), n.msgs...)
		n.mu.Unlock()
	next:
		for i := from; i < len(msgs); i++ {
			for _, w := range want {
				if !strings.Contains("\n"+msgs[i]+"\n", "\n"+w) {
					continue next
				}
			}
			return msgs[i], i
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message with %q after #%d within 5s; got %q", want, from, msgs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (n *notifySocket) count(line string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := 0
	for _, m := range n.msgs {
		if strings.Contains("\n"+m+"\n", "\n"+line+"\n") {
			k++
		}
	}
	return k
}

// TestAgentBinaryLiveOperation runs `intransit agent --config F --config-dir
// D` as systemd would (Type=notify, WatchdogSec): READY=1 once serving,
// keep-alives at half the watchdog interval, RELOADING=1 + MONOTONIC_USEC
// then READY=1 around a SIGHUP and around a ConfigMap update, a refused
// reload reported with the file and key while serving goes on, STOPPING=1 on
// SIGTERM and a clean exit with the programs left pinned.
func TestAgentBinaryLiveOperation(t *testing.T) {
	testutil.RequireRoot(t)
	bin := agentBinary(t)
	p := newPKI(t)
	srv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)
	port := freePort(t)
	plain := startPlainServer(t, port)
	env := newLiveEnv(t, ", drainTimeout: 1s", ruleYAML("base", freePort(t), "audit"),
		map[string]string{"10-exec.yaml": "rules:\n" + enforceRule("exec", port, srv.port, ", caFile: "+p.ca.File)})
	notify := listenNotify(t)
	cmd := exec.Command(bin, "agent", "--config", env.base, "--config-dir", env.cm.Dir)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.path, "WATCHDOG_USEC=1000000")
	proc := startAgentCmd(t, cmd, env.metrics)
	testutil.EnterCgroup(t, env.cgroup)
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	msg, i := notify.wait(t, 0, "READY=1")
	if !strings.Contains(msg, "STATUS=serving 2 rules from "+env.base+" + "+filepath.Join(env.cm.Dir, "*.yaml")) {
		t.Errorf("READY message: %q", msg)
	}
	if err := upgraded(addr); err != nil {
		t.Fatalf("rule from the drop-in: %v\n%s", err, proc.stderr.String())
	}
	time.Sleep(1200 * time.Millisecond)
	if k := notify.count("WATCHDOG=1"); k < 2 || k > 5 {
		t.Errorf("%d keep-alives in about 1.2s with WATCHDOG_USEC=1s, want one every 0.5s", k)
	}

	// SIGHUP: RELOADING=1 with a timestamp, then READY=1.
	must(t, proc.cmd.Process.Signal(syscall.SIGHUP))
	_, i = notify.wait(t, i+1, "RELOADING=1", "MONOTONIC_USEC=")
	_, i = notify.wait(t, i+1, "READY=1", "STATUS=serving 2 rules")

	// A ConfigMap update switching the rule to deny.
	env.cm.Update(map[string]string{"10-exec.yaml": "rules:\n" + ruleYAML("exec", port, "deny")})
	_, i = notify.wait(t, i+1, "RELOADING=1")
	_, i = notify.wait(t, i+1, "READY=1")
	if _, err := net.DialTimeout("tcp4", addr, time.Second); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("after the update to deny: %v, want EPERM", err)
	}

	// A bad update: refused, reported, still serving the deny rule.
	env.cm.Update(map[string]string{"10-exec.yaml": fmt.Sprintf("rules:\n  - {name: exec, ports: [%d], mode: deny, mdoe: audit}\n", port)})
	_, i = notify.wait(t, i+1, "RELOADING=1")
	msg, i = notify.wait(t, i+1, "READY=1")
	wantErr := filepath.Join(env.cm.Dir, "10-exec.yaml") + `: unknown key \"rules[0].mdoe\"`
	if !strings.Contains(msg, "STATUS=reload refused, serving the previous configuration:") {
		t.Errorf("refused reload status: %q", msg)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(proc.stderr.String(), wantErr) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if log := proc.stderr.String(); !strings.Contains(log, `"msg":"configuration reload refused; still serving the previous configuration"`) || !strings.Contains(log, wantErr) {
		t.Errorf("the log should name the file and key (%s):\n%s", wantErr, log)
	}
	if _, err := net.DialTimeout("tcp4", addr, time.Second); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("after the refused update: %v, want EPERM (previous configuration)", err)
	}

	// SIGTERM: STOPPING=1, clean exit, programs still pinned.
	must(t, proc.cmd.Process.Signal(syscall.SIGTERM))
	notify.wait(t, i+1, "STOPPING=1")
	exited := make(chan error, 1)
	go func() { exited <- proc.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("agent exit: %v\n%s", err, proc.stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not exit within 10s of SIGTERM")
	}
	if _, err := net.DialTimeout("tcp4", addr, time.Second); !errors.Is(err, syscall.EPERM) {
		t.Errorf("with the agent stopped: %v, want EPERM from the pinned deny rule", err)
	}
	if n := plain.accepts.Load(); n != 0 {
		t.Errorf("%d connects reached the plaintext port", n)
	}
}
