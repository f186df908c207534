package httpstream

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// tapConn sits under net/http's client like the proxy sits between client
// and server: bytes written are parsed as requests before they are sent,
// bytes read are parsed as responses. net/http writes and reads from
// different goroutines, so the two parsers share their Exchanges
// concurrently (run with -race).
type tapConn struct {
	net.Conn
	reqMu, respMu       sync.Mutex
	reqP, respP         *Parser
	reqRec, respRec     *recorder
	reqBytes, respBytes []byte
}

func newTapConn(t *testing.T, c net.Conn) *tapConn {
	x := NewExchanges()
	return &tapConn{Conn: c, reqP: NewRequestParser(x), respP: NewResponseParser(x), reqRec: newRecorder(t), respRec: newRecorder(t)}
}

func (c *tapConn) Write(b []byte) (int, error) {
	c.reqMu.Lock()
	c.reqBytes = append(c.reqBytes, b...)
	c.reqP.Feed(b, c.reqRec)
	c.reqMu.Unlock()
	return c.Conn.Write(b)
}

func (c *tapConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.respMu.Lock()
	c.respBytes = append(c.respBytes, b[:n]...)
	c.respP.Feed(b[:n], c.respRec)
	c.respMu.Unlock()
	return n, err
}

// snapshot returns copies of what was seen so far.
func (c *tapConn) snapshot() (req, resp []byte, reqEv, respEv string) {
	c.reqMu.Lock()
	req, reqEv = append([]byte(nil), c.reqBytes...), c.reqRec.full()
	c.reqMu.Unlock()
	c.respMu.Lock()
	resp, respEv = append([]byte(nil), c.respBytes...), c.respRec.full()
	c.respMu.Unlock()
	return req, resp, reqEv, respEv
}

func tapClient(t *testing.T) (*http.Client, func() []*tapConn) {
	var mu sync.Mutex
	var conns []*tapConn
	tr := &http.Transport{
		MaxConnsPerHost:       1,
		ExpectContinueTimeout: 10 * time.Second,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := newTapConn(t, c)
			mu.Lock()
			conns = append(conns, tc)
			mu.Unlock()
			return tc, nil
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}, func() []*tapConn {
		mu.Lock()
		defer mu.Unlock()
		return append([]*tapConn(nil), conns...)
	}
}

