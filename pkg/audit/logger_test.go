package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// logged runs fn against a Logger on a buffer and returns the written lines.
func logged(t *testing.T, fn func(l *Logger)) []string {
	t.Helper()
	var buf bytes.Buffer
	l := New(&buf)
	fn(l)
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	out := buf.String()
	if out == "" {
		return nil
	}
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("output does not end in a newline: %q", out)
	}
	return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
}

func decode(t *testing.T, line string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("invalid json line %q: %v", line, err)
	}
	return m
}

func fullEvent() Event {
	e := Event{
		Time:         time.Date(2025, 3, 4, 5, 6, 7, 890, time.FixedZone("X", 3600)),
		Event:        EventSessionEnd,
		Verdict:      VerdictUpgraded,
		Rule:         "postgres",
		Mode:         "enforce",
		Session:      "0123456789abcdef",
		Source:       "10.0.0.1:40000",
		Destination:  "10.0.0.2:5432",
		Upstream:     "db.internal:5433",
		NetnsCookie:  11,
		SocketCookie: 12,
		Reason:       "done",
		Process: &Process{
			PID: 1, TGID: 2, Comm: "psql", UID: 3, GID: 4, Cgroup: 5, CgroupPath: "/sys/fs/cgroup/app",
		},
		TLS: &TLSInfo{
			Version: "TLS 1.3", Cipher: "TLS_AES_128_GCM_SHA256", ServerName: "db.internal",
			PeerSubject: "CN=db", Resumed: true,
		},
	}
	e.SetBytes(100, 200)
	e.SetDuration(1500 * time.Millisecond)
	return e
}

func TestFieldKeys(t *testing.T) {
	lines := logged(t, func(l *Logger) { l.Log(fullEvent()) })
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1", len(lines))
	}
	m := decode(t, lines[0])
	want := map[string]any{
		"time":             "2025-03-04T04:06:07.00000089Z",
		"event":            "session_end",
		"verdict":          "UPGRADED",
		"rule":             "postgres",
		"mode":             "enforce",
		"session":          "0123456789abcdef",
		"source":           "10.0.0.1:40000",
		"destination":      "10.0.0.2:5432",
		"upstream":         "db.internal:5433",
		"netns_cookie":     11.0,
		"socket_cookie":    12.0,
		"reason":           "done",
		"bytes_sent":       100.0,
		"bytes_received":   200.0,
		"duration":         "1.5s",
		"duration_seconds": 1.5,
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v (%T), want %v", k, m[k], m[k], v)
		}
	}
	proc, _ := m["process"].(map[string]any)
	wantProc := map[string]any{
		"pid": 1.0, "tgid": 2.0, "comm": "psql", "uid": 3.0, "gid": 4.0, "cgroup": 5.0,
		"cgroup_path": "/sys/fs/cgroup/app",
	}
	for k, v := range wantProc {
		if proc[k] != v {
			t.Errorf("process.%s = %v, want %v", k, proc[k], v)
		}
	}
	tls, _ := m["tls"].(map[string]any)
	wantTLS := map[string]any{
		"version": "TLS 1.3", "cipher": "TLS_AES_128_GCM_SHA256", "server_name": "db.internal",
		"peer_subject": "CN=db", "resumed": true,
	}
	for k, v := range wantTLS {
		if tls[k] != v {
			t.Errorf("tls.%s = %v, want %v", k, tls[k], v)
		}
	}
	if n := len(m) - 2 + len(proc) + len(tls); n != len(want)+len(wantProc)+len(wantTLS) {
		t.Errorf("unexpected extra keys in %s", lines[0])
	}
}

func TestSessionEndZeroBytes(t *testing.T) {
	lines := logged(t, func(l *Logger) {
		e := Event{Event: EventSessionEnd, Verdict: VerdictUpgraded}
		e.SetBytes(0, 0)
		l.Log(e)
		l.Log(Event{Event: EventConnect, Verdict: VerdictAudit})
	})
	end, connect := decode(t, lines[0]), decode(t, lines[1])
	for _, k := range []string{"bytes_sent", "bytes_received"} {
		if v, ok := end[k]; !ok || v != 0.0 {
			t.Errorf("session_end %s = %v (present %v), want 0", k, v, ok)
		}
		if _, ok := connect[k]; ok {
			t.Errorf("connect event has %s", k)
		}
	}
}

