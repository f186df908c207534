package httpstream

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// canonical are hand-written connections covering the framing rules.
var canonical = []struct {
	name      string
	req, resp string
	wantReq   []string
	wantResp  []string
}{
	{
		name: "get and post with content-length",
		req:  "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		resp: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
		wantReq: []string{
			"head 1 GET /a", "end 1 size=0",
			"head 2 POST /b", `body 2 "hello"`, "end 2 size=5",
		},
		wantResp: []string{
			"head 1 200", `body 1 "hi"`, "end 1 size=2",
			"head 2 201", "end 2 size=0",
		},
	},
	{
		name: "chunked with extensions and trailers",
		req: "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"5;name=val\r\nhello\r\n6 ; a=\"q;x\"\r\n world\r\n0;last\r\nX-Sum: 42\r\nX-Other:  y \r\n\r\n",
		resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\nA\r\n0123456789\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
		wantReq: []string{
			"head 1 POST /c", `body 1 "hello world"`, "end 1 size=11 trailers=[X-Sum: 42, X-Other: y]",
		},
		wantResp: []string{
			"head 1 200", `body 1 "0123456789abcdefghijklmnopqrstuvwxyz"`, "end 1 size=36",
		},
	},
	{
		name: "pipelined with HEAD",
		req: "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n" +
			"HEAD /2 HTTP/1.1\r\nHost: x\r\n\r\n" +
			"POST /3 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		resp: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na" +
			"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n",
		wantReq: []string{
			"head 1 GET /1", "end 1 size=0",
			"head 2 HEAD /2", "end 2 size=0",
			"head 3 POST /3", `body 3 "abc"`, "end 3 size=3",
		},
		wantResp: []string{
			"head 1 200", `body 1 "a"`, "end 1 size=1",
			"head 2 200", "end 2 size=0",
			"head 3 200", `body 3 "xyz"`, "end 3 size=3",
		},
	},
	{
		name: "204 and 304 have no body",
		req:  "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
		resp: "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n" +
			"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
		wantReq:  []string{"head 1 GET /1", "end 1 size=0", "head 2 GET /2", "end 2 size=0", "head 3 GET /3", "end 3 size=0"},
		wantResp: []string{"head 1 204", "end 1 size=0", "head 2 304", "end 2 size=0", "head 3 200", `body 3 "z"`, "end 3 size=1"},
	},
	{
		name: "304 then more",
		req:  "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
		resp: "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"e\"\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
		wantReq:  []string{"head 1 GET /1", "end 1 size=0", "head 2 GET /2", "end 2 size=0"},
		wantResp: []string{"head 1 304", "end 1 size=0", "head 2 200", `body 2 "z"`, "end 2 size=1"},
	},
	{
		name: "100-continue and 103 keep the exchange",
		req:  "POST /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\ndataGET /n HTTP/1.1\r\n\r\n",
		resp: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" +
			"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		wantReq: []string{"head 1 POST /u", `body 1 "data"`, "end 1 size=4", "head 2 GET /n", "end 2 size=0"},
		wantResp: []string{
			"head 1 100", "end 1 size=0",
			"head 1 103", "end 1 size=0",
			"head 1 200", `body 1 "ok"`, "end 1 size=2",
			"head 2 200", "end 2 size=0",
		},
	},
	{
		name: "101 upgrade then raw both ways",
		req: "GET /before HTTP/1.1\r\nHost: x\r\n\r\n" +
			"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n" +
			"\x81\x85abcd\x09\x07\x0f\x08\x0e",
		resp: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n." +
			"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" +
			"\x81\x02hiHTTP/1.1 200 not a response",
		wantReq: []string{
			"head 1 GET /before", "end 1 size=0",
			"head 2 GET /ws", "end 2 size=0", "fallback upgrade to websocket",
			`raw "\x81\x85abcd\t\a\x0f\b\x0e"`,
		},
		wantResp: []string{
			"head 1 200", `body 1 "."`, "end 1 size=1",
			"head 2 101", "end 2 size=0", "fallback upgrade to websocket",
			`raw "\x81\x02hiHTTP/1.1 200 not a response"`,
		},
	},
	{
		name:     "101 without Upgrade header names the protocol asked for",
		req:      "GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		resp:     "HTTP/1.1 101 Switching Protocols\r\n\r\n\x00\x00\x00\x04\x00",
		wantReq:  []string{"head 1 GET /", "end 1 size=0", "fallback upgrade to h2c", `raw "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"`},
		wantResp: []string{"head 1 101", "end 1 size=0", "fallback upgrade to h2c", `raw "\x00\x00\x00\x04\x00"`},
	},
	{
		name: "Upgrade without Connection: upgrade is not an upgrade request",
		req:  "GET /a HTTP/1.1\r\nUpgrade: h2c\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
		resp: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		wantReq: []string{
			"head 1 GET /a", "end 1 size=0", "head 2 GET /b", "end 2 size=0",
		},
		wantResp: []string{"head 1 200", "end 1 size=0", "head 2 200", "end 2 size=0"},
	},
	{
		name: "CONNECT tunnel",
		req:  "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01\x00\x05hello",
		resp: "HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03\x00\x02hi",
		wantReq: []string{
			"head 1 CONNECT example.com:443", "end 1 size=0", "fallback CONNECT tunnel",
			`raw "\x16\x03\x01\x00\x05hello"`,
		},
		wantResp: []string{
			"head 1 200", "end 1 size=0", "fallback CONNECT tunnel",
			`raw "\x16\x03\x03\x00\x02hi"`,
		},
	},
	{
		name:     "CONNECT refused",
		req:      "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		resp:     "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 4\r\n\r\nnope",
		wantReq:  []string{"head 1 CONNECT example.com:443", "end 1 size=0", "fallback CONNECT tunnel"},
		wantResp: []string{"head 1 407", `body 1 "nope"`, "end 1 size=4"},
	},
	{
		name:     "response read until close",
		req:      "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n",
		resp:     "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstream until close\r\n\r\nHTTP/1.1 200 OK\r\n",
		wantReq:  []string{"head 1 GET /stream", "end 1 size=0"},
		wantResp: []string{"head 1 200", `body 1 "stream until close\r\n\r\nHTTP/1.1 200 OK\r\n"`, "end 1 size=39"},
	},
	{
		name:     "response with a final coding other than chunked is read until close",
		req:      "GET / HTTP/1.1\r\n\r\n",
		resp:     "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b...",
		wantReq:  []string{"head 1 GET /", "end 1 size=0"},
		wantResp: []string{"head 1 200", `body 1 "\x1f\x8b..."`, "end 1 size=5"},
	},
	{
		name:     "response gzip then chunked",
		req:      "GET / HTTP/1.1\r\n\r\n",
		resp:     "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n\x1f\x8b\r\n0\r\n\r\n",
		wantReq:  []string{"head 1 GET /", "end 1 size=0"},
		wantResp: []string{"head 1 200", `body 1 "\x1f\x8b"`, "end 1 size=2"},
	},
	{
		name:     "HTTP/1.0",
		req:      "GET /old HTTP/1.0\r\nUser-Agent: x\r\n\r\n",
		resp:     "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold school",
		wantReq:  []string{"head 1 GET /old", "end 1 size=0"},
		wantResp: []string{"head 1 200", `body 1 "old school"`, "end 1 size=10"},
	},
	{
		name:     "bare LF line endings and empty lines between messages",
		req:      "POST /a HTTP/1.1\nContent-Length: 2\n\nab\r\n\r\nGET /b HTTP/1.1\nHost: x\n\n",
		resp:     "HTTP/1.1 200\nContent-Length: 0\n\n\r\nHTTP/1.1 200 \r\n\r\n",
		wantReq:  []string{"head 1 POST /a", `body 1 "ab"`, "end 1 size=2", "head 2 GET /b", "end 2 size=0"},
		wantResp: []string{"head 1 200", "end 1 size=0", "head 2 200", "end 2 size=0"},
	},
	{
		name:     "unsolicited response is exchange 0",
		req:      "",
		resp:     "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		wantResp: []string{"head 0 408", "end 0 size=0"},
	},
}

