package transcript

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/intransit/intransit/pkg/recording"
)

func TestBuildHTTPSession(t *testing.T) {
	tr := mustBuild(t, httpSession(t))
	if len(tr.Problems) != 0 {
		t.Errorf("problems: %q", tr.Problems)
	}
	if tr.Status != StatusSealed || tr.End == nil || tr.End.BytesSent != 1234 {
		t.Errorf("status %q end %+v", tr.Status, tr.End)
	}
	if len(tr.Exchanges) != 4 {
		t.Fatalf("%d exchanges, want 4", len(tr.Exchanges))
	}
	for i, ex := range tr.Exchanges {
		if ex.N != uint32(i+1) || ex.Request == nil || ex.Response == nil || !ex.Request.Complete || !ex.Response.Complete {
			t.Errorf("exchange %d: %+v", i+1, ex)
		}
	}
	get := tr.Exchanges[0]
	if got := string(get.Response.Body); got != "<html>hello world</html>\n" {
		t.Errorf("chunked body %q", got)
	}
	if get.Response.BodySize != 25 || len(get.Response.Trailers) != 1 || get.Response.Trailers[0].Value != "abc123" {
		t.Errorf("response end: size %d trailers %v", get.Response.BodySize, get.Response.Trailers)
	}
	if !get.Response.Start.Equal(t0.Add(12*time.Millisecond)) || !get.Response.End.Equal(t0.Add(15*time.Millisecond)) {
		t.Errorf("response times %v..%v", get.Response.Start, get.Response.End)
	}

	post := tr.Exchanges[1]
	if len(post.Interim) != 1 || post.Interim[0].Head.Status != 100 || !post.Interim[0].Complete {
		t.Fatalf("interim: %+v", post.Interim)
	}
	if post.Response.Head.Status != 201 || string(post.Response.Body) != createdBody {
		t.Errorf("final response %d %q", post.Response.Head.Status, post.Response.Body)
	}
	if string(post.Request.Body) != postBody || post.Request.BodySize != postWireSize {
		t.Errorf("request body %q size %d", post.Request.Body, post.Request.BodySize)
	}
	// 101 is final, not interim.
	if up := tr.Exchanges[3]; len(up.Interim) != 0 || up.Response.Head.Status != 101 {
		t.Errorf("upgrade exchange: interim %d status %d", len(up.Interim), up.Response.Head.Status)
	}

	if len(tr.Raw) != 4 || tr.Raw[2].Data == nil || string(tr.Raw[2].Data) != ansiRaw || tr.Raw[3].Dir != s2c {
		t.Errorf("raw segments: %+v", tr.Raw)
	}
	if len(tr.Notes) != 1 || tr.Notes[0].Code != recording.NoteUpgrade {
		t.Errorf("notes: %+v", tr.Notes)
	}

	if len(tr.Events) != len(httpEvents) {
		t.Fatalf("%d events, want %d", len(tr.Events), len(httpEvents))
	}
	for i, want := range httpEvents {
		ev := tr.Events[i]
		if ev.Kind != want.kind || !ev.Time.Equal(t0.Add(time.Duration(want.at)*time.Millisecond)) {
			t.Errorf("event %d: %v at %v, want %v at +%dms", i, ev.Kind, ev.Time.Sub(t0), want.kind, want.at)
		}
	}
	// Body events point into their message's body.
	for _, ev := range tr.Events {
		if ev.Kind == EventBody && !bytes.Equal(ev.Message.Body[ev.Offset:ev.Offset+len(ev.Data)], ev.Data) {
			t.Errorf("body event at offset %d does not match its message", ev.Offset)
		}
	}
}

// Each direction keeps its file order, directions interleave by time.
func TestBuildMergesDirectionsByTime(t *testing.T) {
	r := &rec{tb: t}
	m := testMeta()
	r.meta(m)
	// The server's chunk was appended first but happened later.
	r.data(20*time.Millisecond, s2c, "late")
	r.data(10*time.Millisecond, c2s, "early")
	// A wall-clock step back within one direction keeps file order.
	r.data(5*time.Millisecond, c2s, "after-early")
	tr := mustBuild(t, Input{Meta: m, Chunks: r.chunks, Status: StatusUnfinished})
	var got []string
	for _, ev := range tr.Events {
		got = append(got, string(ev.Data))
	}
	if strings.Join(got, ",") != "early,after-early,late" {
		t.Errorf("order %v", got)
	}
}

