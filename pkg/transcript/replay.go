package transcript

import (
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/intransit/intransit/pkg/recording"
)

// ReplayOptions pace a replay.
type ReplayOptions struct {
	// Speed: 1 is real time, 2 twice as fast; 0 or negative does not wait.
	Speed float64
	// Sleep waits; nil is time.Sleep. Tests inject a fake.
	Sleep func(time.Duration)
}

// maxHexDump bounds the hex dump of one binary raw segment: the replay is
// for reading, the JSON and pcapng exports have every byte.
const maxHexDump = 512

// Replay prints the transcript in time order, waiting between events as
// they happened (scaled by Speed). Every recorded byte is escaped: the
// recording is attacker-controlled and must not drive the terminal.
func Replay(t *Transcript, w io.Writer, o ReplayOptions) error {
	sleep := o.Sleep
	if sleep == nil {
		sleep = time.Sleep
	}
	p := &printer{w: w, text: make(map[*Message]bool)}
	base := t.Meta.Start
	if base.IsZero() && len(t.Events) > 0 {
		base = t.Events[0].Time
	}
	p.header(t)
	var prev time.Time
	sawEnd := false
	for i, ev := range t.Events {
		if i > 0 && o.Speed > 0 {
			if d := time.Duration(float64(ev.Time.Sub(prev)) / o.Speed); d > 0 {
				sleep(d)
			}
		}
		if i == 0 || ev.Time.After(prev) {
			prev = ev.Time
		}
		stamp := fmt.Sprintf("[%+.3fs]", ev.Time.Sub(base).Seconds())
		switch ev.Kind {
		case EventHead:
			p.head(stamp, ev)
		case EventBody:
			p.body(stamp, ev)
		case EventMessageEnd:
			for _, h := range ev.Message.Trailers {
				p.line("    (trailer) %s: %s", escapeString(h.Name), escapeString(h.Value))
			}
		case EventData:
			p.line("%s %s %d bytes", stamp, arrow(ev.Dir), len(ev.Data))
			p.raw(ev.Data)
		case EventNote:
			p.line("%s note %s: %s", stamp, escapeString(ev.Note.Code), escapeString(ev.Note.Message))
		case EventEnd:
			sawEnd = true
			p.end(stamp, t.End)
		}
		if p.err != nil {
			return fmt.Errorf("session %s: replay: %w", t.Meta.ID, p.err)
		}
	}
	p.footer(t, sawEnd)
	if p.err != nil {
		return fmt.Errorf("session %s: replay: %w", t.Meta.ID, p.err)
	}
	return nil
}

// printer writes lines, remembering whether a text body left the cursor
// mid-line so the next piece of the same body continues it.
type printer struct {
	w       io.Writer
	err     error
	midLine bool
	lastMsg *Message
	text    map[*Message]bool // isText of each body, computed once
}

func (p *printer) write(s string) {
	if p.err == nil {
		_, p.err = io.WriteString(p.w, s)
	}
}

// line prints one line; every argument taken from the recording must
// already be escaped.
func (p *printer) line(format string, args ...any) {
	if p.midLine {
		p.write("\n")
		p.midLine = false
	}
	p.lastMsg = nil
	p.write(fmt.Sprintf(format, args...) + "\n")
}

func arrow(d recording.Dir) string {
	switch d {
	case recording.DirClientToServer:
		return "→"
	case recording.DirServerToClient:
		return "←"
	}
	return "·"
}

func (p *printer) header(t *Transcript) {
	m := t.Meta
	p.line("session     %s", escapeString(m.ID))
	workload := escapeString(m.Process.Workload())
	if pr := m.Process; pr != nil {
		workload += fmt.Sprintf(" (%s, pid %d, uid %d)", escapeString(pr.Comm), pr.PID, pr.UID)
	}
	p.line("workload    %s", workload)
	p.line("rule        %s (record %s)", escapeString(m.Rule), escapeString(m.Level))
	p.line("source      %s", escapeString(m.Source))
	p.line("destination %s", escapeString(m.Destination))
	p.line("upstream    %s", escapeString(m.Upstream))
	if tls := m.TLS; tls != nil {
		s := escapeString(tls.Version) + " " + escapeString(tls.Cipher)
		if tls.ServerName != "" {
			s += ", server name " + escapeString(tls.ServerName)
		}
		if tls.PeerSubject != "" {
			s += ", peer " + escapeString(tls.PeerSubject)
		}
		if tls.Resumed {
			s += ", resumed"
		}
		p.line("tls         %s", s)
	} else {
		p.line("tls         none")
	}
	if id := m.Identity; id != nil && id.Subject != "" {
		p.line("identity    %s", escapeString(id.Subject))
	}
	if !m.Start.IsZero() {
		p.line("started     %s", m.Start.UTC().Format(time.RFC3339Nano))
	}
	p.line("verdict     %s", escapeString(string(m.Verdict)))
	p.status(t)
	p.line("")
}

