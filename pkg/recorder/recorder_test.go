package recorder

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/intransit/intransit/pkg/httpstream"
	"github.com/intransit/intransit/pkg/recording"
	"github.com/intransit/intransit/pkg/redact"
	"github.com/intransit/intransit/pkg/transcript"
)

// Canary secrets: none of them may reach a recording or an export.
const (
	secBearer       = "CANARYbearer7Qx9v2LmN4pR8sT"
	secCookie       = "CANARYcookie3kJh5"
	secSetCookie    = "CANARYsetcookie9Wq"
	secXAPIKey      = "CANARYxapikey4Ty"
	secQuery        = "CANARYquery8Zp"
	secInjected     = "CANARYinjected6Rb"
	secPassword     = "CANARYpassword2Vn"
	secJSONAPIKey   = "CANARYjsonapikey5Lm"
	secToken        = "CANARYtoken1Hs"
	secClientSecret = "CANARYclientsecret0Gf"
	secRefresh      = "CANARYrefresh3Dd"
	secJWTPayload   = "eyJzdWIiOiJDQU5BUlkifQ"
	secJWTSig       = "CANARYjwtsig8Kk"
	secJWTChunkSig  = "CANARYjwtchunk4Pp"
	secAWS          = "AKIAZZCANARY12345678"

	jwt1 = "eyJhbGciOiJIUzI1NiJ9." + secJWTPayload + "." + secJWTSig + "_-x"
	jwt2 = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0." + secJWTChunkSig

	injectedHeader = "X-Injected-Cred"
)

var allSecrets = []string{
	secBearer, secCookie, secSetCookie, secXAPIKey, secQuery, secInjected, secPassword, secJSONAPIKey,
	secToken, secClientSecret, secRefresh, secJWTPayload, secJWTSig, secJWTChunkSig, secAWS,
}