func TestParserCanonical(t *testing.T) {
	for _, tc := range canonical {
		t.Run(tc.name, func(t *testing.T) {
			r := checkSplits(t, []byte(tc.req), []byte(tc.resp))
			wantLines(t, "request", r.req.lines(), tc.wantReq)
			wantLines(t, "response", r.resp.lines(), tc.wantResp)
		})
	}
}

func TestParserHeadDetails(t *testing.T) {
	r := run(t,
		[]byte("PUT /x?y=1 HTTP/1.1\r\nHost: example\r\ncontent-LENGTH:3\r\nX-Empty:\r\nX-Pad: \t a b \t\r\n\r\nabc"),
		[]byte("HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n0\r\n\r\n"),
		nil, nil)
	want := "head 1 PUT /x?y=1 | HTTP/1.1 reason=\"\" chunked=false cl=3 [Host: example] [content-LENGTH: 3] [X-Empty: ] [X-Pad: a b]\n" +
		"body 1 \"abc\"\nend 1 size=3\n"
	if got := r.req.full(); got != want {
		t.Errorf("request:\n%s\nwant:\n%s", got, want)
	}
	want = "head 1 404 | HTTP/1.1 reason=\"Not Found\" chunked=true cl=-1 [Transfer-Encoding: chunked] [Content-Type: text/plain]\n" +
		"end 1 size=0\n"
	if got := r.resp.full(); got != want {
		t.Errorf("response:\n%s\nwant:\n%s", got, want)
	}
}

