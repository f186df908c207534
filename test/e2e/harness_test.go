// Package e2e runs the agent against the real kernel: a throwaway cgroup the
// test process moves into, pins under a throwaway bpffs directory, loopback
// servers and, for wire checks, a network namespace behind a veth pair.
package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/intransit/intransit/internal/testutil"
	"github.com/intransit/intransit/pkg/agent"
	"github.com/intransit/intransit/pkg/config"
)

// freePort returns a port nothing listens on, never the same one twice in
// this test binary: the kernel may hand a just-closed ephemeral port out
// again, and two roles (a rule port and metrics.listen, say) sharing one
// make the config invalid.
func freePort(t testing.TB) int {
	t.Helper()
	handedOutMu.Lock()
	defer handedOutMu.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !handedOut[port] {
			handedOut[port] = true
			return port
		}
	}
	t.Fatal("no fresh free port after 100 tries")
	return 0
}

var (
	handedOutMu sync.Mutex
	handedOut   = map[int]bool{}
)

// pki is the certificates of one test.
type pki struct {
	dir    string
	ca     *testutil.CA
	server testutil.Issued // SAN 127.0.0.1, ::1, executor.test
}

func newPKI(t testing.TB) *pki {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "test")
	return &pki{dir: dir, ca: ca, server: ca.Issue(t, dir, testutil.Leaf{
		CommonName: "executor.test", DNSNames: []string{"executor.test"},
		IPs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	})}
}

// tlsServer is the TLS-capable "executor". Each connection runs fn.
type tlsServer struct {
	ln       net.Listener
	port     int
	accepted atomic.Int64 // completed handshakes
	failed   atomic.Int64 // failed handshakes
	mu       sync.Mutex
	states   []tls.ConnectionState
}

func startTLSServer(t testing.TB, network, addr string, cert tls.Certificate, fn func(net.Conn)) *tlsServer {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := tls.Server(c, cfg)
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					s.failed.Add(1)
					return
				}
				_ = tc.SetDeadline(time.Time{})
				s.accepted.Add(1)
				s.mu.Lock()
				s.states = append(s.states, tc.ConnectionState())
				s.mu.Unlock()
				fn(tc)
			}()
		}
	}()
	return s
}

func echo(c net.Conn) { _, _ = io.Copy(c, c) }

// running is an in-process agent under test.
type running struct {
	agent   *agent.Agent
	cfg     *config.Config
	cgroup  string
	audit   string
	metrics string
	cancel  context.CancelFunc
	done    chan error
}

type agentOpts struct {
	rules   string // YAML for the rules list
	extra   string // more top-level YAML (inbound, identity, ...)
	podAddr string // proxy.podAddress
	mapSize int
	enter   bool // move the test process into the cgroup
	// metricsExtra is appended inside metrics: {...}.
	metricsExtra string
	// log, when set, also receives the agent's log at debug level (tests
	// that search every output for secrets).
	log io.Writer
}

// startAgent writes a config, runs the agent in-process and waits until it
// is ready. The cgroup, pins, sockets and files are removed afterwards.
func startAgent(t *testing.T, o agentOpts) *running {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	cg := testutil.NewCgroup(t)
	pin := testutil.PinPath(t)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	if o.mapSize == 0 {
		o.mapSize = 4096
	}
	yaml := fmt.Sprintf(`cgroup: %s
bpf: {pinPath: %s, mapSize: %d}
proxy: {port: %d, handshakeTimeout: 3s, dialTimeout: 2s%s}
audit: {file: %s}
metrics: {listen: %s%s}
api: {socket: %s}
%s
rules:
%s`, cg, pin, o.mapSize, freePort(t), podAddrKey(o.podAddr), filepath.Join(dir, "audit.jsonl"), metricsAddr, o.metricsExtra, filepath.Join(dir, "api.sock"), o.extra, o.rules)
	cfgPath := filepath.Join(dir, "intransit.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	var logw io.Writer = testWriter{t}
	level := slog.LevelWarn
	if o.log != nil {
		logw, level = io.MultiWriter(logw, o.log), slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: level}))
	a, err := agent.New(cfg, agent.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{agent: a, cfg: cfg, cgroup: cg, audit: cfg.Audit.File, metrics: metricsAddr, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(r.stop)
	deadline := time.Now().Add(10 * time.Second)
	for a.Ready() != nil {
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("agent exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("agent not ready after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if o.enter {
		testutil.EnterCgroup(t, cg)
	}
	return r
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
	}
}

// events reads the audit trail, waiting up to 3s for want(events) to hold.
func (r *running) events(t *testing.T, want func([]map[string]any) bool) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		evs := readEvents(t, r.audit)
		if want == nil || want(evs) || time.Now().After(deadline) {
			return evs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readEvents(t *testing.T, path string) []map[string]any {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line is not JSON: %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// having filters events by key=value pairs (string values).
func having(evs []map[string]any, kv ...string) []map[string]any {
	var out []map[string]any
next:
	for _, e := range evs {
		for i := 0; i+1 < len(kv); i += 2 {
			if fmt.Sprint(e[kv[i]]) != kv[i+1] {
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}

func countAtLeast(n int, kv ...string) func([]map[string]any) bool {
	return func(evs []map[string]any) bool { return len(having(evs, kv...)) >= n }
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// roundTrip writes msg and reads the same number of bytes back.
func roundTrip(c net.Conn, msg string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return "", err
	}
	return string(buf), nil
}

func enforceRule(name string, port, tlsPort int, extra string) string {
	return fmt.Sprintf(`  - name: %s
    ports: [%d]
    mode: enforce
    upstream: {tls: {port: %d%s}}
`, name, port, tlsPort, extra)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func podAddrKey(a string) string {
	if a == "" {
		return ""
	}
	return ", podAddress: " + a
}
