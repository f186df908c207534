package httpstream

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

const cred = "Bearer injected-token"

func newTestInjector() *Injector {
	return NewInjector("Authorization", func() (string, error) { return cred, nil })
}

// inject runs in through a fresh injector cut at cuts, then Close.
func inject(in []byte, cuts []int) ([]byte, error) {
	i := newTestInjector()
	var out []byte
	prev := 0
	var scratch []byte
	for _, c := range append(cuts, len(in)) {
		scratch = append(scratch[:0], in[prev:c]...)
		var err error
		if out, err = i.Transform(out, scratch); err != nil {
			return out, err
		}
		for j := range scratch {
			scratch[j] = 0xAA // the injector must not keep input
		}
		prev = c
	}
	return out, i.Close()
}

// injectSplits requires the same output and error whole, a byte at a time
// and cut in two anywhere.
func injectSplits(t *testing.T, in []byte) ([]byte, error) {
	t.Helper()
	want, wantErr := inject(in, nil)
	check := func(how string, got []byte, err error) {
		t.Helper()
		if !bytes.Equal(got, want) || fmt.Sprint(err) != fmt.Sprint(wantErr) {
			t.Fatalf("%s: output %q, %v\nwhole: %q, %v", how, got, err, want, wantErr)
		}
	}
	got, err := inject(in, everyByte(len(in)))
	check("a byte at a time", got, err)
	for k := 1; k < len(in); k++ {
		got, err := inject(in, []int{k})
		check(fmt.Sprintf("cut at %d", k), got, err)
	}
	return want, wantErr
}

type parsedReq struct {
	method, target string
	header         http.Header
	body           string
	trailer        http.Header
}

// readRequests parses out as a server would, request after request.
func readRequests(out []byte) ([]parsedReq, error) {
	br := bufio.NewReader(bytes.NewReader(out))
	var reqs []parsedReq
	for {
		// Empty lines between requests are allowed (RFC 9112 §2.2); net/http
		// does not skip them itself.
		for {
			c, err := br.ReadByte()
			if err == io.EOF {
				return reqs, nil
			}
			if c != '\r' && c != '\n' || len(reqs) == 0 {
				br.UnreadByte()
				break
			}
		}
		r, err := http.ReadRequest(br)
		if err != nil {
			return reqs, err
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return reqs, err
		}
		reqs = append(reqs, parsedReq{r.Method, r.RequestURI, r.Header, string(body), r.Trailer})
	}
}

func TestInjectorExact(t *testing.T) {
	out, err := injectSplits(t, []byte("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic b2xk\r\nX-Keep: y\r\n\r\n"+
		"POST /p HTTP/1.1\nauthorization: old\nContent-Length: 3\n\nabc"))
	want := "GET / HTTP/1.1\r\nHost: a\r\nX-Keep: y\r\nAuthorization: " + cred + "\r\n\r\n" +
		"POST /p HTTP/1.1\nContent-Length: 3\nAuthorization: " + cred + "\r\n\nabc"
	if err != nil || string(out) != want {
		t.Errorf("got %q, %v\nwant %q", out, err, want)
	}
}

func TestInjector(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     string
		bodies []string
	}{
		{"replaces", "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic b2xk\r\nX-Keep: 1\r\n\r\n", []string{""}},
		{"replaces lower-case", "GET / HTTP/1.1\r\nHost: a\r\nauthorization: old\r\nX-Keep: 1\r\n\r\n", []string{""}},
		{"replaces duplicates", "GET / HTTP/1.1\r\nAuthorization: one\r\nHost: a\r\nAUTHORIZATION: two\r\nX-Keep: 1\r\n\r\n", []string{""}},
		{"adds", "GET / HTTP/1.1\r\nHost: a\r\nX-Keep: 1\r\n\r\n", []string{""}},
		{"adds without headers", "GET / HTTP/1.1\r\n\r\n", []string{""}},
		{
			"pipelined",
			"GET /1 HTTP/1.1\r\nHost: a\r\nAuthorization: old\r\nX-Keep: 1\r\n\r\n" +
				"POST /2 HTTP/1.1\r\nHost: a\r\nX-Keep: 1\r\nContent-Length: 5\r\n\r\nhello" +
				"GET /3 HTTP/1.1\r\nHost: a\r\nauthorization: old\r\nX-Keep: 1\r\n\r\n",
			[]string{"", "hello", ""},
		},
		{
			"chunked body and trailers pass",
			"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Keep: 1\r\nTrailer: Authorization\r\n\r\n" +
				"16;ext=1\r\nAuthorization: x\r\n\r\nGE\r\n4\r\nT / \r\n0\r\nAuthorization: trailer-old\r\nX-T: 1\r\n\r\n" +
				"GET /next HTTP/1.1\r\nHost: a\r\nX-Keep: 1\r\n\r\n",
			[]string{"Authorization: x\r\n\r\nGET / ", ""},
		},
		{
			"content-length body with header text passes",
			"PUT /b HTTP/1.1\r\nHost: a\r\nX-Keep: 1\r\nContent-Length: 46\r\n\r\n\r\n\r\nAuthorization: x\r\nGET / HTTP/1.1\r\n\r\n\r\n\r\n\r\n" +
				"GET /after HTTP/1.1\r\nHost: a\r\nX-Keep: 1\r\nAuthorization: old\r\n\r\n",
			[]string{"\r\n\r\nAuthorization: x\r\nGET / HTTP/1.1\r\n\r\n\r\n\r\n\r\n", ""},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := injectSplits(t, []byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(out, []byte("old")) {
				t.Errorf("old credential in output %q", out)
			}
			reqs, err := readRequests(out)
			if err != nil {
				t.Fatalf("net/http reading %q: %v", out, err)
			}
			if len(reqs) != len(tc.bodies) {
				t.Fatalf("%d requests, want %d", len(reqs), len(tc.bodies))
			}
			for j, r := range reqs {
				if got := r.header.Values("Authorization"); len(got) != 1 || got[0] != cred {
					t.Errorf("request %d: Authorization %q", j+1, got)
				}
				if r.body != tc.bodies[j] {
					t.Errorf("request %d: body %q, want %q", j+1, r.body, tc.bodies[j])
				}
				if strings.Contains(tc.in, "X-Keep") && r.header.Get("X-Keep") != "1" {
					t.Errorf("request %d: lost X-Keep: %v", j+1, r.header)
				}
				if got := r.trailer.Values("Authorization"); len(got) > 0 {
					t.Errorf("request %d: trailer Authorization %q", j+1, got)
				}
			}
		})
	}
}