func testServer(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello get") })
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b)
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first part;")
		w.(http.Flusher).Flush()
		io.WriteString(w, "second part")
	})
	mux.HandleFunc("/head", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	})
	mux.HandleFunc("/204", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/304", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotModified) })
	mux.HandleFunc("/trailers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "abc")
		w.Header().Set("X-Sum", "3")
	})
	mux.HandleFunc("/early", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "after hints")
	})
	mux.HandleFunc("/upgrade", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "test" {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(rw, buf); err != nil {
			t.Error(err)
			return
		}
		c.Write(bytes.ToUpper(buf))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestParserNetHTTP parses what net/http's client and server exchange on one
// keep-alive connection, live, then re-parses the recorded streams cut at
// every position.
func TestParserNetHTTP(t *testing.T) {
	srv := testServer(t)
	client, conns := tapClient(t)
	type call struct {
		method, path string
		body         io.Reader
		expect       bool
		status       int
		respBody     string
	}
	calls := []call{
		{method: "GET", path: "/get", status: 200, respBody: "hello get"},
		{method: "POST", path: "/echo", body: strings.NewReader("post with content-length"), status: 200, respBody: "post with content-length"},
		{method: "POST", path: "/echo", body: io.NopCloser(strings.NewReader("post chunked by net/http")), status: 200, respBody: "post chunked by net/http"},
		{method: "GET", path: "/chunked", status: 200, respBody: "first part;second part"},
		{method: "HEAD", path: "/head", status: 200},
		{method: "GET", path: "/204", status: 204},
		{method: "GET", path: "/304", status: 304},
		{method: "PUT", path: "/echo", body: strings.NewReader("sent after 100 Continue"), expect: true, status: 200, respBody: "sent after 100 Continue"},
		{method: "GET", path: "/trailers", status: 200, respBody: "abc"},
		{method: "GET", path: "/early", status: 200, respBody: "after hints"},
	}
	var wantReq, wantResp []string
	for i, c := range calls {
		ex := i + 1
		var sent []byte
		if c.body != nil {
			sent, _ = io.ReadAll(c.body)
			if _, ok := c.body.(*strings.Reader); ok {
				c.body = bytes.NewReader(sent)
			} else {
				c.body = io.NopCloser(bytes.NewReader(sent))
			}
		}
		req, err := http.NewRequest(c.method, srv.URL+c.path, c.body)
		if err != nil {
			t.Fatal(err)
		}
		if c.expect {
			req.Header.Set("Expect", "100-continue")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != c.status || string(got) != c.respBody {
			t.Fatalf("%s %s: %d %q %v", c.method, c.path, resp.StatusCode, got, err)
		}
		if c.path == "/trailers" && resp.Trailer.Get("X-Sum") != "3" {
			t.Fatalf("trailer %v", resp.Trailer)
		}

		wantReq = append(wantReq, fmt.Sprintf("head %d %s %s", ex, c.method, c.path))
		if len(sent) > 0 {
			wantReq = append(wantReq, fmt.Sprintf("body %d %q", ex, sent))
		}
		wantReq = append(wantReq, fmt.Sprintf("end %d size=%d", ex, len(sent)))
		switch c.path {
		case "/early":
			wantResp = append(wantResp, fmt.Sprintf("head %d 103", ex), fmt.Sprintf("end %d size=0", ex))
		}
		if c.expect {
			wantResp = append(wantResp, fmt.Sprintf("head %d 100", ex), fmt.Sprintf("end %d size=0", ex))
		}
		wantResp = append(wantResp, fmt.Sprintf("head %d %d", ex, c.status))
		if c.respBody != "" {
			wantResp = append(wantResp, fmt.Sprintf("body %d %q", ex, c.respBody))
		}
		end := fmt.Sprintf("end %d size=%d", ex, len(c.respBody))
		if c.path == "/trailers" {
			end += " trailers=[X-Sum: 3]"
		}
		wantResp = append(wantResp, end)
	}
	cs := conns()
	if len(cs) != 1 {
		t.Fatalf("%d connections, want 1 keep-alive connection", len(cs))
	}
	reqBytes, respBytes, liveReq, liveResp := cs[0].snapshot()
	r := checkSplits(t, reqBytes, respBytes)
	wantLines(t, "request", r.req.lines(), wantReq)
	wantLines(t, "response", r.resp.lines(), wantResp)
	if liveReq != r.req.full() || liveResp != r.resp.full() {
		t.Errorf("live parse differs from re-parse:\n%s%s\nre-parse:\n%s%s", liveReq, liveResp, r.req.full(), r.resp.full())
	}
	if !strings.Contains(r.req.full(), "[Transfer-Encoding: chunked]") {
		t.Error("net/http did not send a chunked request: the test no longer covers it")
	}
}

// TestParserNetHTTPUpgrade: after net/http's client gets 101, both
// directions are raw.
func TestParserNetHTTPUpgrade(t *testing.T) {
	srv := testServer(t)
	client, conns := tapClient(t)
	req, _ := http.NewRequest("GET", srv.URL+"/upgrade", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "test")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rwc := resp.Body.(io.ReadWriteCloser)
	io.WriteString(rwc, "ping")
	got, _ := io.ReadAll(rwc)
	rwc.Close()
	if string(got) != "PING" {
		t.Fatalf("read %q", got)
	}
	reqBytes, respBytes, _, _ := conns()[0].snapshot()
	r := checkSplits(t, reqBytes, respBytes)
	wantLines(t, "request", r.req.lines(), []string{"head 1 GET /upgrade", "end 1 size=0", "fallback upgrade to test", `raw "ping"`})
	wantLines(t, "response", r.resp.lines(), []string{"head 1 101", "end 1 size=0", "fallback upgrade to test", `raw "PING"`})
}