func TestBuildIncomplete(t *testing.T) {
	r := &rec{tb: t}
	m := testMeta()
	r.meta(m)
	ms := time.Millisecond
	r.request(0, 1, "GET", "/a", "Host", "example.com")
	r.end(0, c2s, 1, 0)
	r.response(5*ms, 1, 200, "OK", "Content-Length", "100")
	r.body(6*ms, s2c, 1, "partial")
	// Exchange 2: a request still being sent, no response.
	r.request(50*ms, 2, "PUT", "/b", "Host", "example.com", "Content-Length", "10")
	r.body(51*ms, c2s, 2, "12345")
	// A note the recorder wrote without a time.
	r.chunks = append(r.chunks, recording.Chunk{Seq: uint64(len(r.chunks)), Kind: recording.KindNote,
		Payload: []byte(`{"code":"session_cap","message":"cap reached"}`)})

	tr := mustBuild(t, Input{Meta: m, Chunks: r.chunks, Status: StatusUnfinished})
	if tr.End != nil {
		t.Errorf("end %+v, want nil", tr.End)
	}
	if len(tr.Exchanges) != 2 {
		t.Fatalf("%d exchanges", len(tr.Exchanges))
	}
	resp := tr.Exchanges[0].Response
	if resp.Complete || string(resp.Body) != "partial" || resp.BodySize != 7 || !resp.End.Equal(t0.Add(6*ms)) {
		t.Errorf("incomplete response: %+v", resp)
	}
	ex2 := tr.Exchanges[1]
	if ex2.Response != nil || ex2.Request.Complete || string(ex2.Request.Body) != "12345" {
		t.Errorf("exchange 2: %+v", ex2)
	}
	last := tr.Events[len(tr.Events)-1]
	if last.Kind != EventNote || !last.Time.Equal(t0.Add(51*ms)) {
		t.Errorf("time-less note: %v at %v", last.Kind, last.Time.Sub(t0))
	}

	// Every export copes.
	if _, err := JSON(tr); err != nil {
		t.Errorf("JSON: %v", err)
	}
	h, err := HAR(tr)
	if err != nil {
		t.Fatalf("HAR: %v", err)
	}
	var doc harDoc
	if err := json.Unmarshal(h, &doc); err != nil {
		t.Fatal(err)
	}
	if e := doc.Log.Entries[1]; e.Response.Status != 0 || *e.Request.BodySize != -1 || !strings.Contains(e.Comment, "no response") {
		t.Errorf("HAR entry without response: %+v", e)
	}
	var pc bytes.Buffer
	if err := PCAPNG(tr, &pc); err != nil {
		t.Fatalf("PCAPNG: %v", err)
	}
	pkts := readCapture(t, pc.Bytes())
	checkTCP(t, pkts)
	if fin := pkts[len(pkts)-3]; !fin.tcp.FIN || !fin.ts.Equal(t0.Add(51*ms)) {
		t.Errorf("FIN at %v, want the last event's time", fin.ts.Sub(t0))
	}
	var out bytes.Buffer
	if err := Replay(tr, &out, ReplayOptions{}); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	for _, want := range []string{"no end record", "exchange 2: no response recorded", "exchange 1: response incomplete", "WARNING"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("replay lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBuildEndFromChunk(t *testing.T) {
	in := httpSession(t)
	in.End = nil // the reader left it to us
	tr := mustBuild(t, in)
	if tr.End == nil || tr.End.BytesReceived != 5678 {
		t.Fatalf("end %+v", tr.End)
	}
	if last := tr.Events[len(tr.Events)-1]; last.Kind != EventEnd {
		t.Errorf("last event %v", last.Kind)
	}
}

func TestBuildProblems(t *testing.T) {
	r := &rec{tb: t}
	m := testMeta()
	r.body(0, c2s, 9, "orphan")
	r.end(0, s2c, 9, 0)
	r.add(0, recording.Kind(200), recording.DirNone, 0, nil)
	tr := mustBuild(t, Input{Meta: m, Chunks: r.chunks, Status: StatusTampered, Problems: []string{"chain broken at chunk 3"}})
	if len(tr.Problems) != 4 || tr.Problems[0] != "chain broken at chunk 3" {
		t.Errorf("problems %q", tr.Problems)
	}
	if len(tr.Events) != 0 {
		t.Errorf("events %v", tr.Events)
	}
}

func TestBuildBadJSON(t *testing.T) {
	r := &rec{tb: t}
	r.add(0, recording.KindHTTPHead, c2s, 1, []byte("{not json"))
	_, err := Build(Input{Meta: testMeta(), Chunks: r.chunks})
	var syntax *json.SyntaxError
	if !errors.As(err, &syntax) || !strings.Contains(err.Error(), "0123456789abcdef") {
		t.Errorf("err = %v, want a wrapped *json.SyntaxError naming the session", err)
	}
}
