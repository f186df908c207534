package httpstream

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// event is one Handler call; consecutive Body calls of one exchange and
// consecutive Raw calls are merged, since how they are cut depends on the
// pieces fed.
type event struct {
	kind   string // head, body, end, raw, fallback
	ex     uint32
	text   string // summary: "GET /x", "200", "size=5 trailers=[...]", the reason
	detail string // everything else a head says
	data   []byte // body, raw
}

func (e event) String() string {
	switch e.kind {
	case "body":
		return fmt.Sprintf("body %d %s", e.ex, strconv.Quote(string(e.data)))
	case "raw":
		return "raw " + strconv.Quote(string(e.data))
	case "fallback":
		return "fallback " + e.text
	}
	return fmt.Sprintf("%s %d %s", e.kind, e.ex, e.text)
}

// recorder is a Handler that keeps a transcript and checks the event order
// contract as it goes.
type recorder struct {
	t         testing.TB
	ev        []event
	fallbacks int
	open      map[uint32]bool // heads without End, by exchange
	bodyBytes int64
	rawBytes  int64
}

func newRecorder(t testing.TB) *recorder { return &recorder{t: t, open: map[uint32]bool{}} }

func (r *recorder) errorf(format string, args ...any) {
	if r.t != nil {
		r.t.Helper()
		r.t.Errorf(format, args...)
	}
}

