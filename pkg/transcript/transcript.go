// Package transcript turns a loaded session recording into HTTP exchanges,
// raw stream segments and one time-ordered list of events, and exports it
// as HAR, pcapng, JSON or a paced terminal replay.
//
// It depends only on the recording's chunk types (pkg/recording/types.go),
// not on the reader: callers fill an Input from whatever loaded the file.
package transcript

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/intransit/intransit/pkg/recording"
)

// Recording statuses, as the recording reader reports them.
const (
	StatusSealed     = "sealed"     // sealed and the hash chain verifies
	StatusUnfinished = "unfinished" // no seal: the session was open or the agent stopped
	StatusTampered   = "tampered"   // the hash chain does not verify
	StatusTruncated  = "truncated"  // the file ends inside a chunk
)

// Input is a loaded recording. Chunks are in file order and may include the
// Meta, End and Seal chunks. End may be nil (unfinished recording); it is
// then taken from a KindEnd chunk if there is one.
type Input struct {
	Meta   recording.Meta
	Chunks []recording.Chunk
	End    *recording.End
	Status string
	// Problems the reader found (optional); carried into the transcript.
	Problems []string
}

// Message is one HTTP request or response. Body is the recorded (decoded,
// redacted) body; BodySize is the decoded size seen on the wire before
// redaction, or len(Body) when the message never completed.
type Message struct {
	Head       recording.HTTPHead
	Body       []byte
	Start, End time.Time
	BodySize   int64
	Trailers   []recording.Header
	Complete   bool
}

// Exchange is one request and its final response; Interim holds 1xx
// responses (other than 101, which is final) that came before it.
type Exchange struct {
	N        uint32
	Request  *Message
	Response *Message
	Interim  []*Message
}

// Segment is raw stream bytes (not parsed as HTTP).
type Segment struct {
	Time time.Time
	Dir  recording.Dir
	Data []byte
}

// EventKind says what an Event is.
type EventKind uint8

// Event kinds.
const (
	EventHead       EventKind = iota + 1 // Message's head was seen
	EventBody                            // Data is the piece of Message.Body at Offset
	EventMessageEnd                      // Message completed
	EventData                            // Data is raw stream bytes (a Segment)
	EventNote                            // Note
	EventEnd                             // the session ended (Transcript.End)
)