// Head strings stay valid after the call; the Headers slice is reused.
func TestParserHeadStringsOutliveCall(t *testing.T) {
	var kept []string
	h := &funcHandler{head: func(_ uint32, h *Head) { kept = append(kept, h.Target, h.Get("host")) }}
	p := NewRequestParser(nil)
	in := []byte("GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: b\r\n\r\n")
	p.Feed(in, h)
	for i := range in {
		in[i] = 'x'
	}
	if got := strings.Join(kept, " "); got != "/one a /two b" {
		t.Errorf("kept %q", got)
	}
}

type funcHandler struct {
	head func(uint32, *Head)
	body func(uint32, []byte)
	raw  func([]byte)
}

func (f *funcHandler) Head(ex uint32, h *Head) {
	if f.head != nil {
		f.head(ex, h)
	}
}

func (f *funcHandler) Body(ex uint32, p []byte) {
	if f.body != nil {
		f.body(ex, p)
	}
}
func (f *funcHandler) End(uint32, []Header, int64) {}
func (f *funcHandler) Raw(p []byte) {
	if f.raw != nil {
		f.raw(p)
	}
}
func (f *funcHandler) Fallback(string) {}

// Body bytes are sub-slices of the fed piece, not copies.
func TestParserBodyIsSubslice(t *testing.T) {
	head := []byte("POST / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n")
	piece := make([]byte, 64<<10)
	ok := false
	h := &funcHandler{body: func(_ uint32, p []byte) { ok = &p[0] == &piece[0] && len(p) == len(piece) }}
	p := NewRequestParser(nil)
	p.Feed(head, h)
	p.Feed(piece, h)
	if !ok {
		t.Error("body was not passed as the fed piece")
	}
}

// ok is a complete request that precedes each bad one: the bad message, and
// everything after, must be Raw.
const okReq = "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"

