package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeBackend is a Backend with fixed answers and a live audit feed that
// behaves like the agent's: lines go to the ring and, without blocking, to
// every subscriber.
type fakeBackend struct {
	status Status

	mu          sync.Mutex
	recordings  Recordings
	recErr      error
	recent      [][]byte
	subs        map[chan []byte]bool
	subscribed  int // AuditSubscribe calls
	drops       int
	bufSize     int
	onSubscribe func() // runs after a subscription is registered, before AuditSubscribe returns
}

func (b *fakeBackend) Status() Status { return b.status }

func (b *fakeBackend) Recordings() (Recordings, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.recordings, b.recErr
}

func (b *fakeBackend) AuditRecent() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]byte(nil), b.recent...)
}

func (b *fakeBackend) AuditSubscribe() (<-chan []byte, func()) {
	n := b.bufSize
	if n == 0 {
		n = 64
	}
	ch := make(chan []byte, n)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[chan []byte]bool{}
	}
	b.subs[ch] = true
	b.subscribed++
	hook := b.onSubscribe
	b.mu.Unlock()
	if hook != nil {
		hook()
	}
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.subs[ch] {
			delete(b.subs, ch)
			close(ch)
		}
	}
}

func (b *fakeBackend) publish(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := []byte(line)
	b.recent = append(b.recent, l)
	for ch := range b.subs {
		select {
		case ch <- l:
		default:
			b.drops++
		}
	}
}

func (b *fakeBackend) subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

func (b *fakeBackend) closeSubscribers() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		delete(b.subs, ch)
		close(ch)
	}
}