func (k EventKind) String() string {
	switch k {
	case EventHead:
		return "head"
	case EventBody:
		return "body"
	case EventMessageEnd:
		return "message_end"
	case EventData:
		return "data"
	case EventNote:
		return "note"
	case EventEnd:
		return "end"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is one thing that happened in the session, for replay and pcapng.
type Event struct {
	Time     time.Time
	Kind     EventKind
	Dir      recording.Dir
	Exchange *Exchange // HTTP events
	Message  *Message  // HTTP events
	Data     []byte    // EventBody, EventData
	Offset   int       // EventBody: where Data starts in Message.Body
	Note     *recording.Note

	order int // index of the chunk in the file: breaks ties in time
}

// Transcript is a recording turned into exchanges and events.
type Transcript struct {
	Meta      recording.Meta
	End       *recording.End
	Status    string
	Exchanges []*Exchange
	Raw       []Segment
	Notes     []recording.Note
	Events    []Event // everything in time order, for replay
	// Problems are inconsistencies found while building (and the reader's,
	// from Input); the transcript is still usable.
	Problems []string
}

// Build turns a recording into a transcript. It is tolerant of incomplete
// recordings: messages without an end are kept with Complete false, an
// exchange may lack its response. It fails only when a chunk that must be
// JSON does not decode. Payloads are shared with the input, not copied.
func Build(in Input) (*Transcript, error) {
	t := &Transcript{
		Meta:     in.Meta,
		End:      in.End,
		Status:   in.Status,
		Problems: append([]string(nil), in.Problems...),
	}
	b := &builder{t: t, byN: make(map[uint32]*Exchange)}
	// One stream per direction plus one for direction-less chunks. Each is
	// in file order, which within a direction is the order things happened
	// even if the wall clock stepped back; streams are merged by time.
	var streams [3][]Event
	var end *Event
	last := in.Meta.Start
	for i, c := range in.Chunks {
		tm := c.Time
		if tm.IsZero() {
			// Some chunks (notes written by the recorder itself) may carry
			// no time: they happened right after the previous one.
			tm = last
		} else {
			last = tm
		}
		ev, ok, err := b.chunk(c, tm)
		if err != nil {
			return nil, fmt.Errorf("session %s: chunk %d: %w", in.Meta.ID, c.Seq, err)
		}
		if !ok {
			continue
		}
		ev.order = i
		if ev.Kind == EventEnd {
			end = &ev
			continue
		}
		s := 0
		if ev.Dir == recording.DirClientToServer || ev.Dir == recording.DirServerToClient {
			s = int(ev.Dir)
		}
		streams[s] = append(streams[s], ev)
	}
	for _, ex := range t.Exchanges {
		for _, m := range ex.messages() {
			if !m.Complete {
				m.BodySize = int64(len(m.Body))
			}
		}
	}
	t.Events = merge(streams[:])
	if end == nil && t.End != nil {
		end = &Event{Time: t.End.End, Kind: EventEnd}
	}
	if end != nil {
		// The end is last by definition, whatever its timestamp says.
		if n := len(t.Events); n > 0 && end.Time.Before(t.Events[n-1].Time) {
			end.Time = t.Events[n-1].Time
		}
		t.Events = append(t.Events, *end)
	}
	return t, nil
}

type builder struct {
	t   *Transcript
	byN map[uint32]*Exchange
}

func (b *builder) problem(format string, args ...any) {
	b.t.Problems = append(b.t.Problems, fmt.Sprintf(format, args...))
}

func (b *builder) exchange(n uint32) *Exchange {
	ex := b.byN[n]
	if ex == nil {
		ex = &Exchange{N: n}
		b.byN[n] = ex
		b.t.Exchanges = append(b.t.Exchanges, ex)
	}
	return ex
}

// current is the message of exchange n in dir that body and end chunks
// belong to.
func (b *builder) current(n uint32, dir recording.Dir) (*Exchange, *Message) {
	ex := b.byN[n]
	if ex == nil {
		return nil, nil
	}
	switch dir {
	case recording.DirClientToServer:
		return ex, ex.Request
	case recording.DirServerToClient:
		return ex, ex.Response
	}
	return ex, nil
}

// chunk interprets one chunk; ok is false when it yields no event.
func (b *builder) chunk(c recording.Chunk, tm time.Time) (ev Event, ok bool, err error) {
	ev = Event{Time: tm, Dir: c.Dir}
	switch c.Kind {
	case recording.KindMeta, recording.KindSeal:
		return ev, false, nil

	case recording.KindData:
		b.t.Raw = append(b.t.Raw, Segment{Time: tm, Dir: c.Dir, Data: c.Payload})
		ev.Kind, ev.Data = EventData, c.Payload
		return ev, true, nil

	case recording.KindNote:
		var n recording.Note
		if err := json.Unmarshal(c.Payload, &n); err != nil {
			return ev, false, fmt.Errorf("note: %w", err)
		}
		b.t.Notes = append(b.t.Notes, n)
		// A copy: a pointer into t.Notes would not survive later appends.
		nc := n
		ev.Kind, ev.Note = EventNote, &nc
		return ev, true, nil

	case recording.KindEnd:
		var e recording.End
		if err := json.Unmarshal(c.Payload, &e); err != nil {
			return ev, false, fmt.Errorf("end: %w", err)
		}
		if b.t.End == nil {
			b.t.End = &e
		}
		ev.Kind, ev.Dir = EventEnd, recording.DirNone
		if !b.t.End.End.IsZero() {
			ev.Time = b.t.End.End
		}
		return ev, true, nil

	case recording.KindHTTPHead:
		var h recording.HTTPHead
		if err := json.Unmarshal(c.Payload, &h); err != nil {
			return ev, false, fmt.Errorf("HTTP head of exchange %d: %w", c.Exchange, err)
		}
		m := &Message{Head: h, Start: tm, End: tm}
		ex := b.exchange(c.Exchange)
		switch c.Dir {
		case recording.DirClientToServer:
			if ex.Request != nil {
				b.problem("exchange %d: a second request head replaces the first", c.Exchange)
			}
			ex.Request = m
		case recording.DirServerToClient:
			if prev := ex.Response; prev != nil {
				if !isInterim(prev) {
					b.problem("exchange %d: response %d followed by another response; kept as interim", c.Exchange, prev.Head.Status)
				}
				ex.Interim = append(ex.Interim, prev)
			}
			ex.Response = m
		default:
			b.problem("exchange %d: HTTP head without a direction ignored", c.Exchange)
			return ev, false, nil
		}
		ev.Kind, ev.Exchange, ev.Message = EventHead, ex, m
		return ev, true, nil

	case recording.KindHTTPBody:
		ex, m := b.current(c.Exchange, c.Dir)
		if m == nil {
			b.problem("exchange %d: %d body bytes without a head ignored", c.Exchange, len(c.Payload))
			return ev, false, nil
		}
		if m.Complete {
			b.problem("exchange %d: body bytes after the message ended", c.Exchange)
		}
		ev.Kind, ev.Exchange, ev.Message = EventBody, ex, m
		ev.Data, ev.Offset = c.Payload, len(m.Body)
		m.Body = append(m.Body, c.Payload...)
		m.End = tm
		return ev, true, nil

	case recording.KindHTTPEnd:
		var e recording.HTTPEnd
		if err := json.Unmarshal(c.Payload, &e); err != nil {
			return ev, false, fmt.Errorf("HTTP end of exchange %d: %w", c.Exchange, err)
		}
		ex, m := b.current(c.Exchange, c.Dir)
		if m == nil {
			b.problem("exchange %d: message end without a head ignored", c.Exchange)
			return ev, false, nil
		}
		if m.Complete {
			b.problem("exchange %d: message ended twice", c.Exchange)
		}
		m.Complete, m.BodySize, m.Trailers, m.End = true, e.BodySize, e.Trailers, tm
		ev.Kind, ev.Exchange, ev.Message = EventMessageEnd, ex, m
		return ev, true, nil
	}
	b.problem("chunk %d: unknown kind %d ignored", c.Seq, c.Kind)
	return ev, false, nil
}

// merge interleaves streams by time, ties in file order; each stream's own
// order is kept.
func merge(streams [][]Event) []Event {
	n := 0
	for _, s := range streams {
		n += len(s)
	}
	out := make([]Event, 0, n)
	pos := make([]int, len(streams))
	for len(out) < n {
		best := -1
		for i, s := range streams {
			if pos[i] == len(s) {
				continue
			}
			if best < 0 || earlier(s[pos[i]], streams[best][pos[best]]) {
				best = i
			}
		}
		out = append(out, streams[best][pos[best]])
		pos[best]++
	}
	return out
}

func earlier(a, b Event) bool {
	if a.Time.Equal(b.Time) {
		return a.order < b.order
	}
	return a.Time.Before(b.Time)
}

// messages returns the exchange's messages in the order they were sent.
func (ex *Exchange) messages() []*Message {
	var ms []*Message
	if ex.Request != nil {
		ms = append(ms, ex.Request)
	}
	ms = append(ms, ex.Interim...)
	if ex.Response != nil {
		ms = append(ms, ex.Response)
	}
	return ms
}

// isInterim: 1xx responses are followed by the final one, except 101
// Switching Protocols which is final.
func isInterim(m *Message) bool {
	s := m.Head.Status
	return s >= 100 && s < 200 && s != 101
}

// bodyless reports whether m has no body by definition (RFC 9112 6.3),
// whatever its headers say.
func bodyless(ex *Exchange, m *Message) bool {
	if m.Head.Request {
		return false
	}
	s := m.Head.Status
	if s < 200 || s == 204 || s == 304 {
		return true
	}
	if ex != nil && ex.Request != nil {
		switch ex.Request.Head.Method {
		case "HEAD":
			return true
		case "CONNECT":
			return s < 300
		}
	}
	return false
}

// header returns the first value of the named header.
func header(hs []recording.Header, name string) string {
	for _, h := range hs {
		if strings.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return ""
}

// dirName names a direction for exports.
func dirName(d recording.Dir) string {
	switch d {
	case recording.DirClientToServer:
		return "client_to_server"
	case recording.DirServerToClient:
		return "server_to_client"
	}
	return "none"
}