var smuggling = []struct {
	name   string
	msg    string
	reason string
}{
	{"TE and CL", "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "both Transfer-Encoding and Content-Length"},
	{"CL and TE", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", "both Transfer-Encoding and Content-Length"},
	{"differing CL", "POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\nhello!", "differing Content-Length values \"5\" and \"6\""},
	{"CL list", "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello", "invalid Content-Length \"5, 5\""},
	{"CL sign", "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello", "invalid Content-Length \"+5\""},
	{"CL negative", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length \"-1\""},
	{"CL hex", "POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\nhello", "invalid Content-Length \"0x5\""},
	{"CL empty", "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", "invalid Content-Length \"\""},
	{"CL overflow", "POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n", "invalid Content-Length"},
	{"obs-fold", "GET / HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", "obs-fold"},
	{"obs-fold tab", "GET / HTTP/1.1\r\nX-A: b\r\n\tTransfer-Encoding: chunked\r\n\r\n", "obs-fold"},
	{"leading whitespace", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", "obs-fold"},
	{"TE gzip in request", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "unsupported Transfer-Encoding \"gzip, chunked\" in request"},
	{"TE identity", "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", "unsupported Transfer-Encoding"},
	{"TE xchunked", "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", "unsupported Transfer-Encoding"},
	{"TE twice", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "multiple Transfer-Encoding fields"},
	{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "Transfer-Encoding in an HTTP/1.0 message"},
	{"bare CR in value", "GET / HTTP/1.1\r\nX: a\rTransfer-Encoding: chunked\r\n\r\n", "bare CR"},
	{"bare CR ending a line", "GET / HTTP/1.1\r\nX: a\r\r\n\r\n", "bare CR"},
	{"bare CR in request line", "GET / HTTP/1.1\rX\r\n\r\n", "bare CR in start line"},
	{"space before colon", "POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello", "whitespace in header name \"Content-Length \""},
	{"tab before colon", "POST / HTTP/1.1\r\nTransfer-Encoding\t: chunked\r\n\r\n", "whitespace in header name"},
	{"invalid name byte", "GET / HTTP/1.1\r\nX(y): 1\r\n\r\n", "unexpected byte '(' in header name"},
	{"empty name", "GET / HTTP/1.1\r\n: 1\r\n\r\n", "empty header name"},
	{"no colon", "GET / HTTP/1.1\r\nHost\r\n\r\n", "header line without colon"},
	{"NUL in value", "GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", "unexpected byte '\\x00' in value of header \"X\""},
	{"too many lines", "GET / HTTP/1.1\r\n" + strings.Repeat("X: y\r\n", MaxHeaderLines+1) + "\r\n", "more than 200 header lines"},
	{"head too large", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", MaxHeadBytes) + "\r\n\r\n", "head larger than 65536 bytes"},
	{"head too large without line end", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", MaxHeadBytes), "head larger than 65536 bytes"},
	{"request line too large", "GET /" + strings.Repeat("a", MaxHeadBytes), "head larger than 65536 bytes"},
	{"bad version", "GET / HTTP/2.0\r\n\r\n", "malformed start line: unexpected byte '2' in version"},
	{"garbage", "\x16\x03\x01", "malformed start line: unexpected byte '\\x16' in method at offset 0"},
}

func TestParserSmuggling(t *testing.T) {
	for _, tc := range smuggling {
		t.Run(tc.name, func(t *testing.T) {
			tail := "GET /after HTTP/1.1\r\n\r\n"
			req := []byte(okReq + tc.msg + tail)
			var r runResult
			if len(req) < 4096 {
				r = checkSplits(t, req, nil)
			} else {
				r = run(t, req, nil, nil, nil)
				if r2 := run(t, req, nil, everyByte(len(req)), nil); r2.req.full() != r.req.full() {
					t.Fatalf("a byte at a time:\n%s\nwhole:\n%s", r2.req.full(), r.req.full())
				}
			}
			got := r.req.lines()
			if len(got) != 4 || got[0] != "head 1 GET /ok" || got[1] != "end 1 size=0" {
				t.Fatalf("events: %q", got)
			}
			if fb := r.req.fallback(); !strings.HasPrefix(fb, "parse error: ") || !strings.Contains(fb, tc.reason) {
				t.Errorf("fallback %q, want parse error naming %q", fb, tc.reason)
			}
			if raw := string(r.req.raw()); raw != tc.msg+tail {
				t.Errorf("raw %q, want the bad message and the rest", raw)
			}
		})
	}
}

// The same rules apply to responses, plus their own.
func TestParserResponseSmuggling(t *testing.T) {
	for _, tc := range []struct{ resp, reason string }{
		{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "both Transfer-Encoding and Content-Length"},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "chunked is not the final transfer coding"},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", "chunked is not the final transfer coding"},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\n\r\n", "empty Transfer-Encoding"},
		{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "differing Content-Length"},
		{"HTTP/1.1 20 OK\r\n\r\n", "unexpected byte ' ' in status code"},
		{"HTTP/1.1 099 Odd\r\n\r\n", "status code 099"},
		{"HTTP/1.1 200 O\x01K\r\n\r\n", "unexpected byte '\\x01' in reason phrase"},
		{"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "Transfer-Encoding in an HTTP/1.0 message"},
		{"HTTP/1.1 200 OK\r\nX: 1\r\n  folded\r\n\r\n", "obs-fold"},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			okResp := "HTTP/1.1 204 No Content\r\n\r\n"
			r := checkSplits(t, []byte(okReq+okReq), []byte(okResp+tc.resp))
			got := r.resp.lines()
			if len(got) != 4 || got[0] != "head 1 204" {
				t.Fatalf("events %q", got)
			}
			if fb := r.resp.fallback(); !strings.HasPrefix(fb, "parse error: ") || !strings.Contains(fb, tc.reason) {
				t.Errorf("fallback %q, want parse error naming %q", fb, tc.reason)
			}
			if raw := string(r.resp.raw()); raw != tc.resp {
				t.Errorf("raw %q", raw)
			}
		})
	}
}

// Chunk framing errors: what was already passed on stays passed on, the
// rest from the bad framing is Raw.
func TestParserChunkErrors(t *testing.T) {
	const head = "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, tc := range []struct {
		body, raw, reason string
		size              int
	}{
		{"5\r\nhello\r\nzz\r\n", "zz\r\n", "invalid chunk size \"zz\"", 5},
		{"5x\r\nhello\r\n", "5x\r\nhello\r\n", "invalid chunk size \"5x\"", 0},
		{"5\r\nhelloXY0\r\n\r\n", "XY0\r\n\r\n", "missing CRLF after chunk data", 5},
		{"5\r\nhello\rX0\r\n\r\n", "X0\r\n\r\n", "missing CRLF after chunk data", 5},
		{"5\nhello\r\n", "5\nhello\r\n", "chunk-size line \"5\\n\" not ended by CRLF", 0},
		{"10000000000000000\r\n", "10000000000000000\r\n", "chunk size \"10000000000000000\" too large", 0},
		{"5;a\x00b\r\n", "5;a\x00b\r\n", "unexpected byte '\\x00' in chunk extension", 0},
		{"5;a\rb\r\n", "5;a\rb\r\n", "bare CR in chunk extension", 0},
		{" 5\r\n", " 5\r\n", "invalid chunk size", 0},
		{"5;" + strings.Repeat("e", maxChunkLine), "5;" + strings.Repeat("e", maxChunkLine), "chunk-size line longer than 4096 bytes", 0},
		{"0\r\nX: 1\r\n folded\r\n\r\n", "X: 1\r\n folded\r\n\r\n", "obs-fold", 0},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			r := checkSplits(t, []byte(head+tc.body), nil)
			if fb := r.req.fallback(); fb != "parse error: "+tc.reason && !strings.Contains(fb, tc.reason) {
				t.Errorf("fallback %q, want %q", fb, tc.reason)
			}
			if got := string(r.req.raw()); got != tc.raw {
				t.Errorf("raw %q, want %q", got, tc.raw)
			}
			var body int
			for _, e := range r.req.ev {
				if e.kind == "body" {
					body += len(e.data)
				}
				if e.kind == "end" {
					t.Errorf("End for a failed message")
				}
			}
			if body != tc.size {
				t.Errorf("body %d bytes, want %d", body, tc.size)
			}
		})
	}
}