func TestTimeDefaultsToNowUTC(t *testing.T) {
	before := time.Now()
	lines := logged(t, func(l *Logger) { l.Log(Event{Event: EventConnect, Verdict: VerdictAudit}) })
	s, _ := decode(t, lines[0])["time"].(string)
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	if !strings.HasSuffix(s, "Z") || ts.Before(before.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
		t.Errorf("time = %q, want now in UTC", s)
	}
}

func TestConcurrentLog(t *testing.T) {
	const goroutines, perG = 50, 200
	var buf bytes.Buffer
	l := New(&buf)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perG {
				l.Log(Event{
					Event: EventConnect, Verdict: VerdictAudit, Rule: "r",
					Reason:  strings.Repeat("x", (g*perG+i)%300),
					Process: &Process{PID: uint32(g), Comm: "worker"},
				})
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := l.Errors(); n != 0 {
		t.Fatalf("Errors() = %d, want 0", n)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != goroutines*perG {
		t.Fatalf("got %d lines, want %d", len(lines), goroutines*perG)
	}
	for i, line := range lines {
		if !json.Valid([]byte(line)) {
			t.Fatalf("line %d is not valid JSON: %q", i, line)
		}
	}
}

func TestOpenFileModeAndAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte("{\"old\":true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	l.Log(Event{Event: EventConnect, Verdict: VerdictDenied})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if got := strings.Count(string(data), "\n"); got != 2 {
		t.Errorf("file has %d lines, want 2 (appended): %s", got, data)
	}

	fresh := filepath.Join(t.TempDir(), "new.log")
	l, err = Open(fresh)
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	fi, err := os.Stat(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode = %v, want 0600", perm)
	}
}

func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	rotated := path + ".1"
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	l.Log(Event{Event: EventConnect, Verdict: VerdictAudit, Rule: "before"})
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	l.Log(Event{Event: EventConnect, Verdict: VerdictAudit, Rule: "after"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(rotated)
	cur, _ := os.ReadFile(path)
	if !strings.Contains(string(old), `"rule":"before"`) || strings.Contains(string(old), `"rule":"after"`) {
		t.Errorf("rotated file = %q, want only the line logged before Reopen", old)
	}
	if !strings.Contains(string(cur), `"rule":"after"`) || strings.Contains(string(cur), `"rule":"before"`) {
		t.Errorf("new file = %q, want only the line logged after Reopen", cur)
	}
	if err := l.Reopen(); err == nil {
		t.Error("Reopen after Close succeeded")
	}
}

func TestOpenMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "audit.log")
	_, err := Open(path)
	if err == nil {
		t.Fatal("Open succeeded in a missing directory")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("error %q should name %s and say the directory does not exist", err, path)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v should wrap os.ErrNotExist", err)
	}
}

func TestLogInjection(t *testing.T) {
	comm := "evil\n{\"verdict\":\"UPGRADED\"}"
	reason := "bad\xff\xfebytes\r\u2028\x00end"
	lines := logged(t, func(l *Logger) {
		l.Log(Event{
			Event: EventConnect, Verdict: VerdictDenied, Reason: reason,
			Process: &Process{Comm: comm, CgroupPath: "/x\xff"},
			TLS:     &TLSInfo{PeerSubject: "CN=\xc3"},
		})
	})
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want exactly 1: %q", len(lines), lines)
	}
	if !json.Valid([]byte(lines[0])) {
		t.Fatalf("invalid JSON: %q", lines[0])
	}
	var e Event
	if err := json.Unmarshal([]byte(lines[0]), &e); err != nil {
		t.Fatal(err)
	}
	if e.Verdict != VerdictDenied || e.Process.Comm != comm {
		t.Errorf("verdict %q comm %q: injected content changed the event", e.Verdict, e.Process.Comm)
	}
	if want := "bad\uFFFDbytes\r\u2028\x00end"; e.Reason != want {
		t.Errorf("reason = %q, want %q", e.Reason, want)
	}
	if e.Process.CgroupPath != "/x\uFFFD" || e.TLS.PeerSubject != "CN=\uFFFD" {
		t.Errorf("invalid UTF-8 not replaced: %q %q", e.Process.CgroupPath, e.TLS.PeerSubject)
	}
	if strings.ContainsAny(lines[0], "\r\x00") {
		t.Errorf("raw control characters in output: %q", lines[0])
	}
}

func TestSanitizeDoesNotMutateCaller(t *testing.T) {
	p := &Process{Comm: "a\xff"}
	_ = logged(t, func(l *Logger) { l.Log(Event{Process: p}) })
	if p.Comm != "a\xff" {
		t.Errorf("caller's Process was modified: %q", p.Comm)
	}
}

