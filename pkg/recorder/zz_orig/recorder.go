// Package recorder records one live session: it follows both byte streams
// as the relay moves them, recognises HTTP/1.x exchanges, redacts secrets
// and appends the result to a recording. Nothing reaches the recording
// before it is redacted.
package recorder

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/intransit/intransit/pkg/httpstream"
	"github.com/intransit/intransit/pkg/recording"
	"github.com/intransit/intransit/pkg/redact"
)

// maxJSONBody is the largest JSON body redacted as a document (field names
// at any depth); larger ones are redacted as a stream.
const maxJSONBody = 1 << 20

// Options configure a recorder.
type Options struct {
	Full     bool // record the byte streams, not only metadata
	Redactor *redact.Redactor
	// MaskHeaders are masked whatever the redaction policy says: the
	// injected credential's header.
	MaskHeaders []string
	// OnError: true ends the session when the recording cannot be
	// written (recordings.onError: close).
	CloseOnError bool
	// Failed is called once when the recording stops because of a write
	// error (to audit it). It may be nil.
	Failed func(error)
}

// Recorder records one session. Tap is safe for concurrent use by the two
// relay directions.
type Recorder struct {
	o   Options
	dir [2]*direction // by recording.Dir - 1

	mu        sync.Mutex
	w         *recording.Writer
	truncated bool  // per-session cap reached
	failed    error // write error: recording stopped
}

// Start creates the recording and writes its metadata.
func Start(store *recording.Store, meta recording.Meta, o Options) (*Recorder, error) {
	if o.Redactor == nil {
		return nil, errors.New("recorder: no redactor")
	}
	w, err := store.Create(meta)
	if err != nil {
		return nil, err
	}
	if err := w.Flush(); err != nil {
		_ = w.Abandon()
		return nil, err
	}
	r := &Recorder{o: o, w: w}
	if o.Full {
		x := httpstream.NewExchanges()
		r.dir[0] = newDirection(r, recording.DirClientToServer, httpstream.NewRequestParser(x))
		r.dir[1] = newDirection(r, recording.DirServerToClient, httpstream.NewResponseParser(x))
	}
	return r, nil
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
	// Parsing and redaction run outside the lock, in the direction's own
	// goroutine; only appending to the file is serialised.
	d.now = time.Now()
	d.parser.Feed(p, d)
	return r.commit(d)
}

// commit appends a direction's pending chunks and flushes them.
func (r *Recorder) commit(d *direction) error {
	defer d.reset()
	if len(d.pending) == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed != nil {
		return r.failedErr()
	}
	if r.truncated {
		return nil
	}
	for _, c := range d.pending {
		if err := r.w.Append(c); err != nil {
			if errors.Is(err, recording.ErrSessionCap) {
				r.truncated = true
				r.note(recording.NoteSessionCap, "per-session cap (recordings.maxSessionSize) reached: the rest of the stream is not recorded")
				break
			}
			return r.fail(err)
		}
	}
	if err := r.w.Flush(); err != nil {
		return r.fail(err)
	}
	return nil
}

// note appends a Note chunk; mu is held.
func (r *Recorder) note(code, msg string) {
	b, _ := json.Marshal(recording.Note{Code: code, Message: msg})
	_ = r.w.Append(recording.Chunk{Kind: recording.KindNote, Payload: b})
}

// fail stops recording after a write error; mu is held.
func (r *Recorder) fail(err error) error {
	r.failed = fmt.Errorf("recording %s: %w", r.w.ID(), err)
	_ = r.w.Abandon()
	if r.o.Failed != nil {
		r.o.Failed(r.failed)
	}
	return r.failedErr()
}

func (r *Recorder) failedErr() error {
	if r.o.CloseOnError {
		return r.failed
	}
	return nil
}