// Limits are inclusive: a head of exactly MaxHeadBytes, or of exactly
// MaxHeaderLines lines, is fine.
func TestParserLimits(t *testing.T) {
	start := "GET / HTTP/1.1\r\nX: "
	pad := MaxHeadBytes - len(start) - len("\r\n\r\n")
	exact := start + strings.Repeat("a", pad) + "\r\n\r\n"
	for _, tc := range []struct {
		name, req string
		ok        bool
	}{
		{"head of MaxHeadBytes", exact, true},
		{"head of MaxHeadBytes+1", start + strings.Repeat("a", pad+1) + "\r\n\r\n", false},
		{"MaxHeaderLines lines", "GET / HTTP/1.1\r\n" + strings.Repeat("X: y\r\n", MaxHeaderLines) + "\r\n", true},
		{"method of 32 bytes", strings.Repeat("M", maxMethod) + " / HTTP/1.1\r\n\r\n", true},
		{"method of 33 bytes", strings.Repeat("M", maxMethod+1) + " / HTTP/1.1\r\n\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cuts := range [][]int{nil, {1}, {len(tc.req) - 1}, {len(tc.req) / 2, len(tc.req) - 3}} {
				r := run(t, []byte(tc.req), nil, cuts, nil)
				if fb := r.req.fallback(); (fb == "") != tc.ok {
					t.Errorf("cuts %v: fallback %q", cuts, fb)
				}
			}
		})
	}
}

