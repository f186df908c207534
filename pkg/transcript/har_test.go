package transcript

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/intransit/intransit/pkg/recording"
)

// harDoc mirrors HAR 1.2's required fields (and the optional ones the
// export promises).
type harDoc struct {
	Log struct {
		Version string `json:"version"`
		Creator struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"creator"`
		Entries []harDocEntry `json:"entries"`
		Comment string        `json:"comment"`
	} `json:"log"`
}

type harDocNV struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type harDocEntry struct {
	StartedDateTime string   `json:"startedDateTime"`
	Time            *float64 `json:"time"`
	Request         struct {
		Method      string     `json:"method"`
		URL         string     `json:"url"`
		HTTPVersion string     `json:"httpVersion"`
		Cookies     []harDocNV `json:"cookies"`
		Headers     []harDocNV `json:"headers"`
		QueryString []harDocNV `json:"queryString"`
		PostData    *struct {
			MimeType string `json:"mimeType"`
			Text     string `json:"text"`
		} `json:"postData"`
		HeadersSize *int64 `json:"headersSize"`
		BodySize    *int64 `json:"bodySize"`
	} `json:"request"`
	Response struct {
		Status      int        `json:"status"`
		StatusText  string     `json:"statusText"`
		HTTPVersion string     `json:"httpVersion"`
		Cookies     []harDocNV `json:"cookies"`
		Headers     []harDocNV `json:"headers"`
		Content     struct {
			Size     *int64  `json:"size"`
			MimeType *string `json:"mimeType"`
			Text     string  `json:"text"`
			Encoding string  `json:"encoding"`
		} `json:"content"`
		RedirectURL *string `json:"redirectURL"`
		HeadersSize *int64  `json:"headersSize"`
		BodySize    *int64  `json:"bodySize"`
	} `json:"response"`
	Cache   *struct{} `json:"cache"`
	Timings *struct {
		Send    *float64 `json:"send"`
		Wait    *float64 `json:"wait"`
		Receive *float64 `json:"receive"`
	} `json:"timings"`
	ServerIPAddress string `json:"serverIPAddress"`
	Connection      string `json:"connection"`
	Comment         string `json:"comment"`
}

func nv(hs []harDocNV, name string) string {
	for _, h := range hs {
		if h.Name == name {
			return h.Value
		}
	}
	return "<missing>"
}

func TestHAR(t *testing.T) {
	tr := mustBuild(t, httpSession(t))
	b, err := HAR(tr)
	if err != nil {
		t.Fatal(err)
	}
	var doc harDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("HAR does not parse: %v", err)
	}
	l := doc.Log
	if l.Version != "1.2" || l.Creator.Name != "intransit" || l.Creator.Version == "" {
		t.Errorf("log header %+v", l)
	}
	if len(l.Entries) != 4 {
		t.Fatalf("%d entries, want 4", len(l.Entries))
	}
	wantMethods := []string{"GET", "POST", "HEAD", "GET"}
	wantURLs := []string{
		"http://example.com/index.html?q=a%20b&x=1", "http://example.com/api/items",
		"http://example.com/big", "http://example.com/chat",
	}
	wantStatus := []int{200, 201, 200, 101}
	wantStarted := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}
	for i, e := range l.Entries {
		r := e.Request
		if r.Method != wantMethods[i] || r.URL != wantURLs[i] || e.Response.Status != wantStatus[i] {
			t.Errorf("entry %d: %s %s -> %d", i, r.Method, r.URL, e.Response.Status)
		}
		started, err := time.Parse(time.RFC3339, e.StartedDateTime)
		if err != nil || !started.Equal(t0.Add(wantStarted[i])) || !strings.Contains(e.StartedDateTime, ".") {
			t.Errorf("entry %d: startedDateTime %q (%v)", i, e.StartedDateTime, err)
		}
		if e.Time == nil || *e.Time < 0 || e.Timings == nil || e.Timings.Send == nil || e.Timings.Wait == nil || e.Timings.Receive == nil ||
			*e.Timings.Send < 0 || *e.Timings.Wait < 0 || *e.Timings.Receive < 0 {
			t.Errorf("entry %d: time/timings missing or negative: %+v", i, e.Timings)
		}
		if e.Cache == nil || r.Cookies == nil || r.Headers == nil || r.QueryString == nil || r.HeadersSize == nil || r.BodySize == nil ||
			e.Response.Cookies == nil || e.Response.Headers == nil || e.Response.Content.Size == nil ||
			e.Response.Content.MimeType == nil || e.Response.RedirectURL == nil || e.Response.HeadersSize == nil || e.Response.BodySize == nil {
			t.Errorf("entry %d: a required field is missing", i)
		}
		if r.HTTPVersion != "HTTP/1.1" || e.Response.HTTPVersion != "HTTP/1.1" {
			t.Errorf("entry %d: versions %q %q", i, r.HTTPVersion, e.Response.HTTPVersion)
		}
		if e.ServerIPAddress != "93.184.216.34" || e.Connection != "40000" || !strings.Contains(e.Comment, "0123456789abcdef") {
			t.Errorf("entry %d: server %q connection %q comment %q", i, e.ServerIPAddress, e.Connection, e.Comment)
		}
	}

	get := l.Entries[0]
	if v := nv(get.Request.Headers, "Authorization"); v != "[REDACTED]" {
		t.Errorf("Authorization %q", v)
	}
	if v := nv(get.Request.Cookies, "session"); v != "[REDACTED]" {
		t.Errorf("cookie session %q", v)
	}
	if v := nv(get.Request.Cookies, "theme"); v != "dark" {
		t.Errorf("cookie theme %q", v)
	}
	if v := nv(get.Request.QueryString, "q"); v != "a b" {
		t.Errorf("query q %q", v)
	}
	if v := nv(get.Response.Cookies, "id"); v != "[REDACTED]" {
		t.Errorf("set-cookie id %q", v)
	}
	if c := get.Response.Content; c.Text != "<html>hello world</html>\n" || *c.Size != 25 || *c.MimeType != "text/html; charset=utf-8" || c.Encoding != "" {
		t.Errorf("content %+v", c)
	}
	// 12ms from request to response head, 3ms receiving.
	if *get.Timings.Wait != 12 || *get.Timings.Receive != 3 || *get.Time != 15 {
		t.Errorf("timings wait %v receive %v time %v", *get.Timings.Wait, *get.Timings.Receive, *get.Time)
	}

	post := l.Entries[1]
	if post.Request.PostData == nil || post.Request.PostData.Text != postBody || post.Request.PostData.MimeType != "application/json" {
		t.Errorf("postData %+v", post.Request.PostData)
	}
	if *post.Request.BodySize != postWireSize {
		t.Errorf("request bodySize %d", *post.Request.BodySize)
	}
	if post.Response.Content.Text != createdBody || *post.Response.RedirectURL != "/api/items/7" {
		t.Errorf("created: %+v redirect %q", post.Response.Content, *post.Response.RedirectURL)
	}
	if !strings.Contains(post.Comment, "interim response 100 Continue") {
		t.Errorf("comment %q", post.Comment)
	}
	if head := l.Entries[2]; *head.Response.BodySize != 0 || head.Response.Content.Text != "" {
		t.Errorf("HEAD response has a body: %+v", head.Response)
	}
}

func TestHARBinaryBodyAndURLs(t *testing.T) {
	r := &rec{tb: t}
	m := testMeta()
	m.Destination = "[2001:db8::2]:80"
	r.meta(m)
	bin := string([]byte{0x89, 'P', 'N', 'G', 0, 0xff})
	// No Host header: the URL falls back to the original destination.
	r.request(0, 1, "PUT", "/img", "Content-Type", "image/png")
	r.body(0, c2s, 1, bin)
	r.end(0, c2s, 1, int64(len(bin)))
	r.response(time.Millisecond, 1, 200, "OK", "Content-Type", "image/png", "Content-Length", "6")
	r.body(time.Millisecond, s2c, 1, bin)
	r.end(time.Millisecond, s2c, 1, int64(len(bin)))
	r.request(2*time.Millisecond, 2, "GET", "http://other.example:8080/abs?x=1", "Host", "other.example:8080")
	r.end(2*time.Millisecond, c2s, 2, 0)
	tr := mustBuild(t, Input{Meta: m, Chunks: r.chunks, Status: StatusSealed})
	b, err := HAR(tr)
	if err != nil {
		t.Fatal(err)
	}
	var doc harDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	e := doc.Log.Entries[0]
	if e.Request.URL != "http://[2001:db8::2]/img" || e.ServerIPAddress != "2001:db8::2" {
		t.Errorf("url %q server %q", e.Request.URL, e.ServerIPAddress)
	}
	c := e.Response.Content
	dec, err := base64.StdEncoding.DecodeString(c.Text)
	if c.Encoding != "base64" || err != nil || string(dec) != bin {
		t.Errorf("binary content %+v", c)
	}
	if u := doc.Log.Entries[1].Request.URL; u != "http://other.example:8080/abs?x=1" {
		t.Errorf("absolute-form url %q", u)
	}
}

func TestHARNoHTTP(t *testing.T) {
	r := &rec{tb: t}
	m := testMeta()
	r.meta(m)
	r.data(0, c2s, "\x16\x03\x01")
	tr := mustBuild(t, Input{Meta: m, Chunks: r.chunks})
	_, err := HAR(tr)
	if !errors.Is(err, ErrNoHTTP) || err.Error() != "session 0123456789abcdef has no HTTP exchanges: export it as pcapng or json" {
		t.Errorf("err = %v", err)
	}
	// Metadata-only recordings too.
	if _, err := HAR(mustBuild(t, Input{Meta: m, Status: StatusSealed, End: &recording.End{}})); !errors.Is(err, ErrNoHTTP) {
		t.Errorf("metadata-only: err = %v", err)
	}
}
