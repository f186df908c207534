// Package recorder records one live session: it follows both byte streams
// as the relay moves them, recognises HTTP/1.x exchanges, redacts secrets
// and appends the result to a recording. Nothing reaches the recording
// before it is redacted.
package recorder

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/intransit/intransit/pkg/httpstream"
	"github.com/intransit/intransit/pkg/recording"
	"github.com/intransit/intransit/pkg/redact"
)

const (
	// maxJSONBody is the largest JSON body redacted as a document (field
	// names at any depth); larger ones are redacted as a stream.
	maxJSONBody = 1 << 20
	// directPayload: a body or data piece at least this large is appended
	// to the recording straight from the redactor's output instead of being
	// copied into the direction's arena first (bulk streams: one copy less,
	// and no bulk-sized arena kept per session).
	directPayload = 16 << 10
	// maxArena: a larger arena is not kept after a commit.
	maxArena = 64 << 10
	// maxBacklog bounds what is held in memory while the store is full
	// (flushes fail with recording.ErrStoreFull and keep their chunks):
	// past it, stream chunks are no longer recorded.
	maxBacklog = 4 << 20
)

// Options configure a recorder.
type Options struct {
	Full     bool // record the byte streams, not only metadata
	Redactor *redact.Redactor
	// MaskHeaders are masked whatever the redaction policy says: the
	// injected credential's header. They are masked in parsed heads, and
	// also as "Name: value" lines and as JSON keys or form fields wherever
	// else recorded bytes carry them (a head that fell back to raw, a
	// TRACE or echo response body).
	MaskHeaders []string
	// OnError: true ends the session when the recording cannot be
	// written (recordings.onError: close).
	CloseOnError bool
	// Failed is called once when the recording stops because of a write
	// error (to audit it). It may be nil. It is not called with the
	// recorder's lock held.
	Failed func(error)
}

// Recorder records one session. Tap is safe for concurrent use by the two
// relay directions (one goroutine each); Finish must be called once, after
// the last Tap.
type Recorder struct {
	o    Options
	mask *redact.Redactor // MaskHeaders as a policy, or nil
	dir  [2]*direction    // by recording.Dir - 1

	// stopped: nothing more will be recorded (cap reached, write error,
	// finished): Tap skips parsing and redaction.
	stopped atomic.Bool

	mu        sync.Mutex
	w         *recording.Writer
	truncated bool  // stream chunks no longer recorded: per-session cap or store full
	failed    error // write error: recording stopped
	finished  bool
	flushedAt int64 // w.Size() after the last successful flush
}

// Start creates the recording and writes its metadata.
func Start(store *recording.Store, meta recording.Meta, o Options) (*Recorder, error) {
	if o.Redactor == nil {
		return nil, errors.New("recorder: no redactor")
	}
	r := &Recorder{o: o}
	if names := tokens(o.MaskHeaders); o.Full && len(names) > 0 {
		m, err := redact.New(redact.Policy{Headers: names, JSONFields: names})
		if err != nil {
			return nil, fmt.Errorf("recorder: mask headers: %w", err)
		}
		r.mask = m
	}
	w, err := store.Create(meta)
	if err != nil {
		return nil, err
	}
	if err := w.Flush(); err != nil {
		_ = w.Abandon()
		return nil, err
	}
	r.w, r.flushedAt = w, w.Size()
	if o.Full {
		x := httpstream.NewExchanges()
		r.dir[0] = newDirection(r, recording.DirClientToServer, httpstream.NewRequestParser(x))
		r.dir[1] = newDirection(r, recording.DirServerToClient, httpstream.NewResponseParser(x))
	}
	return r, nil
}

// tokens returns the names that can be header names (RFC 9110 tokens):
// only those can be masked as headers, the others never match a parsed
// head.
func tokens(names []string) []string {
	var out []string
	for _, n := range names {
		ok := n != "" && len(n) <= 256
		for i := 0; ok && i < len(n); i++ {
			c := n[i]
			ok = c > ' ' && c < 0x7f && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, rune(c))
		}
		if ok {
			out = append(out, n)
		}
	}
	return out
}

// ID is the recording's (and session's) id.
func (r *Recorder) ID() string { return r.w.ID() }

// Tap records bytes the relay has written; toUpstream is the client's
// direction. It returns an error only when the recording failed and the
// policy is to close the session.
func (r *Recorder) Tap(toUpstream bool, p []byte) error {
	d := r.dir[1]
	if toUpstream {
		d = r.dir[0]
	}
	if d == nil {
		return nil
	}
	if r.stopped.Load() {
		return r.tapErr()
	}
	// Parsing and redaction run outside the lock, in the direction's own
	// goroutine; only appending to the file is serialised.
	d.now = time.Now()
	d.parser.Feed(p, d)
	return r.commit(d)
}