// socketPath returns a socket path in a fresh directory, short enough for
// sun_path (108 bytes).
func socketPath(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 80 {
		d, err := os.MkdirTemp("", "itapi")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	return filepath.Join(dir, "api.sock")
}

func serve(t *testing.T, b Backend) (socket string, stop func()) {
	t.Helper()
	socket = socketPath(t)
	stop, err := Serve(context.Background(), socket, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return socket, stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settle waits for the goroutine count to come back to at most n.
func settle(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func line(s string) string { return fmt.Sprintf(`{"event":%q}`+"\n", s) }

func TestServeSocketMode(t *testing.T) {
	// Even with a permissive umask the socket is never open to others.
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(filepath.Dir(socketPath(t)), "run", "intransit")
	socket := filepath.Join(dir, "api.sock")
	stop, err := Serve(context.Background(), socket, &fakeBackend{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	fi, err := os.Lstat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a 0600 socket", fi.Mode())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode %v, want 0700", di.Mode().Perm())
	}
}

func TestStatus(t *testing.T) {
	want := Status{Version: "1.2.3", PID: 42, Started: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Ready: true,
		Cgroup: "/sys/fs/cgroup", Proxy: []string{"127.0.0.1:15001"}, Rules: []Rule{{Name: "r", Mode: "enforce", Ports: []int{80}}},
		Connections: map[string]uint64{"r/UPGRADED": 3}, ActiveSessions: []Session{{ID: "00000000000000a1", Comm: "curl"}}}
	socket, _ := serve(t, &fakeBackend{status: want})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := GetStatus(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("status:\ngot  %+v\nwant %+v", got, want)
	}
}

func TestRecordings(t *testing.T) {
	b := &fakeBackend{recordings: Recordings{Dir: "/var/lib/intransit/recordings", KeyFile: "/etc/intransit/key", Active: []string{"00000000000000a1"}}}
	socket, _ := serve(t, b)
	c := NewClient(socket)
	ctx := context.Background()
	got, err := c.Recordings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, b.recordings) {
		t.Errorf("recordings %+v, want %+v", got, b.recordings)
	}

	b.mu.Lock()
	b.recErr = errors.New("no rule records sessions (rules[].record)")
	b.mu.Unlock()
	_, err = c.Recordings(ctx)
	if err == nil || err.Error() != "agent /v1/recordings: 404 Not Found: no rule records sessions (rules[].record)" {
		t.Errorf("backend error: %v", err)
	}

	if _, err := NewClient(filepath.Join(t.TempDir(), "none.sock")).Recordings(ctx); err == nil || !strings.Contains(err.Error(), "reach the agent at ") {
		t.Errorf("no agent: %v", err)
	}
}

func TestAuditRecent(t *testing.T) {
	b := &fakeBackend{}
	b.publish(line("a"))
	b.publish(`{"event":"no newline"}`) // a line without its newline still ends one
	b.publish("")
	b.publish(line("c"))
	socket, _ := serve(t, b)
	body, err := NewClient(socket).Audit(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	got, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	if want := line("a") + line("no newline") + line("c"); string(got) != want {
		t.Errorf("recent:\ngot  %q\nwant %q", got, want)
	}
	if b.subscribed != 0 {
		t.Errorf("subscribed without follow")
	}
}

// readLines reads n lines from br.
func readLines(t *testing.T, br *bufio.Reader, n int) []string {
	t.Helper()
	var out []string
	for range n {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", out, err)
		}
		out = append(out, l)
	}
	return out
}

func TestAuditFollow(t *testing.T) {
	b := &fakeBackend{}
	b.publish(line("old-1"))
	b.publish(line("old-2"))
	// A line logged after the subscription but before the ring is read is
	// in both: it must be sent once, not lost and not twice.
	b.onSubscribe = func() { b.publish(line("between")) }
	socket, _ := serve(t, b)
	before := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body, err := NewClient(socket).Audit(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	br := bufio.NewReader(body)
	got := readLines(t, br, 3)
	if want := []string{line("old-1"), line("old-2"), line("between")}; !reflect.DeepEqual(got, want) {
		t.Errorf("recent: %q, want %q", got, want)
	}
	waitFor(t, "the subscription", func() bool { return b.subscribers() == 1 })
	b.publish(line("new-1"))
	b.publish(line("new-2"))
	got = readLines(t, br, 2)
	if want := []string{line("new-1"), line("new-2")}; !reflect.DeepEqual(got, want) {
		t.Errorf("followed: %q, want %q", got, want)
	}

	// The client goes away: the handler ends, unsubscribes, and nothing is
	// left running.
	cancel()
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("read after cancel succeeded")
	}
	body.Close()
	waitFor(t, "the unsubscription", func() bool { return b.subscribers() == 0 })
	settle(t, before)
}

func TestAuditFollowSubscriptionEnds(t *testing.T) {
	b := &fakeBackend{}
	b.publish(line("old"))
	socket, _ := serve(t, b)
	before := runtime.NumGoroutine()
	body, err := NewClient(socket).Audit(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	waitFor(t, "the subscription", func() bool { return b.subscribers() == 1 })
	b.publish(line("last"))
	b.closeSubscribers() // the agent is stopping
	got, err := io.ReadAll(body)
	if err != nil {
		t.Fatalf("stream did not end cleanly: %v", err)
	}
	if want := line("old") + line("last"); string(got) != want {
		t.Errorf("stream %q, want %q", got, want)
	}
	body.Close()
	settle(t, before)
}

// TestAuditFollowNoLoss connects while lines are being logged: every line
// arrives once, in order, with no gap between the recent ones and the
// followed ones.
func TestAuditFollowNoLoss(t *testing.T) {
	const n = 2000
	b := &fakeBackend{bufSize: n}
	socket, _ := serve(t, b)
	started := make(chan struct{})
	go func() {
		for i := range n {
			if i == n/4 {
				close(started)
			}
			b.publish(line(fmt.Sprint(i)))
			if i%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body, err := NewClient(socket).Audit(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	got := readLines(t, bufio.NewReader(body), n)
	for i, l := range got {
		if l != line(fmt.Sprint(i)) {
			t.Fatalf("line %d is %q", i, l)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drops != 0 {
		t.Errorf("%d lines dropped", b.drops)
	}
}

func TestServeTwice(t *testing.T) {
	socket, _ := serve(t, &fakeBackend{status: Status{PID: 1}})
	stop, err := Serve(context.Background(), socket, &fakeBackend{status: Status{PID: 2}}, nil)
	if err == nil {
		stop()
		t.Fatal("second Serve on a live socket succeeded")
	}
	if !strings.Contains(err.Error(), "another agent is serving it") {
		t.Errorf("second Serve: %v", err)
	}
	// The first agent still answers.
	st, err := GetStatus(context.Background(), socket)
	if err != nil || st.PID != 1 {
		t.Errorf("first agent after the second Serve: %v, pid %d", err, st.PID)
	}
}

func TestServeStaleSocket(t *testing.T) {
	socket := socketPath(t)
	// A killed agent leaves its socket file behind.
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(socket); err != nil {
		t.Fatal(err)
	}
	stop, err := Serve(context.Background(), socket, &fakeBackend{status: Status{PID: 3}}, nil)
	if err != nil {
		t.Fatalf("Serve over a stale socket: %v", err)
	}
	defer stop()
	if fi, err := os.Lstat(socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("replaced socket: %v %v", err, fi.Mode())
	}
	if st, err := GetStatus(context.Background(), socket); err != nil || st.PID != 3 {
		t.Errorf("status over the replaced socket: %v, pid %d", err, st.PID)
	}
}

func TestServeNotASocket(t *testing.T) {
	socket := socketPath(t)
	if err := os.WriteFile(socket, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	stop, err := Serve(context.Background(), socket, &fakeBackend{}, nil)
	if err == nil {
		stop()
		t.Fatal("Serve replaced a regular file")
	}
	if !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Serve over a file: %v", err)
	}
	if b, _ := os.ReadFile(socket); string(b) != "precious" {
		t.Errorf("file changed: %q", b)
	}
}

func TestServeStop(t *testing.T) {
	for _, how := range []string{"stop", "context"} {
		t.Run(how, func(t *testing.T) {
			socket := socketPath(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stop, err := Serve(ctx, socket, &fakeBackend{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			if _, err := GetStatus(context.Background(), socket); err != nil {
				t.Fatal(err)
			}
			if how == "stop" {
				stop()
			} else {
				cancel()
			}
			waitFor(t, "the socket to go", func() bool {
				_, err := os.Lstat(socket)
				return errors.Is(err, os.ErrNotExist)
			})
			if _, err := GetStatus(context.Background(), socket); err == nil {
				t.Error("status after stop")
			}
			// The path can be served again.
			stop2, err := Serve(context.Background(), socket, &fakeBackend{}, nil)
			if err != nil {
				t.Fatalf("serve again: %v", err)
			}
			stop2()
		})
	}
}
