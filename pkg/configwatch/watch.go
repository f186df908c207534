// Package configwatch reloads the configuration while the agent runs: a
// Watcher notices changes in the configuration directories (inotify, or
// polling when inotify is not available) and a Reloader re-reads the files,
// skips content it has already seen, and applies the rest one reload at a
// time, keeping the running configuration when a reload fails.
package configwatch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for Options.
const (
	DefaultDebounce     = 200 * time.Millisecond
	DefaultMaxDelay     = 2 * time.Second
	DefaultPollInterval = 2 * time.Second
)

// Modes reported by Watcher.Mode.
const (
	ModeStarting = ""
	ModeInotify  = "inotify"
	ModePoll     = "poll"
)

// Options configure a Watcher.
type Options struct {
	// Dirs are the directories to watch. Their entries are watched, not
	// what symlinks in them point to: a ConfigMap update renames ..data
	// inside the directory, which is seen.
	Dirs []string
	// OnChange is called, never concurrently, when the directories may have
	// changed: once when the watch is in place (to catch up with changes
	// made before), after a burst of events has been quiet for Debounce, and
	// on every poll. It must compare contents itself (Reloader does).
	OnChange func()
	// Debounce is the quiet time that ends a burst of events (default
	// 200ms); MaxDelay bounds how long a continuous stream of events can
	// hold OnChange back (default 2s).
	Debounce, MaxDelay time.Duration
	// PollInterval is the polling period when inotify is not available
	// (default 2s).
	PollInterval time.Duration
	// Poll skips inotify.
	Poll   bool
	Logger *slog.Logger
}

// Watcher calls OnChange when the configuration directories change.
type Watcher struct {
	o    Options
	mode atomic.Value // string
}

// NewWatcher returns a Watcher; Run starts it.
func NewWatcher(o Options) *Watcher {
	if o.Debounce <= 0 {
		o.Debounce = DefaultDebounce
	}
	if o.MaxDelay < o.Debounce {
		o.MaxDelay = max(DefaultMaxDelay, o.Debounce)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.OnChange == nil {
		o.OnChange = func() {}
	}
	w := &Watcher{o: o}
	w.mode.Store(ModeStarting)
	return w
}

// Mode is how the watcher is watching: ModeInotify or ModePoll (ModeStarting
// before Run has set up).
func (w *Watcher) Mode() string { return w.mode.Load().(string) }

// Run watches until ctx is done. If inotify cannot be used, or a watched
// directory goes away (removed, replaced, unmounted), it polls instead.
func (w *Watcher) Run(ctx context.Context) {
	if !w.o.Poll {
		err := w.runInotify(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		w.o.Logger.Warn("config watch: inotify unavailable, polling instead", "every", w.o.PollInterval, "error", err)
	}
	w.runPoll(ctx)
}

func (w *Watcher) runPoll(ctx context.Context) {
	w.mode.Store(ModePoll)
	w.o.OnChange() // the content may have changed while the watch was lost
	t := time.NewTicker(w.o.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.o.OnChange()
		}
	}
}

// watchMask is every change of a directory entry: a ConfigMap update
// (create a directory and a symlink, rename the symlink over ..data, delete
// the old directory), an editor's write-and-rename, an in-place write
// (reported once, when the writer closes), chmod and touch.
const watchMask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_CLOSE_WRITE |
	unix.IN_DELETE | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// errWatchLost means a watched directory went away.
var errWatchLost = errors.New("a watched directory was removed, moved or unmounted")

// runInotify returns nil when ctx is done, or an error when inotify cannot
// (or can no longer) watch every directory.
func (w *Watcher) runInotify(ctx context.Context) error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("inotify_init1: %w", err)
	}
	// Non-blocking, so reads go through the runtime poller and Close
	// interrupts them.
	f := os.NewFile(uintptr(fd), "inotify")
	defer f.Close()
	for _, d := range w.o.Dirs {
		if _, err := unix.InotifyAddWatch(fd, d, watchMask); err != nil {
			return fmt.Errorf("watch %s: %w", d, err)
		}
	}
	w.mode.Store(ModeInotify)
	w.o.Logger.Debug("config watch: watching with inotify", "dirs", w.o.Dirs)
	w.o.OnChange()

	kick := make(chan struct{}, 1)
	lost := make(chan error, 1)
	go readEvents(f, kick, lost)
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var first time.Time // first event of the pending burst; zero: none
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-lost:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case <-kick:
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			timer.Reset(min(w.o.Debounce, max(first.Add(w.o.MaxDelay).Sub(now), 0)))
		case <-timer.C:
			first = time.Time{}
			w.o.OnChange()
		}
	}
}

// readEvents signals kick (coalesced) for every batch of events, and lost
// when a watch is gone or the descriptor fails.
func readEvents(f *os.File, kick chan<- struct{}, lost chan<- error) {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := f.Read(buf)
		if err != nil {
			lost <- fmt.Errorf("read inotify events: %w", err)
			return
		}
		gone := false
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			off += unix.SizeofInotifyEvent + nameLen
			if mask&(unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_UNMOUNT) != 0 {
				gone = true
			}
		}
		if gone {
			lost <- errWatchLost
			return
		}
		select {
		case kick <- struct{}{}:
		default:
		}
	}
}