// tapErr is what Tap returns once recording has stopped.
func (r *Recorder) tapErr() error {
	if !r.o.CloseOnError {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// commit appends a direction's pending chunks and flushes them.
func (r *Recorder) commit(d *direction) error {
	defer d.reset()
	if len(d.pending) == 0 && !d.dirty {
		return nil
	}
	r.mu.Lock()
	report := r.appendLocked(d, nil)
	if report == nil && r.failed == nil {
		report = r.flushLocked()
	}
	err := r.failed
	r.mu.Unlock()
	r.report(report)
	if r.o.CloseOnError {
		return err
	}
	return nil
}

// appendLocked appends d's pending chunks, then extra if not nil, to the
// writer; mu is held. It returns a failure to report (once mu is released).
func (r *Recorder) appendLocked(d *direction, extra *recording.Chunk) (report error) {
	if r.failed != nil || r.truncated || r.finished {
		d.pending = d.pending[:0]
		return nil
	}
	for i := range d.pending {
		pc := &d.pending[i]
		c := recording.Chunk{Time: d.now, Kind: pc.kind, Dir: d.dir, Exchange: pc.exchange, Payload: d.arena[pc.off:pc.end]}
		if report = r.appendChunk(c); report != nil || r.truncated {
			break
		}
	}
	d.pending = d.pending[:0]
	if extra != nil && report == nil && !r.truncated {
		report = r.appendChunk(*extra)
	}
	return report
}

// appendChunk appends one chunk; mu is held.
func (r *Recorder) appendChunk(c recording.Chunk) (report error) {
	err := r.w.Append(c)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, recording.ErrSessionCap):
		r.truncate(recording.NoteSessionCap, "per-session cap (recordings.maxSessionSize) reached: the rest of the stream is not recorded")
		return nil
	}
	return r.fail(err)
}

// flushLocked writes what is appended; mu is held. A full store is not a
// write error: the writer keeps the chunks and the next flush (or Finish,
// which drops them if it must and says so) tries again. Only so much is
// held in memory meanwhile.
func (r *Recorder) flushLocked() (report error) {
	if r.finished {
		return nil
	}
	err := r.w.Flush()
	switch {
	case err == nil:
		r.flushedAt = r.w.Size()
		return nil
	case errors.Is(err, recording.ErrStoreFull):
		if !r.truncated && r.w.Size()-r.flushedAt > maxBacklog {
			r.truncate(recording.NoteStoreFull, fmt.Sprintf("recordings store full: %d bytes held unwritten; the rest of the stream is not recorded (%v)",
				r.w.Size()-r.flushedAt, err))
		}
		return nil
	}
	return r.fail(err)
}

// truncate stops recording stream chunks and says why in a Note; mu is
// held.
func (r *Recorder) truncate(code, msg string) {
	r.truncated = true
	r.stopped.Store(true)
	_ = r.w.Append(recording.Chunk{Kind: recording.KindNote, Payload: appendNote(nil, &recording.Note{Code: code, Message: msg})})
}

// fail stops recording after a write error; mu is held. The error is
// returned for Failed, to be called once mu is released.
func (r *Recorder) fail(err error) error {
	r.failed = err
	r.stopped.Store(true)
	_ = r.w.Abandon()
	return err
}

// report calls Failed; mu is not held.
func (r *Recorder) report(err error) {
	if err != nil && r.o.Failed != nil {
		r.o.Failed(err)
	}
}