func TestInjectorErrors(t *testing.T) {
	type tc struct {
		name, in, want string
	}
	cases := []tc{
		{"TLS", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "inject: client stream is not HTTP/1.x: unexpected byte '\\x16' in method at offset 0"},
		{"redis", "PING\r\n", "inject: client stream is not HTTP/1.x: "},
		{"HTTP/2", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "inject: client stream is not HTTP/1.x: "},
		{"ends inside head", "GET / HTTP/1.1\r\nHost: a\r\n", "inject: stream ended inside a request head (25 bytes not forwarded)"},
		{"ends inside chunk-size line", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1", "inject: stream ended inside a chunked body framing (1 bytes not forwarded)"},
	}
	for _, s := range smuggling {
		cases = append(cases, tc{"smuggling " + s.name, okReq + s.msg, "inject: parse error: "})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out []byte
			var err error
			if len(c.in) < 2048 {
				out, err = injectSplits(t, []byte(c.in))
			} else {
				out, err = inject([]byte(c.in), nil)
			}
			if err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
			for _, s := range smuggling {
				if c.name == "smuggling "+s.name && !strings.Contains(err.Error(), s.reason) {
					t.Errorf("error %q does not name %q", err, s.reason)
				}
			}
			// Only complete requests before the problem may have gone out.
			if strings.HasPrefix(c.in, okReq) {
				if want := "GET /ok HTTP/1.1\r\nHost: a\r\nAuthorization: " + cred + "\r\n\r\n"; string(out) != want {
					t.Errorf("output %q, want %q", out, want)
				}
			}
		})
	}
}

func TestInjectorValueErrors(t *testing.T) {
	const secret = "s3cr3t"
	for _, tc := range []struct {
		name  string
		value func() (string, error)
		want  string
	}{
		{"CRLF", func() (string, error) { return secret + "\r\nX-Evil: 1", nil }, "inject: credential value contains control byte 0x0d"},
		{"LF", func() (string, error) { return secret + "\nX-Evil: 1", nil }, "inject: credential value contains control byte 0x0a"},
		{"NUL", func() (string, error) { return secret + "\x00", nil }, "inject: credential value contains control byte 0x00"},
		{"empty", func() (string, error) { return "", nil }, "inject: credential value is empty"},
		{"error", func() (string, error) { return "", errors.New("open /creds: no such file") }, "inject: credential value: open /creds: no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i := NewInjector("Authorization", tc.value)
			out, err := i.Transform(nil, []byte("GET / HTTP/1.1\r\n\r\n"))
			if err == nil || err.Error() != tc.want || len(out) != 0 {
				t.Fatalf("%q, %v; want %q", out, err, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Error("error reveals the credential")
			}
			// Fail closed: the injector stays failed.
			if _, err2 := i.Transform(nil, []byte("GET / HTTP/1.1\r\n\r\n")); err2 != err {
				t.Errorf("second Transform: %v", err2)
			}
			if err2 := i.Close(); err2 != err {
				t.Errorf("Close: %v", err2)
			}
		})
	}
	i := NewInjector("Bad Name", func() (string, error) { return "v", nil })
	if _, err := i.Transform(nil, []byte("GET / HTTP/1.1\r\n\r\n")); err == nil || err.Error() != `inject: invalid header name "Bad Name"` {
		t.Errorf("invalid name: %v", err)
	}
}

