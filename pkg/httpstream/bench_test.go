package httpstream

import (
	"strconv"
	"strings"
	"testing"
)

// nopHandler counts, so the work cannot be optimised away.
type nopHandler struct{ heads, body int }

func (h *nopHandler) Head(uint32, *Head)          { h.heads++ }
func (h *nopHandler) Body(_ uint32, p []byte)     { h.body += len(p) }
func (h *nopHandler) End(uint32, []Header, int64) {}
func (h *nopHandler) Raw([]byte)                  {}
func (h *nopHandler) Fallback(string)             {}

// A browser-like request and a JSON response, about 1 KiB together.
var (
	benchReq = []byte("GET /api/v1/items?page=2&sort=name HTTP/1.1\r\n" +
		"Host: api.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36\r\n" +
		"Accept: application/json, text/plain, */*\r\n" +
		"Accept-Language: en-US,en;q=0.9\r\n" +
		"Accept-Encoding: gzip, deflate, br\r\n" +
		"Authorization: Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig\r\n" +
		"Cookie: session=abcdef0123456789; theme=dark\r\n" +
		"Connection: keep-alive\r\n\r\n")
	benchRespBody = strings.Repeat(`{"id":1,"name":"item"},`, 16)
	benchResp     = []byte("HTTP/1.1 200 OK\r\n" +
		"Content-Type: application/json\r\n" +
		"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n" +
		"Cache-Control: no-store\r\n" +
		"Content-Length: " + strconv.Itoa(len(benchRespBody)) + "\r\n\r\n" + benchRespBody)
)

func BenchmarkParser1KiBExchange(b *testing.B) {
	x := NewExchanges()
	rp, sp := NewRequestParser(x), NewResponseParser(x)
	var h nopHandler
	b.SetBytes(int64(len(benchReq) + len(benchResp)))
	b.ReportAllocs()
	for b.Loop() {
		rp.Feed(benchReq, &h)
		sp.Feed(benchResp, &h)
	}
	if h.heads != 2*b.N || rp.Raw() || sp.Raw() {
		b.Fatalf("heads %d for %d exchanges", h.heads, b.N)
	}
}

// BenchmarkParserBulkBody: 64 KiB reads of a large body, passed through as
// sub-slices.
func BenchmarkParserBulkBody(b *testing.B) {
	p := NewRequestParser(nil)
	var h nopHandler
	p.Feed([]byte("PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n"), &h)
	piece := make([]byte, 64<<10)
	b.SetBytes(int64(len(piece)))
	b.ReportAllocs()
	for b.Loop() {
		p.Feed(piece, &h)
	}
	if h.body != b.N*len(piece) {
		b.Fatal("body bytes lost")
	}
}

// BenchmarkInjector rewrites the request above (replacing its
// Authorization) on a keep-alive stream.
func BenchmarkInjector(b *testing.B) {
	i := NewInjector("Authorization", func() (string, error) { return "Bearer new-token", nil })
	dst := make([]byte, 0, 2*len(benchReq))
	b.SetBytes(int64(len(benchReq)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = i.Transform(dst[:0], benchReq); err != nil {
			b.Fatal(err)
		}
	}
}
