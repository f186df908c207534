package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/intransit/intransit/pkg/api"
	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/recording"
)

// Recording ids of the fixture.
const (
	idSealed     = "00000000000000a1" // 2 HTTP exchanges, then raw data; pod workload; started 2h ago
	idRaw        = "00000000000000b2" // raw data only; container workload; started 30m ago; verdict ERROR
	idUnfinished = "00000000000000c3" // abandoned: no End, no seal; started 10m ago
	idTampered   = "00000000000000d4" // sealed, then a body byte flipped; started 5h ago
	idEvil       = "00000000000000e5" // sealed; escapes in comm and pod name; started 1h ago
	idKeyed      = "00000000000000f6" // in the keyed store; sealed
	idMissing    = "0123456789abcdef" // valid, no such file
)

// Strings of the evil workload: ESC sequences (colour, window title) and BEL.
const (
	evilComm = "ev\x1b[31mil"
	evilPod  = "pod\x1b]0;pwned\x07"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// fixture is a recordings directory (plain SHA-256 chains) and a keyed one.
type fixture struct {
	dir, keyedDir string
	keyFile       string // testKey
	wrongKeyFile  string
	now           time.Time
	start         map[string]time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{
		dir:          filepath.Join(root, "recordings"),
		keyedDir:     filepath.Join(root, "keyed"),
		keyFile:      filepath.Join(root, "key"),
		wrongKeyFile: filepath.Join(root, "wrong-key"),
		now:          time.Now(),
		start:        map[string]time.Time{},
	}
	writeFile(t, f.keyFile, testKey)
	writeFile(t, f.wrongKeyFile, []byte("another-key-another-key-another!"))
	opts := recording.StoreOptions{MaxSessionBytes: 1 << 20, MaxTotalBytes: 64 << 20}

	s, err := recording.OpenStore(f.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	f.start[idSealed] = f.now.Add(-2 * time.Hour)
	f.writeHTTP(t, s, meta(idSealed, f.start[idSealed], podProcess("python3", "api-7f9")), true)

	f.start[idRaw] = f.now.Add(-30 * time.Minute)
	m := meta(idRaw, f.start[idRaw], &audit.Process{PID: 77, Comm: "psql", UID: 0, Exe: "/usr/bin/psql",
		CgroupPath: "/system.slice/docker-5d6e7f.scope", Container: &audit.Container{Runtime: "docker", ID: "5d6e7f8091a2b3c4d5e6f708192a3b4c"}})
	m.Destination, m.Upstream, m.TLS = "192.168.1.20:5432", "192.168.1.20:5433", nil
	w := create(t, s, m)
	appendChunks(t, w, m.Start,
		recording.Chunk{Kind: recording.KindData, Dir: recording.DirClientToServer, Payload: []byte("SELECT 1;\n")},
		recording.Chunk{Kind: recording.KindData, Dir: recording.DirServerToClient, Payload: []byte("1\n")},
	)
	finish(t, w, m.Start, audit.VerdictError)

	f.start[idUnfinished] = f.now.Add(-10 * time.Minute)
	m = meta(idUnfinished, f.start[idUnfinished], podProcess("curl", "web-1"))
	w = create(t, s, m)
	appendChunks(t, w, m.Start, recording.Chunk{Kind: recording.KindHTTPHead, Dir: recording.DirClientToServer, Exchange: 1,
		Payload: mustJSON(t, recording.HTTPHead{Request: true, Method: "GET", Target: "/pending", Proto: "HTTP/1.1"})})
	if err := w.Abandon(); err != nil {
		t.Fatal(err)
	}

	f.start[idTampered] = f.now.Add(-5 * time.Hour)
	f.writeHTTP(t, s, meta(idTampered, f.start[idTampered], podProcess("python3", "api-7f9")), true)

	f.start[idEvil] = f.now.Add(-time.Hour)
	f.writeHTTP(t, s, meta(idEvil, f.start[idEvil], podProcess(evilComm, evilPod)), false)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Flip one byte of a body: the chain no longer verifies.
	path := filepath.Join(f.dir, idTampered+".rec")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte("secret-body"))
	if i < 0 {
		t.Fatal("tamper: body not found")
	}
	b[i] ^= 0x20
	writeFile(t, path, b)

	ks, err := recording.OpenStore(f.keyedDir, recording.StoreOptions{MaxSessionBytes: 1 << 20, MaxTotalBytes: 64 << 20, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	f.writeHTTP(t, ks, meta(idKeyed, f.now.Add(-time.Minute), podProcess("python3", "api-7f9")), false)
	if err := ks.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

func podProcess(comm, pod string) *audit.Process {
	return &audit.Process{
		PID: 4242, Comm: comm, UID: 1000, GID: 1000, Cgroup: 99, Exe: "/usr/bin/python3",
		CgroupPath: "/kubepods.slice/kubepods-pod1234.slice/cri-containerd-0a1b2c3d4e5f.scope",
		Container:  &audit.Container{Runtime: "containerd", ID: "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"},
		Pod:        &audit.Pod{Namespace: "payments", Name: pod, UID: "uid-1234", ServiceAccount: "payments-sa"},
	}
}

func meta(id string, start time.Time, p *audit.Process) recording.Meta {
	return recording.Meta{
		ID: id, Start: start, Rule: "payments-http", Level: recording.LevelFull, Node: "node-1",
		Source: "10.0.0.5:40000", Destination: "10.0.0.9:80", Upstream: "10.0.0.9:443",
		Process: p,
		TLS:     &audit.TLSInfo{Version: "TLS 1.3", Cipher: "TLS_AES_128_GCM_SHA256", ServerName: "api.internal", PeerSubject: "CN=api.internal"},
		Verdict: audit.VerdictUpgraded,
	}
}

func create(t *testing.T, s *recording.Store, m recording.Meta) *recording.Writer {
	t.Helper()
	w, err := s.Create(m)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// appendChunks appends cs a millisecond apart from start and flushes.
func appendChunks(t *testing.T, w *recording.Writer, start time.Time, cs ...recording.Chunk) {
	t.Helper()
	for i, c := range cs {
		c.Time = start.Add(time.Duration(i+1) * time.Millisecond)
		if err := w.Append(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

func finish(t *testing.T, w *recording.Writer, start time.Time, v audit.Verdict) {
	t.Helper()
	if err := w.Finish(recording.End{End: start.Add(time.Second), BytesSent: 123, BytesReceived: 456, Verdict: v, Reason: "closed"}); err != nil {
		t.Fatal(err)
	}
}

// writeHTTP records two HTTP exchanges, then (with raw) an upgrade note
// and raw data both ways, and seals.
func (f *fixture) writeHTTP(t *testing.T, s *recording.Store, m recording.Meta, raw bool) {
	t.Helper()
	c2s, s2c := recording.DirClientToServer, recording.DirServerToClient
	head := func(dir recording.Dir, ex uint32, h recording.HTTPHead) recording.Chunk {
		return recording.Chunk{Kind: recording.KindHTTPHead, Dir: dir, Exchange: ex, Payload: mustJSON(t, h)}
	}
	body := func(dir recording.Dir, ex uint32, b string) recording.Chunk {
		return recording.Chunk{Kind: recording.KindHTTPBody, Dir: dir, Exchange: ex, Payload: []byte(b)}
	}
	end := func(dir recording.Dir, ex uint32, n int64) recording.Chunk {
		return recording.Chunk{Kind: recording.KindHTTPEnd, Dir: dir, Exchange: ex, Payload: mustJSON(t, recording.HTTPEnd{BodySize: n})}
	}
	hs := func(kv ...string) []recording.Header {
		var out []recording.Header
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, recording.Header{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	cs := []recording.Chunk{
		head(c2s, 1, recording.HTTPHead{Request: true, Method: "POST", Target: "/api/v1/charges", Proto: "HTTP/1.1",
			Headers: hs("Host", "api.internal", "Content-Type", "application/json", "Content-Length", "17")}),
		body(c2s, 1, `{"amount": 4200}`+"\n"),
		end(c2s, 1, 17),
		head(s2c, 1, recording.HTTPHead{Proto: "HTTP/1.1", Status: 201, Reason: "Created",
			Headers: hs("Content-Type", "text/plain", "Content-Length", "11")}),
		body(s2c, 1, "secret-body"),
		end(s2c, 1, 11),
		head(c2s, 2, recording.HTTPHead{Request: true, Method: "GET", Target: "/api/v1/charges/7", Proto: "HTTP/1.1",
			Headers: hs("Host", "api.internal")}),
		end(c2s, 2, 0),
		head(s2c, 2, recording.HTTPHead{Proto: "HTTP/1.1", Status: 404, Reason: "Not Found", Headers: hs("Content-Length", "0")}),
		end(s2c, 2, 0),
	}
	if raw {
		cs = append(cs,
			recording.Chunk{Kind: recording.KindNote, Payload: mustJSON(t, recording.Note{Code: recording.NoteUpgrade, Message: "switched to websocket"})},
			recording.Chunk{Kind: recording.KindData, Dir: c2s, Payload: []byte("raw-ping")},
			recording.Chunk{Kind: recording.KindData, Dir: s2c, Payload: []byte("raw-pong")},
		)
	}
	w := create(t, s, m)
	appendChunks(t, w, m.Start, cs...)
	finish(t, w, m.Start, audit.VerdictUpgraded)
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// noConfig is a --config that does not exist, so no real config is read.
func noConfig(t testing.TB) string {
	return filepath.Join(t.TempDir(), "no-such-config.yaml")
}

// run runs the CLI in-process and returns stdout, stderr and the error.
func run(t testing.TB, args ...string) (string, string, error) {
	t.Helper()
	return runCtx(context.Background(), t, args...)
}

func runCtx(ctx context.Context, t testing.TB, args ...string) (string, string, error) {
	t.Helper()
	out, errOut, done := start(ctx, args...)
	err := <-done
	return out.String(), errOut.String(), err
}

// start runs the CLI in-process in the background; done yields its error.
func start(ctx context.Context, args ...string) (out, errOut *syncBuffer, done <-chan error) {
	out, errOut = &syncBuffer{}, &syncBuffer{}
	root := newRoot()
	root.SetOut(out)
	root.SetErr(errOut)
	root.SetArgs(args)
	ch := make(chan error, 1)
	go func() { ch <- root.ExecuteContext(ctx) }()
	return out, errOut, ch
}

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeBackend is an api.Backend with fixed answers and a live audit feed.
type fakeBackend struct {
	mu         sync.Mutex
	recordings api.Recordings
	recErr     error
	recent     [][]byte
	subs       map[chan []byte]bool
}

func (b *fakeBackend) Status() api.Status { return api.Status{Version: "test", PID: 1, Ready: true} }

func (b *fakeBackend) Recordings() (api.Recordings, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.recordings, b.recErr
}

func (b *fakeBackend) setRecordings(r api.Recordings, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.recordings, b.recErr = r, err
}

func (b *fakeBackend) AuditRecent() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]byte(nil), b.recent...)
}

func (b *fakeBackend) AuditSubscribe() (<-chan []byte, func()) {
	ch := make(chan []byte, 64)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs == nil {
		b.subs = map[chan []byte]bool{}
	}
	b.subs[ch] = true
	return ch, func() { b.unsubscribe(ch) }
}

func (b *fakeBackend) unsubscribe(ch chan []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs[ch] {
		delete(b.subs, ch)
		close(ch)
	}
}

func (b *fakeBackend) publish(line []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.recent = append(b.recent, line)
	for ch := range b.subs {
		ch <- line
	}
}

func (b *fakeBackend) subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// closeSubscribers ends every follow stream, as the agent does on shutdown.
func (b *fakeBackend) closeSubscribers() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		delete(b.subs, ch)
		close(ch)
	}
}

// serveAPI serves b on a fresh socket and returns its path.
func serveAPI(t *testing.T, b api.Backend) string {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 80 { // sun_path holds 108 bytes
		d, err := os.MkdirTemp("", "it")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	socket := filepath.Join(dir, "api.sock")
	stop, err := api.Serve(context.Background(), socket, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return socket
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func auditLine(t testing.TB, e audit.Event) []byte {
	return append(mustJSON(t, e), '\n')
}

// noEscapes fails if out holds a raw control character other than
// newline and tab (ESC, BEL...).
func noEscapes(t testing.TB, what, out string) {
	t.Helper()
	for i, r := range out {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			t.Errorf("%s: raw control character %U at byte %d: %q", what, r, i, out[max(0, i-20):min(len(out), i+20)])
			return
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("%s: raw ESC", what)
	}
}
