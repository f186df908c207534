package configwatch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/intransit/intransit/internal/testutil"
	"github.com/intransit/intransit/pkg/config"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, []byte(data), 0o600))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func rule(name string, port int) string {
	return fmt.Sprintf("rules: [{name: %s, ports: [%d], mode: audit}]\n", name, port)
}

// live is a Reloader and its Watcher running over real files.
type live struct {
	r       *Reloader
	w       *Watcher
	log     *syncBuffer
	applied atomic.Int64
	mu      sync.Mutex
	rules   []string // of the last applied config
	errs    []error  // every refused reload
	seq     []string
	refuse  func(*config.Config) error
}

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

func startLive(t *testing.T, src config.Sources, o Options) *live {
	t.Helper()
	l := &live{log: &syncBuffer{}}
	l.r = &Reloader{
		Sources: src,
		Logger:  slog.New(slog.NewJSONHandler(l.log, nil)),
		Before: func() {
			l.mu.Lock()
			l.seq = append(l.seq, "before")
			l.mu.Unlock()
		},
		Apply: func(c *config.Config) error {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.seq = append(l.seq, "apply")
			if l.refuse != nil {
				if err := l.refuse(c); err != nil {
					return err
				}
			}
			l.applied.Add(1)
			l.rules = nil
			for _, r := range c.Rules {
				l.rules = append(l.rules, r.Name)
			}
			return nil
		},
		After: func(_ *config.Config, err error) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.seq = append(l.seq, "after")
			if err != nil {
				l.errs = append(l.errs, err)
			}
		},
	}
	if _, err := l.r.Load(); err != nil {
		t.Fatal(err)
	}
	if o.Debounce == 0 {
		o.Debounce = 50 * time.Millisecond
	}
	l.w = l.r.Watcher(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, time.Second, "watcher set up", func() bool { return l.w.Mode() != ModeStarting })
	return l
}

func (l *live) state() (applied int64, rules []string, errs []error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.applied.Load(), slices.Clone(l.rules), slices.Clone(l.errs)
}

// expect waits for the nth applied reload with the given rules, then checks
// that no other reload follows.
func (l *live) expect(t *testing.T, n int64, rules ...string) {
	t.Helper()
	eventually(t, 2*time.Second, fmt.Sprintf("reload #%d with rules %v", n, rules), func() bool {
		a, r, _ := l.state()
		return a >= n && slices.Equal(r, rules)
	})
	time.Sleep(400 * time.Millisecond) // several debounce periods
	if a, r, _ := l.state(); a != n || !slices.Equal(r, rules) {
		t.Fatalf("%d reloads (rules %v), want exactly %d (rules %v)", a, r, n, rules)
	}
}

func (l *live) expectNoReload(t *testing.T, n int64) {
	t.Helper()
	time.Sleep(400 * time.Millisecond)
	if a, _, errs := l.state(); a != n || len(errs) != 0 {
		t.Fatalf("%d reloads, %d refused; want %d and none refused", a, len(errs), n)
	}
}

