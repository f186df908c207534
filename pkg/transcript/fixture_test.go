package transcript

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/recording"
)

const (
	c2s = recording.DirClientToServer
	s2c = recording.DirServerToClient
)

var t0 = time.Date(2025, 3, 4, 10, 20, 30, 0, time.UTC)

// rec builds a recording's chunks the way the recorder appends them.
type rec struct {
	tb     testing.TB
	chunks []recording.Chunk
}

func (r *rec) add(at time.Duration, kind recording.Kind, dir recording.Dir, ex uint32, payload []byte) {
	r.chunks = append(r.chunks, recording.Chunk{
		Seq: uint64(len(r.chunks)), Time: t0.Add(at), Kind: kind, Dir: dir, Exchange: ex, Payload: payload,
	})
}

func (r *rec) json(at time.Duration, kind recording.Kind, dir recording.Dir, ex uint32, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		r.tb.Fatal(err)
	}
	r.add(at, kind, dir, ex, b)
}

func (r *rec) meta(m recording.Meta) { r.json(0, recording.KindMeta, recording.DirNone, 0, m) }

func (r *rec) request(at time.Duration, ex uint32, method, target string, hs ...string) {
	r.json(at, recording.KindHTTPHead, c2s, ex, recording.HTTPHead{
		Request: true, Method: method, Target: target, Proto: "HTTP/1.1", Headers: headers(hs...),
	})
}

func (r *rec) response(at time.Duration, ex uint32, status int, reason string, hs ...string) {
	r.json(at, recording.KindHTTPHead, s2c, ex, recording.HTTPHead{
		Proto: "HTTP/1.1", Status: status, Reason: reason, Headers: headers(hs...),
	})
}

func (r *rec) body(at time.Duration, dir recording.Dir, ex uint32, b string) {
	r.add(at, recording.KindHTTPBody, dir, ex, []byte(b))
}

func (r *rec) end(at time.Duration, dir recording.Dir, ex uint32, size int64, trailers ...string) {
	r.json(at, recording.KindHTTPEnd, dir, ex, recording.HTTPEnd{BodySize: size, Trailers: headers(trailers...)})
}

func (r *rec) data(at time.Duration, dir recording.Dir, b string) {
	r.add(at, recording.KindData, dir, 0, []byte(b))
}

func (r *rec) note(at time.Duration, dir recording.Dir, code, msg string) {
	r.json(at, recording.KindNote, dir, 0, recording.Note{Code: code, Message: msg})
}

// finish appends End and Seal chunks and returns the sealed input.
func (r *rec) finish(meta recording.Meta, at time.Duration, sent, received int64) Input {
	end := recording.End{End: t0.Add(at), BytesSent: sent, BytesReceived: received, Verdict: audit.VerdictUpgraded}
	r.json(at, recording.KindEnd, recording.DirNone, 0, end)
	r.json(at, recording.KindSeal, recording.DirNone, 0, recording.Seal{Chunks: uint64(len(r.chunks) + 1)})
	return Input{Meta: meta, Chunks: r.chunks, End: &end, Status: StatusSealed}
}

func headers(kv ...string) []recording.Header {
	var hs []recording.Header
	for i := 0; i+1 < len(kv); i += 2 {
		hs = append(hs, recording.Header{Name: kv[i], Value: kv[i+1]})
	}
	return hs
}

func testMeta() recording.Meta {
	return recording.Meta{
		ID:          "0123456789abcdef",
		Start:       t0,
		Rule:        "example-api",
		Level:       recording.LevelFull,
		Node:        "node-1",
		Source:      "10.1.2.3:40000",
		Destination: "93.184.216.34:80",
		Upstream:    "93.184.216.34:443",
		Process: &audit.Process{
			PID: 4242, Comm: "curl", UID: 1000,
			Pod: &audit.Pod{Namespace: "shop", Name: "web-7f9c", UID: "u", ServiceAccount: "web"},
		},
		TLS:     &audit.TLSInfo{Version: "TLS 1.3", Cipher: "TLS_AES_128_GCM_SHA256", ServerName: "example.com"},
		Verdict: audit.VerdictUpgraded,
	}
}

// Bodies of the HTTP fixture.
const (
	postBody     = `{"name":"widget","secret":"[REDACTED]"}`
	postWireSize = 44 // before redaction
	createdBody  = `{"id":7}`
	ansiRaw      = "\x1b[31mred\x1b[0m\x07 bell \u202eevil\r\n"
)