// A stream that is not HTTP/1.x is recognised at its first contradicting
// byte, and all of it is Raw.
func TestParserNotHTTP(t *testing.T) {
	clientHello := "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + strings.Repeat("\x5a", 32) + "\x20"
	for _, tc := range []struct {
		name     string
		response bool
		in       string
		at       int // index of the byte that decides
		reason   string
	}{
		{"TLS ClientHello", false, clientHello, 0, "not HTTP/1.x: unexpected byte '\\x16' in method at offset 0"},
		{"redis inline PING", false, "PING\r\n", 4, "not HTTP/1.x: unexpected byte '\\r' in method at offset 4"},
		{"redis RESP", false, "*1\r\n$4\r\nPING\r\n", 2, "in method at offset 2"},
		{"binary", false, "\x00\x01\x02\x03", 0, "unexpected byte '\\x00' in method"},
		{"HTTP/2 preface", false, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 11, "unexpected byte '2' in version at offset 11"},
		{"HTTP/0.9", false, "GET /\r\n", 5, "unexpected byte '\\r' in request target"},
		{"SSH", false, "SSH-2.0-OpenSSH_9.6\r\n", 19, "in method at offset 19"},
		{"long token", false, strings.Repeat("A", 40), maxMethod, "method longer than 32 bytes"},
		{"SMTP greeting", true, "220 mail.example.com ESMTP\r\n", 0, "not HTTP/1.x: unexpected byte '2' in version at offset 0"},
		{"TLS ServerHello", true, "\x16\x03\x03\x00\x7a\x02", 0, "unexpected byte '\\x16' in version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := NewExchanges()
			p := NewRequestParser(x)
			if tc.response {
				p = NewResponseParser(x)
			}
			r := newRecorder(t)
			for i := 0; i < len(tc.in); i++ {
				p.Feed([]byte{tc.in[i]}, r)
				if decided := r.fallbacks > 0; decided != (i >= tc.at) {
					t.Fatalf("after byte %d: fallback %v", i, decided)
				}
			}
			p.Close(r)
			if fb := r.fallback(); !strings.HasPrefix(fb, "not HTTP/1.x: ") || !strings.Contains(fb, tc.reason) {
				t.Errorf("fallback %q, want %q", fb, tc.reason)
			}
			if got := string(r.raw()); got != tc.in {
				t.Errorf("raw %q", got)
			}
			if !p.Raw() {
				t.Error("Raw() false")
			}
			if len(tc.in) < 100 {
				checkSplits(t, []byte(tc.in), nil)
			}
		})
	}
}