func TestSubscribe(t *testing.T) {
	l := New(io.Discard)
	fast, cancelFast := l.Subscribe(100)
	slow, _ := l.Subscribe(1) // never read
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			l.Log(Event{Event: EventConnect, Verdict: VerdictAudit, Session: string(rune('a' + i%26))})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Log blocked on a slow subscriber")
	}
	for i := range 50 {
		line := <-fast
		if !json.Valid(line) || !bytes.HasSuffix(line, []byte("\n")) {
			t.Fatalf("line %d = %q", i, line)
		}
	}
	if got := l.Dropped(); got != 49 {
		t.Errorf("Dropped() = %d, want 49", got)
	}
	cancelFast()
	cancelFast() // idempotent
	if _, ok := <-fast; ok {
		t.Error("canceled subscription still open")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	<-slow // the one buffered line
	if _, ok := <-slow; ok {
		t.Error("Close did not end the subscription")
	}
	late, _ := l.Subscribe(1)
	if _, ok := <-late; ok {
		t.Error("subscription after Close is open")
	}
}

func TestRecent(t *testing.T) {
	l := New(io.Discard)
	defer l.Close()
	if got := l.Recent(); len(got) != 0 {
		t.Fatalf("Recent() on a new logger = %d lines", len(got))
	}
	for i := range 300 {
		l.Log(Event{Event: EventConnect, Verdict: VerdictAudit, NetnsCookie: uint64(i + 1)})
	}
	got := l.Recent()
	if len(got) != recentSize {
		t.Fatalf("Recent() = %d lines, want %d", len(got), recentSize)
	}
	for i, line := range got {
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		if want := uint64(300 - recentSize + i + 1); e.NetnsCookie != want {
			t.Fatalf("Recent()[%d] cookie = %d, want %d", i, e.NetnsCookie, want)
		}
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrorsCountedAndRateLimited(t *testing.T) {
	var logs bytes.Buffer
	l := New(failingWriter{})
	l.SetErrorLog(slog.New(slog.NewTextHandler(&logs, nil)))
	for range 5 {
		l.Log(Event{Event: EventConnect, Verdict: VerdictAudit})
	}
	_ = l.Close()
	l.Log(Event{Event: EventConnect}) // after Close: dropped and counted
	if got := l.Errors(); got != 6 {
		t.Errorf("Errors() = %d, want 6", got)
	}
	if n := strings.Count(logs.String(), "audit trail error"); n != 1 {
		t.Errorf("reported %d times, want once per minute:\n%s", n, logs.String())
	}
}

func TestEncodeErrorCounted(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	l.SetErrorLog(slog.New(slog.DiscardHandler))
	l.Log(Event{Event: EventConnect, DurationSeconds: math.Inf(1)})
	_ = l.Close()
	if l.Errors() != 1 || buf.Len() != 0 {
		t.Errorf("Errors() = %d, output %q; want the unencodable event counted and dropped", l.Errors(), buf.String())
	}
}

func TestNewSessionID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{16}$`)
	seen := map[string]bool{}
	for range 100 {
		id := NewSessionID()
		if !re.MatchString(id) || seen[id] {
			t.Fatalf("bad or repeated session id %q", id)
		}
		seen[id] = true
	}
}

func TestOpenStdout(t *testing.T) {
	l, err := Open("-")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Errorf("Reopen on stdout: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stdout.Stat(); err != nil {
		t.Errorf("stdout closed: %v", err)
	}
}

// blockingWriter wedges every Write until release is closed.
type blockingWriter struct{ release chan struct{} }

func (w blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

func TestLogDoesNotBlockOnWedgedWriter(t *testing.T) {
	w := blockingWriter{release: make(chan struct{})}
	l := New(w)
	l.SetErrorLog(slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The writer takes what is queued into one batch and wedges on it;
		// then queueSize lines fill the queue and the rest must be dropped
		// after the stall wait.
		// The wedged batch holds at most maxBatch bytes of lines.
		for range queueSize + maxBatch/32 {
			l.Log(Event{Event: EventConnect, Verdict: VerdictAudit})
			if l.Errors() > 0 {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // generous: CI machines under -race are slow
		t.Fatal("Log blocked on a wedged writer")
	}
	if got := l.Errors(); got != 1 {
		t.Errorf("Errors() = %d, want the 1 dropped line", got)
	}
	close(w.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