// Err reports the write error that stopped the recording, if any.
func (r *Recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// Finish completes the parsers (a response read until close), then writes
// the end metadata and seals the recording. After a write error it only
// returns that error; called again it returns an error wrapping
// recording.ErrClosed.
func (r *Recorder) Finish(end recording.End) error {
	r.mu.Lock()
	done := r.finished
	r.mu.Unlock()
	if done {
		return fmt.Errorf("recording %s: finish: %w", r.w.ID(), recording.ErrClosed)
	}
	for _, d := range r.dir {
		if d != nil && !r.stopped.Load() {
			d.now = time.Now()
			d.parser.Close(d)
			d.flush()
			_ = r.commit(d)
		}
	}
	r.mu.Lock()
	r.finished = true
	r.stopped.Store(true)
	if r.failed != nil {
		err := r.failed
		r.mu.Unlock()
		return err
	}
	end.Truncated = end.Truncated || r.truncated
	var report error
	if err := r.w.Finish(end); err != nil {
		// The writer is closed whatever the result.
		r.failed, report = err, err
	}
	r.mu.Unlock()
	r.report(report)
	return report
}

// redact applies the policy, then the mask, to a complete buffer. It
// returns p itself when nothing matched.
func (r *Recorder) redact(p []byte) []byte {
	out := r.o.Redactor.Bytes(p)
	if r.mask != nil {
		out = r.mask.Bytes(out)
	}
	return out
}

// redactString is redact for a string, without copying it when nothing
// matched.
func (r *Recorder) redactString(s string) string {
	if s == "" {
		return s
	}
	// Bytes only reads its input and returns it when nothing matched.
	in := unsafe.Slice(unsafe.StringData(s), len(s))
	out := r.redact(in)
	if len(out) == len(in) && &out[0] == &in[0] {
		return s
	}
	return string(out)
}

// redactJSON redacts a complete JSON body as a document, or as bytes when
// it is not valid JSON.
func (r *Recorder) redactJSON(body []byte) []byte {
	out, ok := r.o.Redactor.JSON(body)
	if !ok {
		return r.redact(body)
	}
	if r.mask != nil {
		m, ok := r.mask.JSON(out)
		if !ok {
			m = r.mask.Bytes(out)
		}
		out = m
	}
	return out
}

// pendingChunk is a chunk waiting in a direction's arena.
type pendingChunk struct {
	kind     recording.Kind
	exchange uint32
	off, end int // payload: arena[off:end]
}

// direction turns one stream's parse events into chunks.
type direction struct {
	r      *Recorder
	dir    recording.Dir
	parser *httpstream.Parser
	now    time.Time

	pending []pendingChunk
	arena   []byte // pending payloads, reused
	dirty   bool   // chunks were appended directly since the last flush

	// Current message body.
	exchange uint32
	jsonBody bool   // buffering a JSON body for document redaction
	body     []byte // the buffered JSON body
	stream   stream // body redactor
	raw      stream // raw bytes redactor

	hdrs []recording.Header // reused by headers
}

// stream is the policy's redact.Stream followed, when there are
// MaskHeaders, by the mask's.
type stream struct {
	s, mask *redact.Stream
}

func (s *stream) write(p []byte) { _ = s.s.Write(p) }

// flush emits what the streams hold back (end of a body or stream).
func (s *stream) flush() {
	_ = s.s.Flush()
	if s.mask != nil {
		_ = s.mask.Flush()
	}
}

func (r *Recorder) newStream(emit func([]byte) error) stream {
	if r.mask == nil {
		return stream{s: r.o.Redactor.NewStream(emit)}
	}
	m := r.mask.NewStream(emit)
	return stream{s: r.o.Redactor.NewStream(m.Write), mask: m}
}

func newDirection(r *Recorder, dir recording.Dir, p *httpstream.Parser) *direction {
	d := &direction{r: r, dir: dir, parser: p}
	d.stream = r.newStream(d.emitBody)
	d.raw = r.newStream(d.emitRaw)
	return d
}

func (d *direction) reset() {
	d.pending = d.pending[:0]
	d.dirty = false
	if cap(d.arena) > maxArena {
		d.arena = nil // do not pin a large arena on an idle session
	}
	d.arena = d.arena[:0]
}

// add queues a chunk. Large stream payloads are appended at once (after
// what is pending, to keep the order); others are copied into the arena,
// a body or data piece joining the previous one of the same message.
func (d *direction) add(kind recording.Kind, exchange uint32, payload []byte) {
	for len(payload) > 0 {
		p := payload[:min(len(payload), recording.MaxPayload)]
		payload = payload[len(p):]
		if len(p) >= directPayload {
			d.appendNow(&recording.Chunk{Time: d.now, Kind: kind, Dir: d.dir, Exchange: exchange, Payload: p})
			continue
		}
		if n := len(d.pending); n > 0 {
			last := &d.pending[n-1]
			if last.kind == kind && last.exchange == exchange && last.end == len(d.arena) {
				d.arena = append(d.arena, p...)
				last.end = len(d.arena)
				if last.end-last.off >= directPayload {
					d.appendNow(nil) // enough to go now
				}
				continue
			}
		}
		off := len(d.arena)
		d.arena = append(d.arena, p...)
		d.pending = append(d.pending, pendingChunk{kind: kind, exchange: exchange, off: off, end: len(d.arena)})
	}
}

// appendNow appends the pending chunks, then c if not nil, to the writer;
// commit flushes them.
func (d *direction) appendNow(c *recording.Chunk) {
	r := d.r
	r.mu.Lock()
	report := r.appendLocked(d, c)
	r.mu.Unlock()
	d.arena = d.arena[:0]
	d.dirty = true
	r.report(report)
}

// addJSON queues a chunk whose payload is encoded by enc into the arena.
func (d *direction) addJSON(kind recording.Kind, exchange uint32, enc func([]byte) []byte) {
	off := len(d.arena)
	d.arena = enc(d.arena)
	if len(d.arena)-off > recording.MaxPayload {
		d.arena = d.arena[:off] // cannot happen: heads are at most 64 KiB
		return
	}
	d.pending = append(d.pending, pendingChunk{kind: kind, exchange: exchange, off: off, end: len(d.arena)})
}

func (d *direction) emitBody(p []byte) error {
	d.add(recording.KindHTTPBody, d.exchange, p)
	return nil
}

func (d *direction) emitRaw(p []byte) error {
	d.add(recording.KindData, 0, p)
	return nil
}

// headers returns hs redacted, in a slice reused by the next call.
func (d *direction) headers(hs []httpstream.Header) []recording.Header {
	out := d.hdrs[:0]
	for _, h := range hs {
		v := d.r.o.Redactor.Header(h.Name, h.Value)
		if d.r.mask != nil {
			v = d.r.mask.Header(h.Name, v)
		}
		out = append(out, recording.Header{Name: h.Name, Value: v})
	}
	d.hdrs = out
	if out == nil {
		out = []recording.Header{} // "headers": [], not null
	}
	return out
}

// Head implements httpstream.Handler.
func (d *direction) Head(exchange uint32, h *httpstream.Head) {
	d.exchange = exchange
	rh := recording.HTTPHead{
		Request: h.Request, Method: h.Method, Proto: h.Proto,
		Status: h.Status, Headers: d.headers(h.Headers), Chunked: h.Chunked,
	}
	if h.Request {
		// The request target can carry secrets too (?access_token=...).
		rh.Target = d.r.redactString(h.Target)
	} else {
		// So can a reason phrase (a server quoting what it refused).
		rh.Reason = d.r.redactString(h.Reason)
	}
	d.addJSON(recording.KindHTTPHead, exchange, func(b []byte) []byte { return appendHead(b, &rh) })
	d.jsonBody = isJSON(h.Headers) && h.ContentLength <= maxJSONBody
	d.body = d.body[:0]
}

// Body implements httpstream.Handler.
func (d *direction) Body(_ uint32, p []byte) {
	if d.jsonBody {
		if len(d.body)+len(p) <= maxJSONBody {
			d.body = append(d.body, p...)
			return
		}
		// Too large to hold: redact what we have as a stream from here on.
		d.jsonBody = false
		d.stream.write(d.body)
		d.body = d.body[:0]
	}
	d.stream.write(p)
}

// End implements httpstream.Handler.
func (d *direction) End(exchange uint32, trailers []httpstream.Header, size int64) {
	if d.jsonBody {
		if len(d.body) > 0 {
			d.add(recording.KindHTTPBody, exchange, d.r.redactJSON(d.body))
		}
		d.jsonBody = false
		d.body = d.body[:0]
	} else {
		d.stream.flush()
	}
	if cap(d.body) > 64<<10 {
		d.body = nil
	}
	e := recording.HTTPEnd{BodySize: size}
	if len(trailers) > 0 {
		e.Trailers = d.headers(trailers)
	}
	d.addJSON(recording.KindHTTPEnd, exchange, func(b []byte) []byte { return appendEnd(b, &e) })
}

// Raw implements httpstream.Handler.
func (d *direction) Raw(p []byte) { d.raw.write(p) }

// Fallback implements httpstream.Handler.
func (d *direction) Fallback(reason string) {
	// A body cut short by the switch is flushed before the raw bytes.
	if d.jsonBody {
		if len(d.body) > 0 {
			d.add(recording.KindHTTPBody, d.exchange, d.r.redact(d.body))
		}
		d.jsonBody, d.body = false, d.body[:0]
	}
	d.stream.flush()
	code := recording.NoteHTTPParseError
	if strings.HasPrefix(reason, "upgrade") || strings.HasPrefix(reason, "CONNECT") {
		code = recording.NoteUpgrade
	}
	if strings.HasPrefix(reason, "not HTTP") {
		code = "raw"
	}
	// A parse error quotes the offending bytes, which may be a secret.
	n := recording.Note{Code: code, Message: d.r.redactString(reason)}
	d.addJSON(recording.KindNote, 0, func(b []byte) []byte { return appendNote(b, &n) })
}

// flush emits what the redactors still hold (end of stream).
func (d *direction) flush() {
	d.stream.flush()
	d.raw.flush()
}

func isJSON(hs []httpstream.Header) bool {
	for _, h := range hs {
		if strings.EqualFold(h.Name, "Content-Type") {
			ct := strings.ToLower(h.Value)
			if i := strings.IndexByte(ct, ';'); i >= 0 {
				ct = ct[:i]
			}
			ct = strings.TrimSpace(ct)
			return ct == "application/json" || strings.HasSuffix(ct, "+json")
		}
	}
	return false
}
