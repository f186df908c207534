package transcript

import (
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/intransit/intransit/pkg/recording"
)

type jsonDoc struct {
	Meta      recording.Meta `json:"meta"`
	End       *recording.End `json:"end"`
	Status    string         `json:"status"`
	Exchanges []struct {
		N        uint32       `json:"n"`
		Request  *jsonDocMsg  `json:"request"`
		Interim  []jsonDocMsg `json:"interim"`
		Response *jsonDocMsg  `json:"response"`
	} `json:"exchanges"`
	Raw []struct {
		Time     time.Time `json:"time"`
		Dir      string    `json:"dir"`
		Size     int       `json:"size"`
		Data     string    `json:"data"`
		Encoding string    `json:"encoding"`
	} `json:"raw"`
	Notes []struct {
		Time    time.Time `json:"time"`
		Dir     string    `json:"dir"`
		Code    string    `json:"code"`
		Message string    `json:"message"`
	} `json:"notes"`
}

type jsonDocMsg struct {
	Request  bool               `json:"request"`
	Method   string             `json:"method"`
	Target   string             `json:"target"`
	Status   int                `json:"status"`
	Headers  []recording.Header `json:"headers"`
	Chunked  bool               `json:"chunked"`
	Start    time.Time          `json:"start"`
	Complete bool               `json:"complete"`
	BodySize int64              `json:"body_size"`
	Body     string             `json:"body"`
	Encoding string             `json:"encoding"`
	Trailers []recording.Header `json:"trailers"`
}

func TestJSON(t *testing.T) {
	tr := mustBuild(t, httpSession(t))
	b, err := JSON(tr)
	if err != nil {
		t.Fatal(err)
	}
	var doc jsonDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("JSON does not parse: %v\n%s", err, b)
	}
	if doc.Meta.ID != "0123456789abcdef" || doc.Meta.Process.Workload() != "pod/shop/web-7f9c" || doc.Status != StatusSealed ||
		doc.End == nil || doc.End.BytesReceived != 5678 {
		t.Errorf("meta %+v status %q end %+v", doc.Meta, doc.Status, doc.End)
	}
	if len(doc.Exchanges) != 4 {
		t.Fatalf("%d exchanges", len(doc.Exchanges))
	}
	get := doc.Exchanges[0]
	if get.N != 1 || get.Request.Method != "GET" || get.Request.Target != "/index.html?q=a%20b&x=1" || !get.Request.Request ||
		get.Response.Status != 200 || !get.Response.Chunked || get.Response.Body != "<html>hello world</html>\n" ||
		get.Response.Encoding != "" || len(get.Response.Trailers) != 1 || !get.Response.Complete {
		t.Errorf("exchange 1: %+v / %+v", get.Request, get.Response)
	}
	post := doc.Exchanges[1]
	if len(post.Interim) != 1 || post.Interim[0].Status != 100 || post.Request.Body != postBody || post.Request.BodySize != postWireSize {
		t.Errorf("exchange 2: %+v", post)
	}
	if len(doc.Raw) != 4 {
		t.Fatalf("%d raw segments", len(doc.Raw))
	}
	if r := doc.Raw[2]; r.Data != ansiRaw || r.Encoding != "" || r.Dir != "client_to_server" || r.Size != len(ansiRaw) {
		t.Errorf("text raw segment %+v", r)
	}
	bin := doc.Raw[3]
	dec, err := base64.StdEncoding.DecodeString(bin.Data)
	if bin.Encoding != "base64" || err != nil || string(dec) != binaryRaw || bin.Dir != "server_to_client" ||
		!bin.Time.Equal(t0.Add(501*time.Millisecond)) {
		t.Errorf("binary raw segment %+v", bin)
	}
	if len(doc.Notes) != 1 || doc.Notes[0].Code != recording.NoteUpgrade || doc.Notes[0].Dir != "server_to_client" ||
		!doc.Notes[0].Time.Equal(t0.Add(302*time.Millisecond)) {
		t.Errorf("notes %+v", doc.Notes)
	}
}

func TestJSONBinaryBody(t *testing.T) {
	r := &rec{tb: t}
	m := testMeta()
	r.meta(m)
	gz := string([]byte{0x1f, 0x8b, 0x08, 0x00, 0xde, 0xad, 0xbe, 0xef})
	r.request(0, 1, "GET", "/", "Host", "x")
	r.end(0, c2s, 1, 0)
	r.response(0, 1, 200, "OK", "Content-Encoding", "gzip")
	r.body(0, s2c, 1, gz)
	tr := mustBuild(t, Input{Meta: m, Chunks: r.chunks, Status: StatusUnfinished})
	b, err := JSON(tr)
	if err != nil {
		t.Fatal(err)
	}
	var doc jsonDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	resp := doc.Exchanges[0].Response
	dec, err := base64.StdEncoding.DecodeString(resp.Body)
	if resp.Encoding != "base64" || err != nil || string(dec) != gz || resp.Complete || resp.BodySize != int64(len(gz)) {
		t.Errorf("binary body %+v", resp)
	}
	if doc.End != nil || doc.Status != StatusUnfinished || doc.Raw == nil || doc.Notes == nil {
		t.Errorf("end %+v status %q raw %v notes %v", doc.End, doc.Status, doc.Raw, doc.Notes)
	}
}
