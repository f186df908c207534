package httpstream

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
)

func fuzzSeeds() [][2]string {
	var seeds [][2]string
	for _, c := range canonical {
		seeds = append(seeds, [2]string{c.req, c.resp})
	}
	for _, s := range smuggling {
		if len(s.msg) < 4096 {
			seeds = append(seeds, [2]string{okReq + s.msg, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" + s.msg})
		}
	}
	seeds = append(seeds,
		[2]string{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "\x16\x03\x03\x00\x7a\x02"},
		[2]string{"PING\r\n", "+PONG\r\n"},
		[2]string{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nT: 1\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\nuntil close"},
	)
	return seeds
}

// FuzzParser: no panics; every byte is accounted for; cutting the input
// changes nothing.
func FuzzParser(f *testing.F) {
	for i, s := range fuzzSeeds() {
		f.Add([]byte(s[0]), []byte(s[1]), uint16(i*7))
	}
	f.Fuzz(func(t *testing.T, req, resp []byte, cut uint16) {
		whole := run(t, req, resp, nil, nil)
		var reqCuts, respCuts []int
		if len(req) > 1 {
			reqCuts = []int{1 + int(cut)%(len(req)-1)}
		}
		if len(resp) > 1 {
			respCuts = []int{1 + int(cut)%(len(resp)-1)}
		}
		cutRun := run(t, req, resp, reqCuts, respCuts)
		if whole.req.full() != cutRun.req.full() || whole.resp.full() != cutRun.resp.full() {
			t.Fatalf("cut at %v/%v:\n%s%s\nwhole:\n%s%s", reqCuts, respCuts,
				cutRun.req.full(), cutRun.resp.full(), whole.req.full(), whole.resp.full())
		}
		if len(req)+len(resp) < 512 {
			bytewise := run(t, req, resp, everyByte(len(req)), everyByte(len(resp)))
			if whole.req.full() != bytewise.req.full() || whole.resp.full() != bytewise.resp.full() {
				t.Fatalf("a byte at a time:\n%s%s\nwhole:\n%s%s",
					bytewise.req.full(), bytewise.resp.full(), whole.req.full(), whole.resp.full())
			}
		}
	})
}

// FuzzInjector: no panics; cutting the input changes nothing; when the
// injector accepts a stream, net/http reading its output finds exactly the
// injected credential in every request it can parse, up to an upgrade.
func FuzzInjector(f *testing.F) {
	for i, s := range fuzzSeeds() {
		f.Add([]byte(s[0]), uint16(i*5))
	}
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: old\r\n\r\nGET /2 HTTP/1.1\r\nauthorization: old\r\nAUTHORIZATION: old2\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 22\r\n\r\nAuthorization: old\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTrailer: Authorization\r\n\r\n3\r\nabc\r\n0\r\nAuthorization: old\r\n\r\n",
		"GET / HTTP/1.1\nAuthorization: old\n\n",
	} {
		f.Add([]byte(s), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		out, err := inject(in, nil)
		var cuts []int
		if len(in) > 1 {
			cuts = []int{1 + int(cut)%(len(in)-1)}
		}
		out2, err2 := inject(in, cuts)
		if !bytes.Equal(out, out2) || fmt.Sprint(err) != fmt.Sprint(err2) {
			t.Fatalf("cut at %v: %q, %v\nwhole: %q, %v", cuts, out2, err2, out, err)
		}
		if err != nil {
			return
		}
		reqs, _ := readRequests(out)
		for j, r := range reqs {
			if got := r.header.Values("Authorization"); len(got) != 1 || got[0] != cred {
				t.Fatalf("request %d of %q: Authorization %q", j+1, out, got)
			}
			if got := r.trailer.Values("Authorization"); len(got) != 0 {
				t.Fatalf("request %d of %q: trailer Authorization %q", j+1, out, got)
			}
			if r.method == http.MethodConnect || len(r.header.Values("Upgrade")) > 0 {
				break // the rest is not HTTP to the injector
			}
		}
	})
}