// keepAliveSession is an HTTP/1.1 keep-alive session as the relay sees it:
// five exchanges (GET with a secret query, JSON POST answered with a
// chunked JSON body and a trailer, HEAD, GET answered with a chunked text
// body whose JWT is split by the chunk framing, and an upgrade to
// websocket), then raw bytes both ways.
func keepAliveSession() (msgs []msg, rawUp, rawDown string) {
	body1 := "visible-text-marker\nyour session: " + jwt1 + " (keep it)\n"
	login := `{"user":"alice","password":"` + secPassword + `","profile":{"api_key":"` + secJSONAPIKey +
		`","sessions":[{"token":"` + secToken + `","id":7}]},"client_secret":"` + secClientSecret +
		`","note":"visible-json-marker"}`
	c1, c2, c3 := `{"ok":true,`, `"refresh_token":"`+secRefresh+`",`, `"greeting":"visible-chunked-marker"}`
	log1 := "visible-log-marker line 1\nid_token " + jwt2[:30]
	log2 := jwt2[30:] + "\nline 3\n"
	rawUp = "hello visible-raw-marker " + secAWS + " end\n"
	rawDown = "ack " + secAWS + " visible-raw-reply\n"
	msgs = []msg{
		{true, "GET /v1/items?access_token=" + secQuery + "&page=2 HTTP/1.1\r\nHost: api.example.com\r\n" +
			"Authorization: Bearer " + secBearer + "\r\nCookie: theme=dark; session=" + secCookie + "\r\n" +
			"X-Api-Key: " + secXAPIKey + "\r\n" + injectedHeader + ": " + secInjected + "\r\nAccept: */*\r\n\r\n"},
		{false, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: sid=%s; HttpOnly\r\n"+
			"Content-Length: %d\r\n\r\n%s", secSetCookie, len(body1), body1)},
		{true, fmt.Sprintf("POST /v1/login HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n"+
			"%s: %s\r\nContent-Length: %d\r\n\r\n%s", injectedHeader, secInjected, len(login), login)},
		{false, fmt.Sprintf("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"+
			"%x\r\n%s\r\n%x\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Checksum: visible-trailer\r\n\r\n", len(c1), c1, len(c2), c2, len(c3), c3)},
		{true, "HEAD /v1/items HTTP/1.1\r\nHost: api.example.com\r\n" + injectedHeader + ": " + secInjected + "\r\n\r\n"},
		{false, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4096\r\n\r\n"},
		{true, "GET /v1/log HTTP/1.1\r\nHost: api.example.com\r\n" + injectedHeader + ": " + secInjected + "\r\n\r\n"},
		{false, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"+
			"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", len(log1), log1, len(log2), log2)},
		{true, "GET /ws HTTP/1.1\r\nHost: api.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + injectedHeader + ": " + secInjected + "\r\n\r\n"},
		{false, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"},
		{true, rawUp},
		{false, rawDown},
	}
	return msgs, rawUp, rawDown
}

func TestKeepAliveSession(t *testing.T) {
	for _, sp := range splitters {
		t.Run(sp.name, func(t *testing.T) {
			s, dir := testStore(t, "", recording.StoreOptions{})
			red := defaultRedactor(t)
			var fails failures
			r := start(t, s, Options{Full: true, Redactor: red, MaskHeaders: []string{"x-injected-cred"}, Failed: fails.record})
			msgs, rawUp, rawDown := keepAliveSession()
			feed(t, r, msgs, sp, 1)
			finish(t, r)
			if errs := fails.get(); len(errs) > 0 {
				t.Fatalf("Failed called: %v", errs)
			}
			l := load(t, dir, r.ID())
			mustSealed(t, l)
			if l.rec.End == nil || l.rec.End.Truncated || l.rec.End.BytesSent != 1 {
				t.Errorf("End %+v", l.rec.End)
			}
			checkKeepAlive(t, l, red, rawUp, rawDown)
			l.checkSecrets(t, allSecrets)
			// The non-secret content is in the file, in clear: the absence
			// of the secrets above is not an artefact of encoding. (Fed in
			// pieces, it is split across chunks.)
			in := l.file
			if sp.name != "whole" {
				in = append(l.payloads(recording.DirClientToServer), l.payloads(recording.DirServerToClient)...)
			}
			for _, v := range []string{"visible-text-marker", "visible-json-marker", "visible-chunked-marker",
				"visible-log-marker", "visible-raw-marker", "visible-raw-reply", "api.example.com"} {
				if !bytes.Contains(in, []byte(v)) {
					t.Errorf("%q missing from the recording", v)
				}
			}
		})
	}
}

func checkKeepAlive(t *testing.T, l *loaded, red *redact.Redactor, rawUp, rawDown string) {
	t.Helper()
	tr := l.tr
	want := []struct {
		method string
		status int
	}{{"GET", 200}, {"POST", 201}, {"HEAD", 200}, {"GET", 200}, {"GET", 101}}
	if len(tr.Exchanges) != len(want) {
		t.Fatalf("%d exchanges, want %d", len(tr.Exchanges), len(want))
	}
	for i, w := range want {
		ex := tr.Exchanges[i]
		if ex.N != uint32(i+1) || ex.Request == nil || ex.Response == nil {
			t.Fatalf("exchange %d: %+v", i+1, ex)
		}
		if ex.Request.Head.Method != w.method || ex.Response.Head.Status != w.status {
			t.Errorf("exchange %d: %s -> %d, want %s -> %d", ex.N, ex.Request.Head.Method, ex.Response.Head.Status, w.method, w.status)
		}
		if !ex.Request.Complete || !ex.Response.Complete {
			t.Errorf("exchange %d: incomplete", ex.N)
		}
		if got := header(ex.Request.Head.Headers, injectedHeader); got != redact.Mask {
			t.Errorf("exchange %d: injected header recorded as %q", ex.N, got)
		}
		if got := header(ex.Request.Head.Headers, "Host"); got != "api.example.com" {
			t.Errorf("exchange %d: Host %q", ex.N, got)
		}
	}
	ex := tr.Exchanges
	if got := ex[0].Request.Head.Target; got != "/v1/items?access_token="+redact.Mask+"&page=2" {
		t.Errorf("target %q", got)
	}
	for _, h := range []string{"Authorization", "Cookie", "X-Api-Key"} {
		if got := header(ex[0].Request.Head.Headers, h); got != redact.Mask {
			t.Errorf("%s recorded as %q", h, got)
		}
	}
	if got := header(ex[0].Response.Head.Headers, "Set-Cookie"); got != redact.Mask {
		t.Errorf("Set-Cookie recorded as %q", got)
	}
	body1 := string(ex[0].Response.Body)
	if !strings.HasPrefix(body1, "visible-text-marker\nyour session: "+redact.Mask) || !strings.HasSuffix(body1, " (keep it)\n") {
		t.Errorf("response 1 body %q", body1)
	}
	if ex[0].Response.BodySize <= int64(len(body1)) {
		t.Errorf("response 1 body size %d, recorded %d bytes: want the wire size", ex[0].Response.BodySize, len(body1))
	}

	// The JSON request body: valid JSON, structure kept, secrets masked.
	var login struct {
		User     string `json:"user"`
		Password string `json:"password"`
		Profile  struct {
			APIKey   string `json:"api_key"`
			Sessions []struct {
				Token string `json:"token"`
				ID    int    `json:"id"`
			} `json:"sessions"`
		} `json:"profile"`
		ClientSecret string `json:"client_secret"`
		Note         string `json:"note"`
	}
	if err := json.Unmarshal(ex[1].Request.Body, &login); err != nil {
		t.Fatalf("request 2 body %q: %v", ex[1].Request.Body, err)
	}
	if login.User != "alice" || login.Note != "visible-json-marker" || len(login.Profile.Sessions) != 1 || login.Profile.Sessions[0].ID != 7 ||
		login.Password != redact.Mask || login.Profile.APIKey != redact.Mask || login.Profile.Sessions[0].Token != redact.Mask || login.ClientSecret != redact.Mask {
		t.Errorf("request 2 body %s", ex[1].Request.Body)
	}
	if !ex[1].Response.Head.Chunked {
		t.Error("response 2 not marked chunked")
	}
	var created map[string]any
	if err := json.Unmarshal(ex[1].Response.Body, &created); err != nil {
		t.Fatalf("response 2 body %q: %v", ex[1].Response.Body, err)
	}
	if created["greeting"] != "visible-chunked-marker" || created["refresh_token"] != redact.Mask || created["ok"] != true {
		t.Errorf("response 2 body %s", ex[1].Response.Body)
	}
	if got := header(ex[1].Response.Trailers, "X-Checksum"); got != "visible-trailer" {
		t.Errorf("response 2 trailers %+v", ex[1].Response.Trailers)
	}
	// HEAD: no body whatever Content-Length says.
	if len(ex[2].Response.Body) != 0 || ex[2].Response.BodySize != 0 {
		t.Errorf("HEAD response body %q (size %d)", ex[2].Response.Body, ex[2].Response.BodySize)
	}
	if got := string(ex[3].Response.Body); got != "visible-log-marker line 1\nid_token "+redact.Mask+"\nline 3\n" {
		t.Errorf("response 4 body %q", got)
	}

	// After the upgrade: a note, then raw bytes, in each direction.
	for _, dir := range []recording.Dir{recording.DirClientToServer, recording.DirServerToClient} {
		note, data := -1, -1
		for i, c := range l.rec.Chunks {
			if c.Dir != dir {
				continue
			}
			if c.Kind == recording.KindNote && note < 0 {
				var n recording.Note
				if err := json.Unmarshal(c.Payload, &n); err != nil || n.Code != recording.NoteUpgrade {
					t.Errorf("dir %d: note %s", dir, c.Payload)
				}
				note = i
			}
			if c.Kind == recording.KindData && data < 0 {
				data = i
			}
		}
		if note < 0 || data < 0 || data < note {
			t.Errorf("dir %d: upgrade note at chunk %d, first data chunk at %d", dir, note, data)
		}
	}
	// Raw bytes are redacted exactly as the whole stream would be.
	if got, want := l.rawData(recording.DirClientToServer), red.Bytes([]byte(rawUp)); !bytes.Equal(got, want) {
		t.Errorf("raw client bytes %q, want %q", got, want)
	}
	if got, want := l.rawData(recording.DirServerToClient), red.Bytes([]byte(rawDown)); !bytes.Equal(got, want) {
		t.Errorf("raw server bytes %q, want %q", got, want)
	}
	if len(tr.Raw) == 0 {
		t.Error("no raw segments in the transcript")
	}
}

// TestPipelined: three requests in one Tap, then their three responses in
// one Tap, are paired in order; likewise when the pieces straddle message
// boundaries.
func TestPipelined(t *testing.T) {
	reqs := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nbody of b" +
		"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
	resp := func(status int, body string) string {
		return fmt.Sprintf("HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s", status, len(body), body)
	}
	resps := resp(200, "for /a") + resp(202, "for /b") + resp(404, "for /c")
	for _, sp := range splitters {
		t.Run(sp.name, func(t *testing.T) {
			s, dir := testStore(t, "", recording.StoreOptions{})
			r := start(t, s, Options{Full: true})
			feed(t, r, []msg{{true, reqs}, {false, resps}}, sp, 2)
			finish(t, r)
			l := load(t, dir, r.ID())
			mustSealed(t, l)
			want := []struct {
				target string
				status int
			}{{"/a", 200}, {"/b", 202}, {"/c", 404}}
			if len(l.tr.Exchanges) != 3 {
				t.Fatalf("%d exchanges", len(l.tr.Exchanges))
			}
			for i, w := range want {
				ex := l.tr.Exchanges[i]
				if ex.N != uint32(i+1) || ex.Request.Head.Target != w.target || ex.Response.Head.Status != w.status ||
					string(ex.Response.Body) != "for "+w.target {
					t.Errorf("exchange %d: %s -> %d %q", ex.N, ex.Request.Head.Target, ex.Response.Head.Status, ex.Response.Body)
				}
			}
			if got := string(l.tr.Exchanges[1].Request.Body); got != "body of b" {
				t.Errorf("request /b body %q", got)
			}
		})
	}
}

// TestUpgrade: after a 101, raw bytes both ways are recorded as Data,
// after an "upgrade" Note, redacted.
func TestUpgrade(t *testing.T) {
	up := "\x81\x05hello Authorization: Bearer " + secBearer + "\r\n" + secAWS + " visible-ws-up"
	down := "\x81\x03hey token=" + secToken + "&x=1 visible-ws-down"
	msgs := []msg{
		{true, "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n"},
		{false, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"},
		{true, up}, {false, down}, {true, up}, {false, down},
	}
	for _, sp := range splitters {
		t.Run(sp.name, func(t *testing.T) {
			s, dir := testStore(t, "", recording.StoreOptions{})
			red := defaultRedactor(t)
			r := start(t, s, Options{Full: true, Redactor: red})
			feed(t, r, msgs, sp, 3)
			finish(t, r)
			l := load(t, dir, r.ID())
			mustSealed(t, l)
			if len(l.tr.Exchanges) != 1 || l.tr.Exchanges[0].Response.Head.Status != 101 {
				t.Fatalf("exchanges %+v", l.tr.Exchanges)
			}
			var codes []string
			for _, n := range l.tr.Notes {
				codes = append(codes, n.Code)
			}
			if len(codes) != 2 || codes[0] != recording.NoteUpgrade || codes[1] != recording.NoteUpgrade {
				t.Errorf("notes %q, want two upgrade notes", codes)
			}
			// Per direction: head, end, note, then only data.
			for _, dir := range []recording.Dir{recording.DirClientToServer, recording.DirServerToClient} {
				var kinds []recording.Kind
				for _, c := range l.rec.Chunks {
					if c.Dir == dir && (len(kinds) == 0 || kinds[len(kinds)-1] != c.Kind) {
						kinds = append(kinds, c.Kind)
					}
				}
				want := []recording.Kind{recording.KindHTTPHead, recording.KindHTTPEnd, recording.KindNote, recording.KindData}
				if fmt.Sprint(kinds) != fmt.Sprint(want) {
					t.Errorf("dir %d: chunk kinds %v, want %v", dir, kinds, want)
				}
			}
			if got, want := l.rawData(recording.DirClientToServer), red.Bytes([]byte(up+up)); !bytes.Equal(got, want) {
				t.Errorf("client raw %q, want %q", got, want)
			}
			if got, want := l.rawData(recording.DirServerToClient), red.Bytes([]byte(down+down)); !bytes.Equal(got, want) {
				t.Errorf("server raw %q, want %q", got, want)
			}
			l.checkSecrets(t, []string{secBearer, secAWS, secToken})
		})
	}
}

// TestNonHTTP: a stream that is not HTTP (Redis protocol) is recorded raw,
// redacted by the patterns, with a Note.
func TestNonHTTP(t *testing.T) {
	up := "*3\r\n$3\r\nSET\r\n$6\r\ncreds\r\n$20\r\n" + secAWS + "\r\n*2\r\n$3\r\nGET\r\n$5\r\nvisible-redis-key\r\n"
	down := "+OK\r\n$38\r\n{\"password\":\"" + secPassword + "\",\"n\":1}\r\n$27\r\nBearer " + secBearer + "\r\n"
	for _, sp := range splitters {
		t.Run(sp.name, func(t *testing.T) {
			s, dir := testStore(t, "", recording.StoreOptions{})
			red := defaultRedactor(t)
			r := start(t, s, Options{Full: true, Redactor: red})
			feed(t, r, []msg{{true, up}, {false, down}, {true, up}, {false, down}}, sp, 4)
			finish(t, r)
			l := load(t, dir, r.ID())
			mustSealed(t, l)
			if len(l.tr.Exchanges) != 0 {
				t.Errorf("%d exchanges in a Redis session", len(l.tr.Exchanges))
			}
			if len(l.tr.Notes) != 2 {
				t.Errorf("notes %+v, want one per direction", l.tr.Notes)
			}
			for _, n := range l.tr.Notes {
				if n.Code != "raw" || !strings.HasPrefix(n.Message, "not HTTP/1.x") {
					t.Errorf("note %+v", n)
				}
			}
			for _, c := range l.rec.Chunks {
				switch c.Kind {
				case recording.KindHTTPHead, recording.KindHTTPBody, recording.KindHTTPEnd:
					t.Errorf("HTTP chunk %d in a Redis session", c.Kind)
				}
			}
			if got, want := l.rawData(recording.DirClientToServer), red.Bytes([]byte(up+up)); !bytes.Equal(got, want) {
				t.Errorf("client raw %q, want %q", got, want)
			}
			if got, want := l.rawData(recording.DirServerToClient), red.Bytes([]byte(down+down)); !bytes.Equal(got, want) {
				t.Errorf("server raw %q, want %q", got, want)
			}
			if !bytes.Contains(l.rawData(recording.DirClientToServer), []byte("visible-redis-key")) {
				t.Error("non-secret raw bytes missing")
			}
			l.checkSecrets(t, []string{secAWS, secPassword, secBearer})
		})
	}
}

// TestLargeJSONBody: a JSON body over 1 MiB is redacted as a stream; a
// secret near its end is masked and the length roughly kept. With
// Content-Length and chunked (where the switch from buffering to
// streaming happens mid-body).
func TestLargeJSONBody(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"password":"` + secPassword + `","items":[`)
	for i := 0; b.Len() < maxJSONBody+200<<10; i++ {
		fmt.Fprintf(&b, `{"id":%d,"name":"item %d"},`, i, i)
	}
	b.WriteString(`{"id":-1}],"nested":{"client_secret":"` + secClientSecret + `","keep":"visible-tail"}}`)
	body := b.String()
	cl := fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	var ch strings.Builder
	ch.WriteString("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n")
	for rest := body; len(rest) > 0; {
		n := min(len(rest), 100<<10)
		fmt.Fprintf(&ch, "%x\r\n%s\r\n", n, rest[:n])
		rest = rest[n:]
	}
	ch.WriteString("0\r\n\r\n")
	pieces := splitter{"16k", func(_ *rand.Rand, b []byte) [][]byte {
		var out [][]byte
		for len(b) > 0 {
			n := min(len(b), 16<<10)
			out = append(out, b[:n])
			b = b[n:]
		}
		return out
	}}
	for name, req := range map[string]string{"content-length": cl, "chunked": ch.String()} {
		t.Run(name, func(t *testing.T) {
			s, dir := testStore(t, "", recording.StoreOptions{})
			r := start(t, s, Options{Full: true})
			feed(t, r, []msg{{true, req}, {false, "HTTP/1.1 204 No Content\r\n\r\n"}}, pieces, 5)
			finish(t, r)
			l := load(t, dir, r.ID())
			mustSealed(t, l)
			if len(l.tr.Exchanges) != 1 {
				t.Fatalf("%d exchanges", len(l.tr.Exchanges))
			}
			m := l.tr.Exchanges[0].Request
			if m.BodySize != int64(len(body)) {
				t.Errorf("body size %d, want %d", m.BodySize, len(body))
			}
			if d := len(m.Body) - len(body); d < -100 || d > 100 {
				t.Errorf("recorded body is %d bytes, sent %d", len(m.Body), len(body))
			}
			if !bytes.HasSuffix(m.Body, []byte(`"client_secret":"`+redact.Mask+`","keep":"visible-tail"}}`)) {
				t.Errorf("body ends %q", m.Body[max(0, len(m.Body)-100):])
			}
			if !bytes.HasPrefix(m.Body, []byte(`{"password":"`+redact.Mask+`","items":[`)) {
				t.Errorf("body starts %q", m.Body[:100])
			}
			for _, c := range l.rec.Chunks {
				if len(c.Payload) > recording.MaxPayload {
					t.Errorf("chunk of %d bytes", len(c.Payload))
				}
			}
			if !bytes.Contains(l.file, []byte("visible-tail")) {
				t.Error("tail missing")
			}
			for _, sec := range []string{secPassword, secClientSecret} {
				if bytes.Contains(l.file, []byte(sec)) {
					t.Errorf("%s in the recording", sec)
				}
			}
		})
	}
}

// TestSplitSecret: a secret split across two Taps, at every byte, in a
// text body and in a raw stream, is masked.
func TestSplitSecret(t *testing.T) {
	textBody := "some text, then password=" + secPassword + "&user=bob and " + jwt1 + " and Bearer " + secBearer + " done"
	raw := "PING visible " + secAWS + " Bearer " + secBearer + " x-api-key: " + secXAPIKey + " end"
	secrets := []string{secPassword, secJWTSig, secJWTPayload, secBearer, secAWS}
	red := defaultRedactor(t)

	t.Run("text-body", func(t *testing.T) {
		// One keep-alive session, one request per cut: the body redactor
		// also starts afresh with each message.
		s, dir := testStore(t, "", recording.StoreOptions{})
		r := start(t, s, Options{Full: true, Redactor: red})
		head := fmt.Sprintf("POST /form HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", len(textBody))
		for cut := 1; cut < len(textBody); cut++ {
			feed(t, r, []msg{{true, head}, {true, textBody[:cut]}, {true, textBody[cut:]}, {false, "HTTP/1.1 204 No Content\r\n\r\n"}}, splitters[0], 0)
		}
		finish(t, r)
		l := load(t, dir, r.ID())
		mustSealed(t, l)
		if len(l.tr.Exchanges) != len(textBody)-1 {
			t.Fatalf("%d exchanges", len(l.tr.Exchanges))
		}
		want := red.Bytes([]byte(textBody))
		for i, ex := range l.tr.Exchanges {
			if !bytes.Equal(ex.Request.Body, want) {
				t.Errorf("cut at %d: %q, want %q", i+1, ex.Request.Body, want)
			}
		}
		l.checkSecrets(t, secrets)
	})

	t.Run("raw", func(t *testing.T) {
		// One session per cut (the raw redactor runs to the end of the
		// stream), several at a time: sealing waits for fsync.
		prefix := "\x00\x01binary protocol\n"
		want := red.Bytes([]byte(prefix + raw))
		for _, sec := range secrets {
			if bytes.Contains(want, []byte(sec)) && sec != secJWTSig && sec != secJWTPayload && sec != secPassword {
				t.Fatalf("the redactor leaves %s", sec)
			}
		}
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for cut := 1; cut < len(raw); cut++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				dir := t.TempDir()
				s, err := recording.OpenStore(dir, recording.StoreOptions{MaxSessionBytes: 1 << 20, MaxTotalBytes: 1 << 20})
				if err != nil {
					t.Error(err)
					return
				}
				defer s.Close()
				r, err := Start(s, testMeta(), Options{Full: true, Redactor: red})
				if err != nil {
					t.Error(err)
					return
				}
				for _, p := range []string{prefix, raw[:cut], raw[cut:]} {
					if err := r.Tap(true, []byte(p)); err != nil {
						t.Error(err)
					}
				}
				if err := r.Finish(recording.End{}); err != nil {
					t.Error(err)
					return
				}
				rec, err := recording.Load(dir, r.ID(), nil)
				if err != nil {
					t.Error(err)
					return
				}
				var got []byte
				for _, c := range rec.Chunks {
					if c.Kind == recording.KindData {
						got = append(got, c.Payload...)
					}
				}
				if !bytes.Equal(got, want) {
					t.Errorf("cut at %d: %q, want %q", cut, got, want)
				}
			}()
		}
		wg.Wait()
	})
}

// TestSessionCap: past the per-session cap the recording stops, says so,
// is sealed and marked truncated; Tap never fails because of it, whatever
// the error policy.
func TestSessionCap(t *testing.T) {
	for _, closeOnError := range []bool{false, true} {
		for _, kind := range []string{"raw", "http"} {
			t.Run(fmt.Sprintf("%s/closeOnError=%v", kind, closeOnError), func(t *testing.T) {
				const capBytes = 256 << 10
				s, dir := testStore(t, "", recording.StoreOptions{MaxSessionBytes: capBytes, MaxTotalBytes: 64 << 20})
				var fails failures
				r := start(t, s, Options{Full: true, CloseOnError: closeOnError, Failed: fails.record})
				chunk := bytes.Repeat([]byte("0123456789abcdef"), 1024) // 16 KiB
				var taps []msg
				switch kind {
				case "raw":
					taps = append(taps, msg{true, "\x00raw\n"})
					for range 64 { // 1 MiB
						taps = append(taps, msg{true, string(chunk)}, msg{false, string(chunk[:4096])})
					}
				case "http":
					for i := range 64 {
						taps = append(taps,
							msg{true, fmt.Sprintf("POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", i, len(chunk), chunk)},
							msg{false, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
					}
				}
				for _, m := range taps {
					if err := r.Tap(m.up, []byte(m.data)); err != nil {
						t.Fatalf("Tap past the cap: %v", err)
					}
				}
				if !r.stopped.Load() {
					t.Error("recorder still parsing after the cap")
				}
				finish(t, r)
				if errs := fails.get(); len(errs) > 0 {
					t.Errorf("Failed called: %v", errs)
				}
				l := load(t, dir, r.ID())
				mustSealed(t, l)
				if l.rec.End == nil || !l.rec.End.Truncated {
					t.Errorf("End %+v: want truncated", l.rec.End)
				}
				if !hasNote(l.tr.Notes, recording.NoteSessionCap) {
					t.Errorf("notes %+v: no %s", l.tr.Notes, recording.NoteSessionCap)
				}
				if l.rec.Size > capBytes {
					t.Errorf("recording is %d bytes, cap %d", l.rec.Size, capBytes)
				}
				if l.rec.Size < capBytes/2 {
					t.Errorf("recording is only %d bytes: cap %d not reached", l.rec.Size, capBytes)
				}
			})
		}
	}
}

// TestMetadataOnly: without Full, Tap records nothing.
func TestMetadataOnly(t *testing.T) {
	s, dir := testStore(t, "", recording.StoreOptions{})
	r := start(t, s, Options{Full: false})
	msgs, _, _ := keepAliveSession()
	feed(t, r, msgs, splitters[0], 6)
	finish(t, r)
	l := load(t, dir, r.ID())
	mustSealed(t, l)
	var kinds []recording.Kind
	for _, c := range l.rec.Chunks {
		kinds = append(kinds, c.Kind)
	}
	if fmt.Sprint(kinds) != fmt.Sprint([]recording.Kind{recording.KindMeta, recording.KindEnd, recording.KindSeal}) {
		t.Errorf("chunks %v, want Meta End Seal", kinds)
	}
	l.checkSecrets(t, allSecrets)
}

// TestConcurrentDirections: the two directions tap from their own
// goroutines (run with -race); 200 keep-alive exchanges, responses only
// after their requests but otherwise concurrent, are all paired in order.
func TestConcurrentDirections(t *testing.T) {
	const n = 200
	s, dir := testStore(t, "", recording.StoreOptions{})
	var fails failures
	r := start(t, s, Options{Full: true, MaskHeaders: []string{injectedHeader}, Failed: fails.record})
	sent := make(chan int, 8) // the client runs ahead by up to 8 requests
	var wg sync.WaitGroup
	split := splitters[1].split
	tap := func(up bool, rng *rand.Rand, data string) {
		buf := make([]byte, 0, 64)
		for _, p := range split(rng, []byte(data)) {
			buf = append(buf[:0], p...)
			if err := r.Tap(up, buf); err != nil {
				t.Error(err)
			}
		}
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(sent)
		rng := rand.New(rand.NewPCG(10, 10))
		for i := 1; i <= n; i++ {
			body := fmt.Sprintf(`{"i":%d,"token":"%s"}`, i, secToken)
			tap(true, rng, fmt.Sprintf("POST /item/%d HTTP/1.1\r\nHost: x\r\n%s: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
				i, injectedHeader, secInjected, len(body), body))
			sent <- i
		}
	}()
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(20, 20))
		for i := range sent {
			body := fmt.Sprintf("body-%d", i)
			if i%3 == 0 {
				tap(false, rng, fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body))
			} else {
				tap(false, rng, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
			}
		}
	}()
	wg.Wait()
	finish(t, r)
	if errs := fails.get(); len(errs) > 0 {
		t.Fatalf("Failed called: %v", errs)
	}
	l := load(t, dir, r.ID())
	mustSealed(t, l)
	if len(l.tr.Exchanges) != n {
		t.Fatalf("%d exchanges, want %d", len(l.tr.Exchanges), n)
	}
	for i, ex := range l.tr.Exchanges {
		want := i + 1
		if ex.N != uint32(want) || ex.Request == nil || ex.Response == nil ||
			ex.Request.Head.Target != fmt.Sprintf("/item/%d", want) || string(ex.Response.Body) != fmt.Sprintf("body-%d", want) ||
			!bytes.Contains(ex.Request.Body, []byte(fmt.Sprintf(`{"i":%d,`, want))) || !ex.Request.Complete || !ex.Response.Complete {
			t.Fatalf("exchange %d: %+v", want, ex)
		}
	}
	l.checkSecrets(t, []string{secToken, secInjected})
}

// TestStoreFull: a flush refused because the store is full (other
// recordings are open) is not a write error: the chunks wait, and are
// written once room is made, or dropped with a store_full Note at Finish;
// either way the recording is sealed and Failed is not called.
func TestStoreFull(t *testing.T) {
	opts := recording.StoreOptions{MaxSessionBytes: 192 << 10, MaxTotalBytes: 256 << 10}
	data := func(n int) []byte {
		b := bytes.Repeat([]byte("abcdefgh"), n/8)
		b[0] = 0
		return b
	}
	t.Run("room-made", func(t *testing.T) {
		s, dir := testStore(t, "", opts)
		var fails failures
		a := start(t, s, Options{Full: true, CloseOnError: true, Failed: fails.record})
		if err := a.Tap(true, data(150<<10)); err != nil {
			t.Fatal(err)
		}
		b := start(t, s, Options{Full: true, CloseOnError: true, Failed: fails.record})
		if err := b.Tap(true, data(100<<10)); err != nil {
			t.Fatalf("Tap on a full store: %v", err)
		}
		if b.Err() != nil || b.stopped.Load() {
			t.Fatalf("recording stopped on a full store: %v", b.Err())
		}
		finish(t, a) // a can now be evicted
		if err := b.Tap(false, []byte("\x00more")); err != nil {
			t.Fatal(err)
		}
		finish(t, b)
		if errs := fails.get(); len(errs) > 0 {
			t.Fatalf("Failed called: %v", errs)
		}
		l := load(t, dir, b.ID())
		mustSealed(t, l)
		if l.rec.End.Truncated || len(l.rawData(recording.DirClientToServer)) != 100<<10 {
			t.Errorf("truncated %v, %d bytes recorded", l.rec.End.Truncated, len(l.rawData(recording.DirClientToServer)))
		}
	})
	t.Run("dropped-at-finish", func(t *testing.T) {
		s, dir := testStore(t, "", opts)
		var fails failures
		a := start(t, s, Options{Full: true, CloseOnError: true, Failed: fails.record})
		if err := a.Tap(true, data(150<<10)); err != nil {
			t.Fatal(err)
		}
		b := start(t, s, Options{Full: true, CloseOnError: true, Failed: fails.record})
		if err := b.Tap(true, data(100<<10)); err != nil {
			t.Fatalf("Tap on a full store: %v", err)
		}
		finish(t, b)
		finish(t, a)
		if errs := fails.get(); len(errs) > 0 {
			t.Fatalf("Failed called: %v", errs)
		}
		l := load(t, dir, b.ID())
		mustSealed(t, l)
		if !l.rec.End.Truncated || !hasNote(l.tr.Notes, recording.NoteStoreFull) {
			t.Errorf("End %+v, notes %+v: want truncated with a store_full note", l.rec.End, l.tr.Notes)
		}
	})
	t.Run("backlog-bounded", func(t *testing.T) {
		s, dir := testStore(t, "", recording.StoreOptions{MaxSessionBytes: 16 << 20, MaxTotalBytes: 1 << 20})
		var fails failures
		a := start(t, s, Options{Full: true})
		if err := a.Tap(true, data(900<<10)); err != nil {
			t.Fatal(err)
		}
		b := start(t, s, Options{Full: true, Failed: fails.record})
		for range 100 { // 6.4 MiB
			if err := b.Tap(true, data(64<<10)); err != nil {
				t.Fatal(err)
			}
		}
		if !b.stopped.Load() {
			t.Error("still recording with more than the backlog held in memory")
		}
		finish(t, b)
		finish(t, a)
		if errs := fails.get(); len(errs) > 0 {
			t.Fatalf("Failed called: %v", errs)
		}
		l := load(t, dir, b.ID())
		mustSealed(t, l)
		if !l.rec.End.Truncated || !hasNote(l.tr.Notes, recording.NoteStoreFull) {
			t.Errorf("End %+v, notes %+v", l.rec.End, l.tr.Notes)
		}
	})
}

// TestInjectedCredentialOutsideHeads: the injected credential is masked
// even where it is not in a parsed head: a head the injector rewrote past
// the parser's header-line limit (recorded raw), a TRACE echo of the
// request, a JSON echo of the headers.
func TestInjectedCredentialOutsideHeads(t *testing.T) {
	inj := httpstream.NewInjector(injectedHeader, func() (string, error) { return secInjected, nil })
	var head strings.Builder
	head.WriteString("GET /many HTTP/1.1\r\nHost: x\r\n")
	for i := 1; i < httpstream.MaxHeaderLines; i++ { // 200 lines with Host
		fmt.Fprintf(&head, "X-H%d: v\r\n", i)
	}
	head.WriteString("\r\n")
	// The injector refuses a head its line would push over the limits
	// (fail closed); the recorder must still mask such a head if one
	// reached it as raw bytes, so build it by hand.
	if _, err := inj.Transform(nil, []byte(head.String())); err == nil {
		t.Fatal("injector forwarded a head over the header-line limit")
	}
	full := head.String()
	injected := []byte(full[:len(full)-2] + injectedHeader + ": " + secInjected + "\r\n\r\n")
	trace := "TRACE / HTTP/1.1\r\nHost: x\r\n" + injectedHeader + ": " + secInjected + "\r\n\r\n"
	echo := `{"headers":{"Host":"x","` + injectedHeader + `":"` + secInjected + `"}}`
	for _, sp := range splitters {
		t.Run(sp.name, func(t *testing.T) {
			s, dir := testStore(t, "", recording.StoreOptions{})
			r := start(t, s, Options{Full: true, MaskHeaders: []string{injectedHeader}})
			feed(t, r, []msg{
				{true, trace},
				{false, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: message/http\r\nContent-Length: %d\r\n\r\n%s", len(trace), trace)},
				{true, "GET /anything HTTP/1.1\r\nHost: x\r\n" + injectedHeader + ": " + secInjected + "\r\n\r\n"},
				{false, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(echo), echo)},
				{true, string(injected)},
			}, sp, 8)
			finish(t, r)
			l := load(t, dir, r.ID())
			mustSealed(t, l)
			if !hasNote(l.tr.Notes, recording.NoteHTTPParseError) {
				// The injector and the parser agree on the limits: fine,
				// but then this case no longer tests the raw path.
				t.Logf("the injected head parsed (notes %+v)", l.tr.Notes)
			}
			if len(l.tr.Exchanges) < 2 || !bytes.Contains(l.tr.Exchanges[0].Response.Body, []byte(injectedHeader+": "+redact.Mask)) {
				t.Errorf("TRACE echo not recorded as expected: %+v", l.tr.Exchanges)
			}
			l.checkSecrets(t, []string{secInjected})
		})
	}
}

// TestNoteRedacted: a parse error's message quotes the offending bytes;
// the Note must not carry a secret.
func TestNoteRedacted(t *testing.T) {
	s, dir := testStore(t, "", recording.StoreOptions{})
	r := start(t, s, Options{Full: true, MaskHeaders: []string{injectedHeader}})
	feed(t, r, []msg{
		{true, "GET / HTTP/1.1\r\nHost: x\r\nAuthorization Bearer " + secBearer + "\r\n\r\n"},
		{false, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n" + injectedHeader + " " + secInjected + "\r\n\r\n"},
	}, splitters[0], 9)
	finish(t, r)
	l := load(t, dir, r.ID())
	mustSealed(t, l)
	if !hasNote(l.tr.Notes, recording.NoteHTTPParseError) {
		t.Errorf("notes %+v", l.tr.Notes)
	}
	l.checkSecrets(t, []string{secBearer})
}

// TestHugeTap: a single Tap larger than a chunk's payload limit is split.
func TestHugeTap(t *testing.T) {
	s, dir := testStore(t, "", recording.StoreOptions{})
	var fails failures
	r := start(t, s, Options{Full: true, Failed: fails.record})
	p := bulkPayload("binary", recording.MaxPayload+5<<20)
	if err := r.Tap(false, p); err != nil {
		t.Fatal(err)
	}
	finish(t, r)
	if errs := fails.get(); len(errs) > 0 {
		t.Fatalf("Failed: %v", errs)
	}
	l := load(t, dir, r.ID())
	mustSealed(t, l)
	if got := l.rawData(recording.DirServerToClient); !bytes.Equal(got, defaultRedactor(t).Bytes(p)) {
		t.Errorf("recorded %d bytes, fed %d", len(got), len(p))
	}
}

// TestCoalesce: the body pieces of one Tap (a chunked body of many small
// chunks) become one body chunk.
func TestCoalesce(t *testing.T) {
	s, dir := testStore(t, "", recording.StoreOptions{})
	r := start(t, s, Options{Full: true})
	var resp strings.Builder
	resp.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
	for i := range 100 {
		fmt.Fprintf(&resp, "%x\r\nline %03d\n\r\n", 9, i)
	}
	resp.WriteString("0\r\n\r\n")
	feed(t, r, []msg{{true, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"}, {false, resp.String()}}, splitters[0], 10)
	finish(t, r)
	l := load(t, dir, r.ID())
	mustSealed(t, l)
	if n := len(l.chunksOf(recording.KindHTTPBody)); n != 1 {
		t.Errorf("%d body chunks, want 1", n)
	}
	if got := len(l.tr.Exchanges[0].Response.Body); got != 900 {
		t.Errorf("body %d bytes", got)
	}
}

// TestFinishTwiceAndLateTap: neither a second Finish nor a Tap after Finish
// is reported as a recording failure.
func TestFinishTwiceAndLateTap(t *testing.T) {
	s, dir := testStore(t, "", recording.StoreOptions{})
	var fails failures
	r := start(t, s, Options{Full: true, CloseOnError: true, Failed: fails.record})
	if err := r.Tap(true, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	finish(t, r)
	if err := r.Tap(false, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")); err != nil {
		t.Errorf("Tap after Finish: %v", err)
	}
	if err := r.Finish(recording.End{}); err == nil {
		t.Error("second Finish succeeded")
	}
	if errs := fails.get(); len(errs) > 0 || r.Err() != nil {
		t.Errorf("Failed: %v, Err: %v", errs, r.Err())
	}
	mustSealed(t, load(t, dir, r.ID()))
}

// TestStartErrors: no redactor; a store that cannot create.
func TestStartErrors(t *testing.T) {
	s, _ := testStore(t, "", recording.StoreOptions{})
	if _, err := Start(s, testMeta(), Options{Full: true}); err == nil {
		t.Error("Start without a redactor succeeded")
	}
	m := testMeta()
	m.ID = "not-an-id"
	if _, err := Start(s, m, Options{Redactor: defaultRedactor(t)}); err == nil {
		t.Error("Start with an invalid id succeeded")
	}
}

// TestInterimAndUnsolicited: a 100 Continue before the final response is
// kept as interim; a response-until-close is completed by Finish.
func TestInterimAndUntilClose(t *testing.T) {
	s, dir := testStore(t, "", recording.StoreOptions{})
	r := start(t, s, Options{Full: true})
	feed(t, r, []msg{
		{true, "PUT /f HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"},
		{false, "HTTP/1.1 100 Continue\r\n\r\n"},
		{true, "abc"},
		{false, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close, api_key=" + secJSONAPIKey},
	}, splitters[1], 11)
	finish(t, r)
	l := load(t, dir, r.ID())
	mustSealed(t, l)
	if len(l.tr.Exchanges) != 1 {
		t.Fatalf("%d exchanges", len(l.tr.Exchanges))
	}
	ex := l.tr.Exchanges[0]
	if len(ex.Interim) != 1 || ex.Interim[0].Head.Status != 100 || ex.Response.Head.Status != 200 || !ex.Response.Complete {
		t.Errorf("exchange %+v", ex)
	}
	if got := string(ex.Response.Body); got != "until close, api_key="+redact.Mask {
		t.Errorf("body %q", got)
	}
	if string(ex.Request.Body) != "abc" {
		t.Errorf("request body %q", ex.Request.Body)
	}
}

// TestTranscriptRoundTrip: the transcript JSON export parses and carries
// the exchanges.
func TestTranscriptRoundTrip(t *testing.T) {
	s, dir := testStore(t, "", recording.StoreOptions{})
	r := start(t, s, Options{Full: true, MaskHeaders: []string{injectedHeader}})
	msgs, _, _ := keepAliveSession()
	feed(t, r, msgs, splitters[0], 12)
	finish(t, r)
	l := load(t, dir, r.ID())
	j, err := transcript.JSON(l.tr)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Status    string `json:"status"`
		Exchanges []struct {
			N       uint32 `json:"n"`
			Request struct {
				Method string `json:"method"`
			} `json:"request"`
		} `json:"exchanges"`
	}
	if err := json.Unmarshal(j, &out); err != nil {
		t.Fatal(err)
	}
	if out.Status != string(recording.StatusSealed) || len(out.Exchanges) != 5 || out.Exchanges[1].Request.Method != "POST" {
		t.Errorf("JSON export: %+v", out)
	}
}

// TestHeadersNeverNull: a head without header lines records "headers": []
// (as encoding/json did for the recorder's non-nil slice).
func TestHeadersNeverNull(t *testing.T) {
	s, dir := testStore(t, "", recording.StoreOptions{})
	r := start(t, s, Options{Full: true})
	feed(t, r, []msg{{true, "GET / HTTP/1.0\r\n\r\n"}, {false, "HTTP/1.0 204 No Content\r\n\r\n"}}, splitters[0], 13)
	finish(t, r)
	l := load(t, dir, r.ID())
	heads := l.chunksOf(recording.KindHTTPHead)
	if len(heads) != 2 {
		t.Fatalf("%d heads", len(heads))
	}
	for _, c := range heads {
		if !bytes.Contains(c.Payload, []byte(`"headers":[]`)) {
			t.Errorf("head %s", c.Payload)
		}
	}
}