// status prints the recording's status, loudly when it is not sealed.
func (p *printer) status(t *Transcript) {
	if t.Status == StatusSealed {
		p.line("recording   sealed")
	} else {
		p.line("!!! WARNING: recording %s: %s !!!", escapeString(statusOrUnknown(t.Status)), statusWarning(t.Status))
	}
	for _, pr := range t.Problems {
		p.line("!!! problem: %s", escapeString(pr))
	}
}

func statusOrUnknown(s string) string {
	if s == "" {
		return "of unknown status"
	}
	return s
}

func statusWarning(s string) string {
	switch s {
	case StatusSealed:
		return "sealed"
	case StatusUnfinished:
		return "not sealed: the session was still open or the agent stopped; the recording may be incomplete"
	case StatusTruncated:
		return "the file ends mid-chunk: the end of the recording is missing"
	case StatusTampered:
		return "the hash chain does not verify: the recording was altered or corrupted; do not trust its contents"
	case "open":
		return "open: the session is still being recorded; what is shown so far verifies"
	case "unverified":
		return "unverified: a keyed recording read without recordings.keyFile; pass --key-file to check it"
	}
	return "not verified as sealed: do not trust its contents"
}

func (p *printer) head(stamp string, ev Event) {
	h := ev.Message.Head
	if h.Request {
		p.line("%s %s %s %s %s", stamp, arrow(ev.Dir), escapeString(h.Method), escapeString(h.Target), escapeString(h.Proto))
	} else {
		p.line("%s %s %s %d %s", stamp, arrow(ev.Dir), escapeString(h.Proto), h.Status, escapeString(h.Reason))
	}
	for _, hd := range h.Headers {
		p.line("    %s: %s", escapeString(hd.Name), escapeString(hd.Value))
	}
	p.lastMsg = ev.Message
}

// body prints a piece of a message body as it arrived: text escaped,
// binary summarised once the whole recorded body has been seen. A body
// that does not follow its own head (a request body sent after a
// 100 Continue) gets a line saying whose it is.
func (p *printer) body(stamp string, ev Event) {
	m := ev.Message
	end := ev.Offset + len(ev.Data)
	text, ok := p.text[m]
	if !ok {
		text = isText(m.Body)
		p.text[m] = text
	}
	if !text && end < len(m.Body) {
		return
	}
	if p.lastMsg != m {
		what := "response"
		if m.Head.Request {
			what = "request"
		}
		p.line("%s %s %s body of exchange %d", stamp, arrow(ev.Dir), what, ev.Exchange.N)
	}
	if !text {
		p.line("    <%d bytes binary>", len(m.Body))
		p.lastMsg = m
		return
	}
	// Whole runes only: a rune split between chunks prints with the piece
	// it starts in.
	from, to := runeStart(m.Body, ev.Offset), runeStart(m.Body, end)
	if from >= to {
		return
	}
	s := escape(m.Body[from:to], true)
	if !(p.midLine && p.lastMsg == m) {
		if p.midLine {
			p.write("\n")
		}
		p.write("    ")
	}
	// Indent continuation lines; a trailing newline leaves the cursor at
	// the start of a line with no indent yet.
	trailing := strings.HasSuffix(s, "\n")
	s = strings.TrimSuffix(s, "\n")
	p.write(strings.ReplaceAll(s, "\n", "\n    "))
	if trailing {
		p.write("\n")
	}
	p.midLine, p.lastMsg = !trailing, m
}

// raw prints raw stream bytes: escaped text, or a bounded hex dump
// (hex.Dump shows only printable ASCII).
func (p *printer) raw(b []byte) {
	if isText(b) {
		s := strings.TrimSuffix(escape(b, true), "\n")
		for _, l := range strings.Split(s, "\n") {
			p.line("    %s", l)
		}
		return
	}
	shown := b[:min(len(b), maxHexDump)]
	for _, l := range strings.Split(strings.TrimSuffix(hex.Dump(shown), "\n"), "\n") {
		p.line("    %s", l)
	}
	if len(b) > len(shown) {
		p.line("    ... %d more bytes", len(b)-len(shown))
	}
}

func (p *printer) end(stamp string, e *recording.End) {
	if e == nil {
		p.line("%s end", stamp)
		return
	}
	s := fmt.Sprintf("%s end: %d bytes sent, %d bytes received, verdict %s", stamp, e.BytesSent, e.BytesReceived, escapeString(string(e.Verdict)))
	if e.Reason != "" {
		s += ", reason: " + escapeString(e.Reason)
	}
	if e.Truncated {
		s += " (stream recording stopped at the per-session cap)"
	}
	p.line("%s", s)
}

func (p *printer) footer(t *Transcript, sawEnd bool) {
	p.line("")
	if !sawEnd {
		p.line("no end record: the session was still open or the agent stopped")
	}
	for _, ex := range t.Exchanges {
		switch {
		case ex.Request == nil:
			p.line("exchange %d: no request recorded", ex.N)
		case !ex.Request.Complete:
			p.line("exchange %d: request incomplete", ex.N)
		}
		switch {
		case ex.Response == nil:
			p.line("exchange %d: no response recorded", ex.N)
		case !ex.Response.Complete:
			p.line("exchange %d: response incomplete", ex.N)
		}
	}
	p.status(t)
}