// TestInjectorHeadLimit: a head is held back up to MaxHeadBytes, no more.
func TestInjectorHeadLimit(t *testing.T) {
	i := newTestInjector()
	out, err := i.Transform(nil, []byte("GET / HTTP/1.1\r\nX: "+strings.Repeat("a", MaxHeadBytes-40)))
	if err != nil || len(out) != 0 {
		t.Fatalf("%d bytes, %v", len(out), err)
	}
	_, err = i.Transform(nil, []byte(strings.Repeat("a", 100)))
	if err == nil || err.Error() != "inject: parse error: head larger than 65536 bytes" {
		t.Fatalf("error %v", err)
	}
}

// After an upgrade request or CONNECT, the rest passes untouched, even what
// looks like a request.
func TestInjectorUpgradeAndConnect(t *testing.T) {
	for _, tc := range []struct{ name, head, rest string }{
		{"websocket", "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nAuthorization: old\r\n\r\n",
			"\x81\x85abcd\x09\x07\x0f\x08\x0eGET / HTTP/1.1\r\nAuthorization: raw\r\n\r\n"},
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
			"\x16\x03\x01\x00\x05helloGET / HTTP/1.1\r\nAuthorization: raw\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := injectSplits(t, []byte(tc.head+tc.rest))
			if err != nil {
				t.Fatal(err)
			}
			reqs, _ := readRequests(out)
			if len(reqs) == 0 || reqs[0].header.Get("Authorization") != cred || len(reqs[0].header.Values("Authorization")) != 1 {
				t.Fatalf("upgrade request not rewritten: %q", out)
			}
			if !bytes.HasSuffix(out, []byte("\r\n\r\n"+tc.rest)) {
				t.Errorf("rest not passed through: %q", out)
			}
		})
	}
}

// value is called once per request, so a reloaded credential applies from
// the next request.
func TestInjectorValuePerRequest(t *testing.T) {
	n := 0
	i := NewInjector("X-Api-Key", func() (string, error) { n++; return fmt.Sprint("key-", n), nil })
	out, err := i.Transform(nil, []byte("GET /1 HTTP/1.1\r\nx-api-key: mine\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err = i.Transform(out, []byte("\r\n")); err != nil {
		t.Fatal(err)
	}
	want := "GET /1 HTTP/1.1\r\nX-Api-Key: key-1\r\n\r\nGET /2 HTTP/1.1\r\nX-Api-Key: key-2\r\n\r\nGET /3 HTTP/1.1\r\nX-Api-Key: key-3\r\n\r\n"
	if string(out) != want || n != 3 {
		t.Errorf("%d calls, output %q", n, out)
	}
	if err := i.Close(); err != nil {
		t.Error(err)
	}
}

// TestInjectorNetHTTP puts the injector between net/http's client and server
// as the proxy does.
func TestInjectorNetHTTP(t *testing.T) {
	var mu sync.Mutex
	var seen [][]string
	srv := testServerFunc(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Header.Values("Authorization"))
		mu.Unlock()
		w.Write(b)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go proxyInject(t, c, srv)
		}
	}()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	bodies := []io.Reader{nil, strings.NewReader("Authorization: in body"), io.NopCloser(strings.NewReader("chunked\r\n0\r\n\r\n"))}
	for j, body := range bodies {
		req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/", body)
		req.Header.Set("Authorization", "Basic stolen")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := ""
		if body != nil {
			want = []string{"", "Authorization: in body", "chunked\r\n0\r\n\r\n"}[j]
		}
		if string(got) != want {
			t.Errorf("request %d: echoed %q", j, got)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for j, v := range seen {
		if len(v) != 1 || v[0] != cred {
			t.Errorf("request %d: server saw Authorization %q", j, v)
		}
	}
	if len(seen) != len(bodies) {
		t.Errorf("server saw %d requests", len(seen))
	}
}

func testServerFunc(t *testing.T, h http.HandlerFunc) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// proxyInject relays c to upstream, client bytes through an Injector.
func proxyInject(t *testing.T, c net.Conn, upstream string) {
	defer c.Close()
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		t.Error(err)
		return
	}
	defer u.Close()
	go io.Copy(c, u)
	inj := newTestInjector()
	buf := make([]byte, 7) // small reads: heads arrive in pieces
	var out []byte
	for {
		n, err := c.Read(buf)
		if n > 0 {
			var ierr error
			if out, ierr = inj.Transform(out[:0], buf[:n]); ierr != nil {
				t.Error(ierr)
				return
			}
			if _, err := u.Write(out); err != nil {
				return
			}
		}
		if err != nil {
			if cerr := inj.Close(); cerr != nil {
				t.Error(cerr)
			}
			return
		}
	}
}