// Err reports the write error that stopped the recording, if any.
func (r *Recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// Finish completes the parsers (a response read until close), then writes
// the end metadata and seals the recording. After a write error it only
// returns that error.
func (r *Recorder) Finish(end recording.End) error {
	for _, d := range r.dir {
		if d != nil {
			d.now = time.Now()
			d.parser.Close(d)
			d.flushRaw()
			_ = r.commit(d)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed != nil {
		return r.failed
	}
	end.Truncated = end.Truncated || r.truncated
	if err := r.w.Finish(end); err != nil {
		r.failed = fmt.Errorf("recording %s: %w", r.w.ID(), err)
		_ = r.w.Abandon()
		if r.o.Failed != nil {
			r.o.Failed(r.failed)
		}
		return r.failed
	}
	return nil
}

// direction turns one stream's parse events into pending chunks.
type direction struct {
	r      *Recorder
	dir    recording.Dir
	parser *httpstream.Parser
	now    time.Time

	pending []recording.Chunk
	arena   []byte // pending payloads, reused

	// Current message body.
	exchange uint32
	jsonBody bool   // buffering a JSON body for document redaction
	body     []byte // the buffered JSON body
	stream   *redact.Stream
	raw      *redact.Stream
}

func newDirection(r *Recorder, dir recording.Dir, p *httpstream.Parser) *direction {
	d := &direction{r: r, dir: dir, parser: p}
	d.stream = r.o.Redactor.NewStream(d.emitBody)
	d.raw = r.o.Redactor.NewStream(d.emitRaw)
	return d
}

func (d *direction) reset() {
	d.pending = d.pending[:0]
	if cap(d.arena) > 1<<20 {
		d.arena = nil // do not pin a large arena on an idle session
	}
	d.arena = d.arena[:0]
}

// add queues a chunk whose payload is copied into the arena.
func (d *direction) add(kind recording.Kind, exchange uint32, payload []byte) {
	start := len(d.arena)
	d.arena = append(d.arena, payload...)
	d.pending = append(d.pending, recording.Chunk{
		Time: d.now, Kind: kind, Dir: d.dir, Exchange: exchange,
		Payload: d.arena[start:len(d.arena):len(d.arena)],
	})
}

func (d *direction) addJSON(kind recording.Kind, exchange uint32, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	d.add(kind, exchange, b)
}

func (d *direction) emitBody(p []byte) error {
	d.add(recording.KindHTTPBody, d.exchange, p)
	return nil
}

func (d *direction) emitRaw(p []byte) error {
	d.add(recording.KindData, 0, p)
	return nil
}

func (d *direction) headers(hs []httpstream.Header) []recording.Header {
	out := make([]recording.Header, len(hs))
	for i, h := range hs {
		v := d.r.o.Redactor.Header(h.Name, h.Value)
		for _, m := range d.r.o.MaskHeaders {
			if strings.EqualFold(m, h.Name) {
				v = redact.Mask
			}
		}
		out[i] = recording.Header{Name: h.Name, Value: v}
	}
	return out
}

// Head implements httpstream.Handler.
func (d *direction) Head(exchange uint32, h *httpstream.Head) {
	d.exchange = exchange
	rh := recording.HTTPHead{
		Request: h.Request, Method: h.Method, Proto: h.Proto,
		Status: h.Status, Reason: h.Reason, Headers: d.headers(h.Headers), Chunked: h.Chunked,
	}
	if h.Request {
		// The request target can carry secrets too (?access_token=...).
		rh.Target = string(d.r.o.Redactor.Bytes([]byte(h.Target)))
	}
	d.addJSON(recording.KindHTTPHead, exchange, rh)
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
		_ = d.stream.Write(d.body)
		d.body = d.body[:0]
	}
	_ = d.stream.Write(p)
}

// End implements httpstream.Handler.
func (d *direction) End(exchange uint32, trailers []httpstream.Header, size int64) {
	if d.jsonBody {
		if len(d.body) > 0 {
			out, ok := d.r.o.Redactor.JSON(d.body)
			if !ok {
				out = d.r.o.Redactor.Bytes(d.body)
			}
			d.add(recording.KindHTTPBody, exchange, out)
		}
		d.jsonBody = false
		d.body = d.body[:0]
	} else {
		_ = d.stream.Flush()
	}
	if cap(d.body) > 64<<10 {
		d.body = nil
	}
	d.addJSON(recording.KindHTTPEnd, exchange, recording.HTTPEnd{BodySize: size, Trailers: d.headers(trailers)})
}

// Raw implements httpstream.Handler.
func (d *direction) Raw(p []byte) { _ = d.raw.Write(p) }

// Fallback implements httpstream.Handler.
func (d *direction) Fallback(reason string) {
	// A body cut short by the switch is flushed before the raw bytes.
	if d.jsonBody && len(d.body) > 0 {
		d.add(recording.KindHTTPBody, d.exchange, d.r.o.Redactor.Bytes(d.body))
		d.jsonBody, d.body = false, d.body[:0]
	}
	_ = d.stream.Flush()
	code := recording.NoteHTTPParseError
	if strings.HasPrefix(reason, "upgrade") || strings.HasPrefix(reason, "CONNECT") {
		code = recording.NoteUpgrade
	}
	if strings.HasPrefix(reason, "not HTTP") {
		code = "raw"
	}
	d.addJSON(recording.KindNote, 0, recording.Note{Code: code, Message: reason})
}

// flushRaw emits what the raw redactor still holds (end of stream).
func (d *direction) flushRaw() {
	_ = d.stream.Flush()
	_ = d.raw.Flush()
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