func TestParserClose(t *testing.T) {
	for _, tc := range []struct {
		name, req string
		want      []string
	}{
		{"clean", "GET / HTTP/1.1\r\n\r\n", []string{"head 1 GET /", "end 1 size=0"}},
		{"inside head", "GET / HTTP/1.1\r\nHost: a\r\n", []string{
			"fallback parse error: stream ended inside a message head", `raw "GET / HTTP/1.1\r\nHost: a\r\n"`,
		}},
		{"inside request line", "GET / HT", []string{
			"fallback parse error: stream ended inside a message head", `raw "GET / HT"`,
		}},
		{"inside body", "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel", []string{
			"head 1 POST /", `body 1 "hel"`, "fallback parse error: stream ended inside a message body",
		}},
		{"inside chunk-size line", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1f", []string{
			"head 1 POST /", `body 1 "hello"`, "fallback parse error: stream ended inside a message body", `raw "1f"`,
		}},
		{"inside trailers", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n", []string{
			"head 1 POST /", "fallback parse error: stream ended inside a message body", `raw "X: y\r\n"`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := checkSplits(t, []byte(tc.req), nil)
			wantLines(t, "request", r.req.lines(), tc.want)
		})
	}
	// Raw() is about switching to raw, not about Close.
	p := NewRequestParser(nil)
	p.Feed([]byte("GET / HTTP/1.1\r\n\r\n"), newRecorder(t))
	p.Close(newRecorder(t))
	if p.Raw() {
		t.Error("Raw() after a clean Close")
	}
	p = NewRequestParser(nil)
	p.Feed([]byte("GET / HTTP/1.1\r\nX"), newRecorder(t))
	if p.Close(newRecorder(t)); !p.Raw() {
		t.Error("Raw() false after a parse error at Close")
	}
	// Bytes fed after Close are Raw, not lost.
	p, r := NewRequestParser(nil), newRecorder(nil)
	p.Close(r)
	p.Feed([]byte("late"), r)
	if p.Stats().Raw != 4 {
		t.Errorf("after Close: %+v", p.Stats())
	}
}

// genConn builds a random valid connection and what parsing it must yield.
type genConn struct {
	req, resp         []byte
	reqHead, respHead int // head bytes
	reqFrame, respFrm int // framing bytes
	reqBody, respBody [][]byte
}

func genConnection(rng *rand.Rand) genConn {
	var g genConn
	n := 1 + rng.IntN(6)
	methods := []string{"GET", "POST", "PUT", "HEAD", "DELETE", "PATCH"}
	for i := 1; i <= n; i++ {
		m := methods[rng.IntN(len(methods))]
		body := randBody(rng, m)
		head := fmt.Sprintf("%s /r%d?q=%d HTTP/1.1\r\nHost: h\r\n", m, i, rng.IntN(1000))
		for j := rng.IntN(4); j > 0; j-- {
			head += fmt.Sprintf("X-H%d: %s\r\n", j, strings.Repeat("v", rng.IntN(30)))
		}
		chunked := body != nil && rng.IntN(2) == 0
		var enc []byte
		var frame int
		switch {
		case chunked:
			head += "Transfer-Encoding: chunked\r\n"
			enc, frame = encodeChunked(rng, body)
		case body != nil:
			head += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n"
			enc = body
		}
		head += "\r\n"
		g.req = append(append(g.req, head...), enc...)
		g.reqHead += len(head)
		g.reqFrame += frame
		g.reqBody = append(g.reqBody, body)

		// Interim responses, then the final one.
		for j := rng.IntN(3); j > 0; j-- {
			interim := "HTTP/1.1 100 Continue\r\n\r\n"
			g.resp = append(g.resp, interim...)
			g.respHead += len(interim)
		}
		rbody := randBody(rng, "")
		status := []int{200, 200, 200, 201, 204, 304, 404}[rng.IntN(7)]
		rhead := fmt.Sprintf("HTTP/1.1 %d S\r\nServer: gen\r\n", status)
		noBody := m == "HEAD" || status == 204 || status == 304
		if noBody {
			// Framing headers that must be ignored.
			rhead += "Content-Length: 17\r\n"
			rbody = nil
		}
		last := i == n
		var renc []byte
		var rframe int
		switch {
		case noBody:
		case last && rng.IntN(3) == 0:
			renc = rbody // until close
		case rng.IntN(2) == 0:
			rhead += "Transfer-Encoding: chunked\r\n"
			renc, rframe = encodeChunked(rng, rbody)
		default:
			rhead += "Content-Length: " + strconv.Itoa(len(rbody)) + "\r\n"
			renc = rbody
		}
		rhead += "\r\n"
		g.resp = append(append(g.resp, rhead...), renc...)
		g.respHead += len(rhead)
		g.respFrm += rframe
		g.respBody = append(g.respBody, rbody)
	}
	return g
}

func randBody(rng *rand.Rand, method string) []byte {
	if method == "GET" || method == "HEAD" || rng.IntN(5) == 0 {
		return nil
	}
	b := make([]byte, rng.IntN(3000))
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return b
}