func (r *recorder) Head(ex uint32, h *Head) {
	if r.fallbacks > 0 {
		r.errorf("Head after Fallback")
	}
	if r.open[ex] {
		r.errorf("Head %d before End of the previous one", ex)
	}
	r.open[ex] = true
	text := fmt.Sprint(h.Status)
	if h.Request {
		text = h.Method + " " + h.Target
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s reason=%q chunked=%v cl=%d", h.Proto, h.Reason, h.Chunked, h.ContentLength)
	for _, f := range h.Headers {
		fmt.Fprintf(&b, " [%s: %s]", f.Name, f.Value)
	}
	r.ev = append(r.ev, event{kind: "head", ex: ex, text: text, detail: b.String()})
}

func (r *recorder) Body(ex uint32, p []byte) {
	if !r.open[ex] {
		r.errorf("Body %d outside a message", ex)
	}
	if len(p) == 0 {
		r.errorf("empty Body call")
	}
	r.bodyBytes += int64(len(p))
	if n := len(r.ev); n > 0 && r.ev[n-1].kind == "body" && r.ev[n-1].ex == ex {
		r.ev[n-1].data = append(r.ev[n-1].data, p...)
		return
	}
	r.ev = append(r.ev, event{kind: "body", ex: ex, data: append([]byte(nil), p...)})
}

func (r *recorder) End(ex uint32, trailers []Header, size int64) {
	if !r.open[ex] {
		r.errorf("End %d without Head", ex)
	}
	delete(r.open, ex)
	text := fmt.Sprintf("size=%d", size)
	if len(trailers) > 0 {
		var ts []string
		for _, f := range trailers {
			ts = append(ts, f.Name+": "+f.Value)
		}
		text += " trailers=[" + strings.Join(ts, ", ") + "]"
	}
	r.ev = append(r.ev, event{kind: "end", ex: ex, text: text})
}

func (r *recorder) Raw(p []byte) {
	if r.fallbacks == 0 {
		r.errorf("Raw before Fallback")
	}
	r.rawBytes += int64(len(p))
	if n := len(r.ev); n > 0 && r.ev[n-1].kind == "raw" {
		r.ev[n-1].data = append(r.ev[n-1].data, p...)
		return
	}
	r.ev = append(r.ev, event{kind: "raw", data: append([]byte(nil), p...)})
}

func (r *recorder) Fallback(reason string) {
	if r.fallbacks++; r.fallbacks > 1 {
		r.errorf("Fallback called twice: %q", reason)
	}
	r.ev = append(r.ev, event{kind: "fallback", text: reason})
}

// lines is the summary transcript the tests state expectations in.
func (r *recorder) lines() []string {
	s := make([]string, len(r.ev))
	for i, e := range r.ev {
		s[i] = e.String()
	}
	return s
}

// full adds head details, for comparing runs with each other.
func (r *recorder) full() string {
	var b strings.Builder
	for _, e := range r.ev {
		b.WriteString(e.String())
		if e.detail != "" {
			b.WriteString(" | " + e.detail)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func (r *recorder) fallback() string {
	for _, e := range r.ev {
		if e.kind == "fallback" {
			return e.text
		}
	}
	return ""
}

func (r *recorder) raw() []byte {
	var b []byte
	for _, e := range r.ev {
		if e.kind == "raw" {
			b = append(b, e.data...)
		}
	}
	return b
}

// feedPieces feeds b cut at cuts, each piece through a scratch buffer that is
// scribbled over afterwards: the parser must not keep input across calls.
func feedPieces(p *Parser, h Handler, b []byte, cuts []int) {
	prev := 0
	var scratch []byte
	for _, c := range append(cuts, len(b)) {
		scratch = append(scratch[:0], b[prev:c]...)
		p.Feed(scratch, h)
		for i := range scratch {
			scratch[i] = 0xAA
		}
		prev = c
	}
}

// run parses a connection: the requests, then the responses, then both
// Closes. The request parser goes first as in the proxy, where client bytes
// are parsed before they are forwarded.
type runResult struct {
	req, resp           *recorder
	reqStats, respStats Stats
}

func run(t testing.TB, req, resp []byte, reqCuts, respCuts []int) runResult {
	x := NewExchanges()
	rp, sp := NewRequestParser(x), NewResponseParser(x)
	res := runResult{req: newRecorder(t), resp: newRecorder(t)}
	feedPieces(rp, res.req, req, reqCuts)
	feedPieces(sp, res.resp, resp, respCuts)
	rp.Close(res.req)
	sp.Close(res.resp)
	res.reqStats, res.respStats = rp.Stats(), sp.Stats()
	checkAccounting(t, "request", res.req, res.reqStats, len(req))
	checkAccounting(t, "response", res.resp, res.respStats, len(resp))
	return res
}

// checkAccounting: every byte fed is head, framing, body or raw, and the
// body and raw counts are what the handler saw.
func checkAccounting(t testing.TB, dir string, r *recorder, s Stats, n int) {
	t.Helper()
	if sum := s.Head + s.Framing + s.Body + s.Raw; sum != int64(n) {
		t.Errorf("%s: stats %+v add up to %d, fed %d", dir, s, sum, n)
	}
	if s.Body != r.bodyBytes || s.Raw != r.rawBytes {
		t.Errorf("%s: stats %+v, handler saw body %d raw %d", dir, s, r.bodyBytes, r.rawBytes)
	}
}

func everyByte(n int) []int {
	c := make([]int, 0, n)
	for i := 1; i < n; i++ {
		c = append(c, i)
	}
	return c
}

// checkSplits parses req and resp whole, one byte at a time and cut in two
// at every position of each, and requires identical transcripts. It returns
// the whole-stream result.
func checkSplits(t *testing.T, req, resp []byte) runResult {
	t.Helper()
	whole := run(t, req, resp, nil, nil)
	wantReq, wantResp := whole.req.full(), whole.resp.full()
	compare := func(how string, r runResult) {
		t.Helper()
		if got := r.req.full(); got != wantReq {
			t.Fatalf("requests fed %s:\n%s\nwhole:\n%s", how, got, wantReq)
		}
		if got := r.resp.full(); got != wantResp {
			t.Fatalf("responses fed %s:\n%s\nwhole:\n%s", how, got, wantResp)
		}
	}
	compare("a byte at a time", run(t, req, resp, everyByte(len(req)), everyByte(len(resp))))
	for k := 1; k < len(req); k++ {
		compare(fmt.Sprintf("cut at %d", k), run(t, req, resp, []int{k}, nil))
	}
	for k := 1; k < len(resp); k++ {
		compare(fmt.Sprintf("response cut at %d", k), run(t, req, resp, nil, []int{k}))
	}
	return whole
}

func wantLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s events:\n  %s\nwant:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}