// binaryRaw is server bytes that are not text (and hide a clear-screen).
var binaryRaw = string([]byte{0x00, 0x01, 0xff, 0xfe, 0x1b, '[', '2', 'J', 0x80, 0x81})

// httpSession is a keep-alive session: GET with a chunked response, POST
// with JSON after a 100-continue, HEAD, then an upgrade to a raw protocol.
func httpSession(tb testing.TB) Input {
	r := &rec{tb: tb}
	m := testMeta()
	r.meta(m)
	ms := time.Millisecond

	r.request(0, 1, "GET", "/index.html?q=a%20b&x=1",
		"Host", "example.com", "User-Agent", "curl/8.5.0", "Accept", "*/*",
		"Authorization", "[REDACTED]", "Cookie", "session=[REDACTED]; theme=dark")
	r.end(0, c2s, 1, 0)
	r.json(12*ms, recording.KindHTTPHead, s2c, 1, recording.HTTPHead{
		Proto: "HTTP/1.1", Status: 200, Reason: "OK", Chunked: true,
		Headers: headers("Content-Type", "text/html; charset=utf-8", "Transfer-Encoding", "chunked",
			"Set-Cookie", "id=[REDACTED]; Path=/; HttpOnly"),
	})
	r.body(13*ms, s2c, 1, "<html>hello ")
	r.body(15*ms, s2c, 1, "world</html>\n")
	r.end(15*ms, s2c, 1, 25, "X-Checksum", "abc123")

	r.request(100*ms, 2, "POST", "/api/items",
		"Host", "example.com", "Content-Type", "application/json",
		"Content-Length", "44", "Expect", "100-continue")
	r.response(101*ms, 2, 100, "Continue")
	r.end(101*ms, s2c, 2, 0)
	r.body(102*ms, c2s, 2, postBody)
	r.end(102*ms, c2s, 2, postWireSize)
	r.response(110*ms, 2, 201, "Created",
		"Content-Type", "application/json", "Content-Length", "8", "Location", "/api/items/7")
	r.body(111*ms, s2c, 2, createdBody)
	r.end(111*ms, s2c, 2, 8)

	r.request(200*ms, 3, "HEAD", "/big", "Host", "example.com")
	r.end(200*ms, c2s, 3, 0)
	r.response(205*ms, 3, 200, "OK", "Content-Type", "application/octet-stream", "Content-Length", "123456")
	r.end(205*ms, s2c, 3, 0)

	r.request(300*ms, 4, "GET", "/chat", "Host", "example.com", "Connection", "Upgrade", "Upgrade", "echo/1")
	r.end(300*ms, c2s, 4, 0)
	r.response(302*ms, 4, 101, "Switching Protocols", "Connection", "Upgrade", "Upgrade", "echo/1")
	r.end(302*ms, s2c, 4, 0)
	r.note(302*ms, s2c, recording.NoteUpgrade, "upgrade: echo/1")

	r.data(400*ms, c2s, "HELLO\r\n")
	r.data(401*ms, s2c, "HELLO\r\n")
	r.data(500*ms, c2s, ansiRaw)
	r.data(501*ms, s2c, binaryRaw)
	return r.finish(m, 1000*ms, 1234, 5678)
}

// httpEvents is the expected event sequence of httpSession (kind, ms).
var httpEvents = []struct {
	kind EventKind
	at   int
}{
	{EventHead, 0}, {EventMessageEnd, 0},
	{EventHead, 12}, {EventBody, 13}, {EventBody, 15}, {EventMessageEnd, 15},
	{EventHead, 100}, {EventHead, 101}, {EventMessageEnd, 101}, {EventBody, 102}, {EventMessageEnd, 102},
	{EventHead, 110}, {EventBody, 111}, {EventMessageEnd, 111},
	{EventHead, 200}, {EventMessageEnd, 200}, {EventHead, 205}, {EventMessageEnd, 205},
	{EventHead, 300}, {EventMessageEnd, 300}, {EventHead, 302}, {EventMessageEnd, 302}, {EventNote, 302},
	{EventData, 400}, {EventData, 401}, {EventData, 500}, {EventData, 501},
	{EventEnd, 1000},
}

func mustBuild(tb testing.TB, in Input) *Transcript {
	tb.Helper()
	tr, err := Build(in)
	if err != nil {
		tb.Fatalf("Build: %v", err)
	}
	return tr
}
