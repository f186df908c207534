package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

const (
	queueSize = 4096
	// When the queue is full Log waits for the writer (backpressure rather
	// than a gap in the audit trail), but drops and counts the line once the
	// writer has made no progress for stallWait, or after maxEnqueueWait in
	// any case, so a wedged writer cannot hang the data path.
	stallWait      = time.Second
	maxEnqueueWait = 5 * time.Second
	// writeTimeout applies to writers that support deadlines (pipes, sockets).
	writeTimeout = 10 * time.Second
	// controlWait bounds Reopen and Close so a wedged writer cannot hang
	// signal handling or shutdown.
	controlWait = 5 * time.Second
	// reportEvery rate-limits error reports so a full disk does not flood logs.
	reportEvery = time.Minute
	// maxPooledBuf keeps one oversized event from pinning memory in the pool.
	maxPooledBuf = 64 << 10
)

var errClosed = errors.New("audit: logger closed")

// item is one unit of work for the writer goroutine: a line or a control
// function, processed in order so Reopen and Close flush earlier lines.
type item struct {
	line []byte
	ctl  func()
	stop bool
}

type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

// Logger writes audit events as JSON lines. Log does no I/O itself: lines go
// through a bounded queue to a single writer goroutine, which issues one
// Write per line so concurrent appenders never interleave partial lines.
type Logger struct {
	path  string // reopenable file path, "" for stdout or a plain writer
	queue chan item
	done  chan struct{} // closed when the writer goroutine has exited

	closed   atomic.Bool
	written  atomic.Uint64 // lines handled by the writer; shows it is alive
	closeErr error         // written by the writer goroutine before done is closed

	// Owned by the writer goroutine.
	w io.Writer
	f *os.File // non-nil when the logger owns (and closes) the file

	encoders sync.Pool

	errs    atomic.Uint64
	errLog  atomic.Pointer[slog.Logger]
	rmu     sync.Mutex
	lastRep time.Time

	fan fanout
}

// Open appends to the file at path, creating it with mode 0600. "-" means
// stdout, which is never closed. The parent directory must already exist.
func Open(path string) (*Logger, error) {
	if path == "-" {
		return New(os.Stdout), nil
	}
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	l := newLogger(f)
	l.path = path
	l.f = f
	return l, nil
}

// New writes audit lines to w. The caller keeps ownership of w; Reopen is a
// no-op for such loggers.
func New(w io.Writer) *Logger {
	return newLogger(w)
}

func newLogger(w io.Writer) *Logger {
	l := &Logger{
		queue: make(chan item, queueSize),
		done:  make(chan struct{}),
		w:     w,
	}
	l.encoders.New = func() any {
		e := &encoder{}
		e.enc = json.NewEncoder(&e.buf)
		return e
	}
	go l.run()
	return l
}

func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("audit: open %s: directory %s does not exist: %w", path, filepath.Dir(path), err)
		}
		return nil, fmt.Errorf("audit: open %s: %w", path, err)
	}
	return f, nil
}

// SetErrorLog sets where write errors are reported (default: slog.Default()).
func (l *Logger) SetErrorLog(log *slog.Logger) {
	l.errLog.Store(log)
}

// Errors returns how many lines failed to encode, were dropped or failed to
// be written.
func (l *Logger) Errors() uint64 {
	return l.errs.Load()
}