func eventually(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConfigMapUpdateReloadsOnce(t *testing.T) {
	cm := testutil.NewConfigMap(t, t.TempDir(), map[string]string{"intransit.yaml": rule("a", 80)})
	l := startLive(t, config.Sources{Dir: cm.Dir}, Options{})
	if l.w.Mode() != ModeInotify {
		t.Fatalf("mode %q, want inotify", l.w.Mode())
	}

	cm.Update(map[string]string{"intransit.yaml": rule("b", 80)})
	l.expect(t, 1, "b")

	// A new timestamped directory with the same content: events, no reload.
	cm.Update(map[string]string{"intransit.yaml": rule("b", 80)})
	l.expectNoReload(t, 1)

	// A key added, then one removed: one reload each.
	cm.Update(map[string]string{"intransit.yaml": rule("b", 80), "20-extra.yaml": rule("c", 81)})
	l.expect(t, 2, "c", "b") // 20-extra.yaml sorts first
	cm.Update(map[string]string{"20-extra.yaml": rule("c", 81)})
	l.expect(t, 3, "c")

	// A ConfigMap holding the main file, the way a DaemonSet mounts it with
	// --config pointing into the volume.
	if got := l.r.Sources.WatchDirs(); !slices.Equal(got, []string{cm.Dir}) {
		t.Errorf("WatchDirs = %v", got)
	}
}

func TestConfigMapMainFile(t *testing.T) {
	cm := testutil.NewConfigMap(t, t.TempDir(), map[string]string{"intransit.yaml": rule("a", 80)})
	l := startLive(t, config.Sources{Base: filepath.Join(cm.Dir, "intransit.yaml")}, Options{})
	cm.Update(map[string]string{"intransit.yaml": rule("b", 80)})
	l.expect(t, 1, "b")
}

func TestPlainFileEdits(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "intransit.yaml")
	writeFile(t, base, rule("a", 80))
	dropDir := filepath.Join(dir, "conf.d")
	must(t, os.Mkdir(dropDir, 0o755))
	l := startLive(t, config.Sources{Base: base, Dir: dropDir}, Options{})

	// In place (open, truncate, write, close).
	writeFile(t, base, rule("b", 80))
	l.expect(t, 1, "b")

	// Editor style: write a temporary file, rename it over the original.
	writeFile(t, base+".tmp", rule("c", 80))
	must(t, os.Rename(base+".tmp", base))
	l.expect(t, 2, "c")

	// Touch, chmod and a rewrite with the same bytes: no reload.
	now := time.Now().Add(time.Minute)
	must(t, os.Chtimes(base, now, now))
	must(t, os.Chmod(base, 0o644))
	writeFile(t, base, rule("c", 80))
	l.expectNoReload(t, 2)

	// A drop-in appears, is edited, goes away.
	writeFile(t, filepath.Join(dropDir, "10-more.yaml"), rule("d", 81))
	l.expect(t, 3, "c", "d")
	writeFile(t, filepath.Join(dropDir, "10-more.yaml"), rule("e", 81))
	l.expect(t, 4, "c", "e")
	must(t, os.Remove(filepath.Join(dropDir, "10-more.yaml")))
	l.expect(t, 5, "c")

	// Files the loader ignores change nothing.
	writeFile(t, filepath.Join(dropDir, "notes.txt"), "hello")
	writeFile(t, filepath.Join(dropDir, ".10-more.yaml.swp"), "garbage")
	l.expectNoReload(t, 5)
}