// encodeChunked frames body in random chunks with random extensions and
// trailers; it returns the encoding and how many bytes are framing.
func encodeChunked(rng *rand.Rand, body []byte) ([]byte, int) {
	var out []byte
	for rest := body; len(rest) > 0; {
		n := 1 + rng.IntN(len(rest))
		line := strconv.FormatInt(int64(n), 16)
		if rng.IntN(2) == 0 {
			line = strings.ToUpper(line)
		}
		if rng.IntN(3) == 0 {
			line += ";ext=" + strconv.Itoa(rng.IntN(100))
		}
		out = append(out, line+"\r\n"...)
		out = append(out, rest[:n]...)
		out = append(out, "\r\n"...)
		rest = rest[n:]
	}
	out = append(out, "0\r\n"...)
	if rng.IntN(2) == 0 {
		out = append(out, "X-Trailer: t\r\n"...)
	}
	out = append(out, "\r\n"...)
	return out, len(out) - len(body)
}

func randomCuts(rng *rand.Rand, n int) []int {
	var cuts []int
	for c := 0; ; {
		c += 1 + rng.IntN(1+rng.IntN(700))
		if c >= n {
			return cuts
		}
		cuts = append(cuts, c)
	}
}

// TestParserByteAccounting: for random valid connections cut at random,
// head, framing and decoded body bytes add up to the input, and the bodies
// come out exactly as they went in.
func TestParserByteAccounting(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 300; iter++ {
		g := genConnection(rng)
		r := run(t, g.req, g.resp, randomCuts(rng, len(g.req)), randomCuts(rng, len(g.resp)))
		if fb := r.req.fallback() + r.resp.fallback(); fb != "" {
			t.Fatalf("iteration %d: fallback %q", iter, fb)
		}
		want := Stats{Head: int64(g.reqHead), Framing: int64(g.reqFrame), Body: int64(len(bytes.Join(g.reqBody, nil)))}
		if r.reqStats != want {
			t.Errorf("iteration %d: request stats %+v, want %+v", iter, r.reqStats, want)
		}
		want = Stats{Head: int64(g.respHead), Framing: int64(g.respFrm), Body: int64(len(bytes.Join(g.respBody, nil)))}
		if r.respStats != want {
			t.Errorf("iteration %d: response stats %+v, want %+v", iter, r.respStats, want)
		}
		checkBodies(t, iter, "request", r.req, g.reqBody)
		checkBodies(t, iter, "response", r.resp, g.respBody)
	}
}

func checkBodies(t *testing.T, iter int, dir string, r *recorder, want [][]byte) {
	t.Helper()
	got := make([][]byte, len(want))
	ends := 0
	for _, e := range r.ev {
		switch e.kind {
		case "body":
			got[e.ex-1] = append(got[e.ex-1], e.data...)
		case "end":
			ends++ // interim responses end too: at least one per message
		}
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("iteration %d: %s %d body differs: %d bytes, want %d", iter, dir, i+1, len(got[i]), len(want[i]))
		}
	}
	if ends < len(want) {
		t.Errorf("iteration %d: %s: %d ends for %d messages", iter, dir, ends, len(want))
	}
}

// invalidValueByte checks eight bytes at a time; it must agree with the
// byte-by-byte definition everywhere.
func TestInvalidValueByte(t *testing.T) {
	naive := func(v []byte) int {
		for i, c := range v {
			if c < ' ' && c != '\t' || c == 0x7f {
				return i
			}
		}
		return -1
	}
	rng := rand.New(rand.NewPCG(3, 4))
	fillers := []byte{' ', '!', 'a', '~', 0x80, 0xff, 0x7e, 0x20, '\t', 0xa0}
	for n := 0; n <= 24; n++ {
		v := make([]byte, n)
		for pos := -1; pos < n; pos++ {
			for c := 0; c < 256; c++ {
				for i := range v {
					v[i] = fillers[rng.IntN(len(fillers))]
				}
				if pos >= 0 {
					v[pos] = byte(c)
				}
				if got, want := invalidValueByte(v), naive(v); got != want {
					t.Fatalf("%q: %d, want %d", v, got, want)
				}
			}
		}
	}
}