// Log records e. It is safe for concurrent use and fills Time when zero.
// It only waits when the queue is full, and never longer than
// maxEnqueueWait; a line that cannot be queued is dropped and counted.
func (l *Logger) Log(e Event) {
	if l.closed.Load() {
		l.fail(errClosed)
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	line, err := l.encode(sanitize(e))
	if err != nil {
		l.fail(err)
		return
	}
	l.fan.publish(line)
	l.enqueue(item{line: line})
}

func (l *Logger) encode(e Event) ([]byte, error) {
	enc := l.encoders.Get().(*encoder)
	enc.buf.Reset()
	defer func() {
		if enc.buf.Cap() <= maxPooledBuf {
			l.encoders.Put(enc)
		}
	}()
	// Encode escapes control characters, so the only newline is the
	// terminating one and one event is always exactly one line.
	if err := enc.enc.Encode(e); err != nil {
		return nil, fmt.Errorf("audit: encode %s event: %w", e.Event, err)
	}
	// Copy out: the line outlives the pooled buffer (queue, ring, subscribers).
	return bytes.Clone(enc.buf.Bytes()), nil
}

func (l *Logger) enqueue(it item) {
	select {
	case l.queue <- it:
		return
	default:
	}
	start := time.Now()
	t := time.NewTimer(stallWait)
	defer t.Stop()
	for {
		seen := l.written.Load()
		select {
		case l.queue <- it:
			return
		case <-l.done:
			l.fail(errClosed)
			return
		case <-t.C:
			if l.written.Load() == seen || time.Since(start) >= maxEnqueueWait {
				l.fail(errors.New("audit: writer stalled, line dropped"))
				return
			}
			t.Reset(stallWait)
		}
	}
}

// Reopen reopens the file path so a rotated file is released (SIGHUP).
// Lines logged before the call are written to the old file first. It is a
// no-op for stdout and plain writers.
func (l *Logger) Reopen() error {
	if l.path == "" {
		return nil
	}
	res := make(chan error, 1)
	if err := l.control(item{ctl: func() { res <- l.reopen() }}); err != nil {
		return err
	}
	select {
	case err := <-res:
		return err
	case <-l.done:
		return errClosed
	case <-time.After(controlWait):
		return fmt.Errorf("audit: reopen %s: writer stuck for %s", l.path, controlWait)
	}
}

// Close flushes queued lines, closes the file (not stdout or a caller's
// writer) and ends all subscriptions.
func (l *Logger) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	defer l.fan.closeSubscribers()
	if err := l.control(item{stop: true}); err != nil {
		return err
	}
	select {
	case <-l.done:
		return l.closeErr
	case <-time.After(controlWait):
		return fmt.Errorf("audit: close: writer stuck for %s", controlWait)
	}
}

func (l *Logger) control(it item) error {
	select {
	case l.queue <- it:
		return nil
	case <-l.done:
		return errClosed
	case <-time.After(controlWait):
		return fmt.Errorf("audit: write queue full for %s", controlWait)
	}
}

// maxBatch bounds how many bytes of queued lines go out in one write.
const maxBatch = 64 << 10

// run is the single writer goroutine. Lines already queued are written
// together: under load one write(2) carries many whole lines instead of
// one each (lines never split across writes, so readers never see a torn
// line), and a quiet trail still writes each line at once.
func (l *Logger) run() {
	defer close(l.done)
	var batch []byte
	lines := 0
	flush := func() {
		if len(batch) > 0 {
			l.write(batch, lines)
			batch, lines = batch[:0], 0
		}
	}
	for it := range l.queue {
		for {
			switch {
			case it.stop:
				flush()
				if l.f != nil {
					if err := l.f.Close(); err != nil {
						l.closeErr = fmt.Errorf("audit: close %s: %w", l.path, err)
					}
				}
				return
			case it.ctl != nil:
				flush() // lines logged before a reopen go to the old file
				it.ctl()
			default:
				batch = append(batch, it.line...)
				lines++
			}
			if len(batch) >= maxBatch {
				flush()
			}
			var more bool
			select {
			case it, more = <-l.queue:
			default:
			}
			if !more {
				break
			}
		}
		flush()
		if cap(batch) > 4*maxBatch {
			batch = nil // don't keep a burst's buffer forever
		}
	}
}

type writeDeadliner interface {
	SetWriteDeadline(time.Time) error
}

// write writes a batch of whole lines; on failure each line counts as an
// error.
func (l *Logger) write(batch []byte, lines int) {
	if d, ok := l.w.(writeDeadliner); ok {
		// Regular files report ErrNoDeadline; they do not block forever.
		_ = d.SetWriteDeadline(time.Now().Add(writeTimeout))
	}
	if _, err := l.w.Write(batch); err != nil {
		l.failN(fmt.Errorf("audit: write: %w", err), lines)
	}
	l.written.Add(uint64(lines)) // progress, even if failed: the writer is not wedged
}

func (l *Logger) reopen() error {
	f, err := openFile(l.path)
	if err != nil {
		return err // keep writing to the old file rather than losing lines
	}
	old := l.f
	l.f, l.w = f, f
	if err := old.Close(); err != nil {
		return fmt.Errorf("audit: close previous %s: %w", l.path, err)
	}
	return nil
}

// fail counts an error and reports it at most once per reportEvery.
func (l *Logger) fail(err error) { l.failN(err, 1) }

func (l *Logger) failN(err error, lines int) {
	n := l.errs.Add(uint64(lines))
	l.rmu.Lock()
	now := time.Now()
	report := l.lastRep.IsZero() || now.Sub(l.lastRep) >= reportEvery
	if report {
		l.lastRep = now
	}
	l.rmu.Unlock()
	if !report {
		return
	}
	log := l.errLog.Load()
	if log == nil {
		log = slog.Default()
	}
	log.Warn("audit trail error", "err", err, "errors_total", n)
}