// A bad update is refused once, with the file and key, and the previous
// configuration is kept; later events with the same content stay quiet; a
// SIGHUP retries; fixing the file applies.
func TestBadUpdateRefusedOnce(t *testing.T) {
	cm := testutil.NewConfigMap(t, t.TempDir(), map[string]string{"intransit.yaml": rule("a", 80)})
	l := startLive(t, config.Sources{Dir: cm.Dir}, Options{})

	cm.Update(map[string]string{"intransit.yaml": rule("a", 80), "extra.yaml": "rules: [{name: b, ports: [81], mode: audit, mdoe: deny}]\n"})
	want := filepath.Join(cm.Dir, "extra.yaml") + `: unknown key "rules[0].mdoe" (did you mean "mode"?)`
	eventually(t, 2*time.Second, "refused reload", func() bool { _, _, errs := l.state(); return len(errs) > 0 })
	now := time.Now().Add(time.Minute)
	must(t, os.Chtimes(filepath.Join(cm.Dir, "extra.yaml"), now, now))
	time.Sleep(400 * time.Millisecond)
	applied, _, errs := l.state()
	if applied != 0 || len(errs) != 1 || errs[0].Error() != want {
		t.Fatalf("applied %d, refused %v; want one refusal %q", applied, errs, want)
	}
	// The log line says what happened, which file and which key.
	var logged map[string]any
	for line := range strings.SplitSeq(l.log.String(), "\n") {
		if strings.Contains(line, "reload refused") {
			must(t, json.Unmarshal([]byte(line), &logged))
		}
	}
	if logged["level"] != "ERROR" || logged["trigger"] != "file change" || logged["error"] != want {
		t.Errorf("log: %v", logged)
	}

	if err := l.r.Reload("SIGHUP"); err == nil || err.Error() != want {
		t.Errorf("SIGHUP reload: %v", err)
	}
	if _, _, errs := l.state(); len(errs) != 2 {
		t.Errorf("SIGHUP must retry even unchanged content: %d refusals", len(errs))
	}

	cm.Update(map[string]string{"intransit.yaml": rule("a", 80), "extra.yaml": rule("b", 81)})
	l.expect(t, 1, "b", "a")

	// Apply refusing (the agent keeps its config) is reported the same way.
	l.mu.Lock()
	l.refuse = func(*config.Config) error {
		return errors.New("reload refused, keeping the running config: [proxy.port] change only with a restart")
	}
	l.mu.Unlock()
	cm.Update(map[string]string{"intransit.yaml": rule("a", 80) + "proxy: {port: 15099}\n", "extra.yaml": rule("b", 81)})
	eventually(t, 2*time.Second, "refused reload", func() bool { _, _, errs := l.state(); return len(errs) == 3 })
	if _, r, errs := l.state(); !slices.Equal(r, []string{"b", "a"}) || !strings.Contains(errs[2].Error(), "proxy.port") {
		t.Errorf("rules %v, error %v", r, errs[2])
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	// Each reload: before, apply unless the files were refused, after.
	if seq := strings.Join(l.seq, " ") + " "; !regexp.MustCompile(`^(before (apply )?after )+$`).MatchString(seq) || strings.Count(seq, "before") != 4 {
		t.Errorf("hooks: %v, want 4 reloads each as before [apply] after", l.seq)
	}
}

func TestPollingFallback(t *testing.T) {
	cm := testutil.NewConfigMap(t, t.TempDir(), map[string]string{"intransit.yaml": rule("a", 80)})
	l := startLive(t, config.Sources{Dir: cm.Dir}, Options{Poll: true, PollInterval: 100 * time.Millisecond})
	if l.w.Mode() != ModePoll {
		t.Fatalf("mode %q, want poll", l.w.Mode())
	}
	cm.Update(map[string]string{"intransit.yaml": rule("b", 80)})
	l.expect(t, 1, "b") // and no reload at the following polls
	dir := t.TempDir()
	base := filepath.Join(dir, "intransit.yaml")
	writeFile(t, base, rule("a", 80))
	l = startLive(t, config.Sources{Base: base}, Options{Poll: true, PollInterval: 100 * time.Millisecond})
	writeFile(t, base, rule("b", 80))
	l.expect(t, 1, "b")
}

func TestInotifyFailureFallsBackToPolling(t *testing.T) {
	dir := t.TempDir()
	var calls atomic.Int64
	w := NewWatcher(Options{Dirs: []string{dir, filepath.Join(dir, "missing")}, PollInterval: 50 * time.Millisecond,
		OnChange: func() { calls.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	eventually(t, time.Second, "polling", func() bool { return w.Mode() == ModePoll && calls.Load() >= 3 })
}

func TestWatchedDirRemovedFallsBackToPolling(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "conf.d")
	must(t, os.Mkdir(dir, 0o755))
	var calls atomic.Int64
	w := NewWatcher(Options{Dirs: []string{dir}, PollInterval: 50 * time.Millisecond, OnChange: func() { calls.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	eventually(t, time.Second, "inotify", func() bool { return w.Mode() == ModeInotify })
	must(t, os.RemoveAll(dir))
	eventually(t, time.Second, "polling after the directory went away", func() bool { return w.Mode() == ModePoll })
	n := calls.Load()
	must(t, os.Mkdir(dir, 0o755)) // polling notices whatever comes next
	eventually(t, time.Second, "polls", func() bool { return calls.Load() >= n+3 })
}

func TestDebounce(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var calls []time.Time
	w := NewWatcher(Options{Dirs: []string{dir}, Debounce: 150 * time.Millisecond, MaxDelay: 10 * time.Second,
		OnChange: func() { mu.Lock(); calls = append(calls, time.Now()); mu.Unlock() }})
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(calls) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	eventually(t, time.Second, "catch-up call", func() bool { return count() == 1 })

	// A burst of 8 writes 30ms apart: one call, 150ms after the last.
	var last time.Time
	for i := range 8 {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("f%d.yaml", i)), "x")
		last = time.Now()
		time.Sleep(30 * time.Millisecond)
	}
	eventually(t, 2*time.Second, "debounced call", func() bool { return count() == 2 })
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 {
		t.Fatalf("%d calls for one burst, want 1 (after the catch-up)", len(calls)-1)
	}
	if d := calls[1].Sub(last); d < 140*time.Millisecond {
		t.Errorf("called %v after the last event, want at least the 150ms debounce", d)
	}
}

func TestMaxDelay(t *testing.T) {
	dir := t.TempDir()
	var calls atomic.Int64
	w := NewWatcher(Options{Dirs: []string{dir}, Debounce: 200 * time.Millisecond, MaxDelay: 400 * time.Millisecond,
		OnChange: func() { calls.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	eventually(t, time.Second, "catch-up call", func() bool { return calls.Load() == 1 })
	// Events every 50ms for 1.6s never leave 200ms of quiet: only MaxDelay
	// lets OnChange run during the stream.
	for i := range 32 {
		writeFile(t, filepath.Join(dir, "f.yaml"), fmt.Sprint(i))
		time.Sleep(50 * time.Millisecond)
	}
	if n := calls.Load() - 1; n < 2 {
		t.Errorf("%d calls during a 1.6s stream of events, want at least 2 (MaxDelay 400ms)", n)
	}
}
