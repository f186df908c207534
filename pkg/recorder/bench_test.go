package recorder

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/intransit/intransit/pkg/recording"
	"github.com/intransit/intransit/pkg/redact"
)

// benchDirs are the stores benchmarks run against: the test's temporary
// directory (disk) and, when present, /dev/shm (memory), which takes the
// file system out of the figure.
func benchDirs(b *testing.B) []struct{ name, dir string } {
	dirs := []struct{ name, dir string }{{"disk", ""}}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dirs = append(dirs, struct{ name, dir string }{"shm", "/dev/shm"})
	}
	return dirs
}

// benchStore opens a store in a fresh directory under base ("" is
// b.TempDir()) and removes it afterwards.
func benchStore(b *testing.B, base string, o recording.StoreOptions) *recording.Store {
	b.Helper()
	dir := b.TempDir()
	if base != "" {
		d, err := os.MkdirTemp(base, "recorder-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	s, err := recording.OpenStore(dir, o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func benchRedactor(b *testing.B) *redact.Redactor {
	r, err := redact.New(redact.DefaultPolicy())
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// bulkPayload returns n bytes of one of two kinds of raw stream: "binary"
// (uniformly random, as compressed or encrypted application data) or
// "text" (log-like ASCII lines, where the redactor's trigger bytes ':' and
// '=' are frequent). Neither holds a secret.
func bulkPayload(kind string, n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	p := make([]byte, 0, n+256)
	switch kind {
	case "binary":
		for len(p) < n {
			p = append(p, byte(rng.Uint32()))
		}
		p[0] = 0x00 // not a method byte: the parser goes raw at once
	case "text":
		words := []string{"level=info", "msg=\"request served\"", "path=/api/v1/items", "status=200",
			"duration_ms=12", "user=alice", "host: example.com", "ts=2026-01-02T03:04:05Z", "bytes=5123"}
		for len(p) < n {
			p = append(p, words[rng.IntN(len(words))]...)
			if rng.IntN(6) == 0 {
				p = append(p, '\n')
			} else {
				p = append(p, ' ')
			}
		}
		p[0] = '*' // "*3\r\n..." is not HTTP
		p[1] = '3'
		p[2] = '\r'
	}
	return p[:n]
}

// BenchmarkRecorderBulk measures the recorder on a raw (non-HTTP) stream
// fed in 128 KiB Taps, as the relay does for plain sockets. One op is one
// Tap; a session is rotated (finished and a new one started, outside the
// timer) every 1 GiB, so -benchtime=8192x is exactly one 1 GiB session.
func BenchmarkRecorderBulk(b *testing.B) {
	const (
		tap     = 128 << 10
		session = 1 << 30
	)
	for _, d := range benchDirs(b) {
		for _, kind := range []string{"binary", "text"} {
			b.Run(d.name+"/"+kind, func(b *testing.B) {
				s := benchStore(b, d.dir, recording.StoreOptions{MaxSessionBytes: 2 * session, MaxTotalBytes: 5 * session})
				red := benchRedactor(b)
				data := bulkPayload(kind, 8*tap)
				start := func() *Recorder {
					r, err := Start(s, recording.Meta{Rule: "bench", Level: recording.LevelFull}, Options{Full: true, Redactor: red})
					if err != nil {
						b.Fatal(err)
					}
					return r
				}
				r := start()
				fed := 0
				b.SetBytes(tap)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if fed+tap > session {
						b.StopTimer()
						if err := r.Finish(recording.End{}); err != nil {
							b.Fatal(err)
						}
						r, fed = start(), 0
						b.StartTimer()
					}
					off := (i % 8) * tap
					if err := r.Tap(true, data[off:off+tap]); err != nil {
						b.Fatal(err)
					}
					fed += tap
				}
				b.StopTimer()
				if err := r.Finish(recording.End{}); err != nil {
					b.Fatal(err)
				}
				if err := r.Err(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// benchExchange returns a POST request and a 200 response with JSON
// bodies, each exactly size bytes on the wire.
func benchExchange(size int) (req, resp string) {
	msg := func(head, pre, post string) string {
		for pad := 0; ; pad++ {
			body := pre + strings.Repeat("x", pad) + post
			m := fmt.Sprintf(head, len(body)) + body
			if len(m) >= size {
				return m
			}
		}
	}
	req = msg("POST /api/v1/search?page=1 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench/1.0\r\n"+
		"Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345\r\nAccept: application/json\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		`{"query":"`, `","password":"hunter2","page":1}`)
	resp = msg("HTTP/1.1 200 OK\r\nDate: Mon, 02 Jan 2026 03:04:05 GMT\r\nContent-Type: application/json\r\n"+
		"Cache-Control: no-store\r\nContent-Length: %d\r\n\r\n",
		`{"items":[`+strings.Repeat(`{"id":12345,"name":"item"},`, 20)+`{"note":"`, `"}]}`)
	return req, resp
}

// BenchmarkRecorderHTTP1KiB measures one keep-alive exchange per op: a
// 1 KiB request (head and a JSON body) and a 1 KiB response, each in one
// Tap. Sessions are rotated outside the timer every 256 MiB of recording.
func BenchmarkRecorderHTTP1KiB(b *testing.B) {
	req, resp := benchExchange(1024)
	for _, d := range benchDirs(b) {
		b.Run(d.name, func(b *testing.B) {
			const rotate = 256 << 20
			s := benchStore(b, d.dir, recording.StoreOptions{MaxSessionBytes: 2 * rotate, MaxTotalBytes: 8 * rotate})
			red := benchRedactor(b)
			start := func() *Recorder {
				r, err := Start(s, recording.Meta{Rule: "bench", Level: recording.LevelFull}, Options{Full: true, Redactor: red})
				if err != nil {
					b.Fatal(err)
				}
				return r
			}
			r := start()
			reqB, respB := []byte(req), []byte(resp)
			fed := 0
			b.SetBytes(int64(len(reqB) + len(respB)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if fed > rotate/2 {
					b.StopTimer()
					if err := r.Finish(recording.End{}); err != nil {
						b.Fatal(err)
					}
					r, fed = start(), 0
					b.StartTimer()
				}
				if err := r.Tap(true, reqB); err != nil {
					b.Fatal(err)
				}
				if err := r.Tap(false, respB); err != nil {
					b.Fatal(err)
				}
				fed += len(reqB) + len(respB)
			}
			b.StopTimer()
			if err := r.Finish(recording.End{}); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkBulkParts measures, on the same 128 KiB pieces as
// BenchmarkRecorderBulk, the parts a recorded byte goes through, to show
// where the time goes and what the ceiling is: the redactor's stream
// (binary and text), the SHA-256 chain, the copy into the writer's buffer
// and the write(2) to a file on /dev/shm (or disk).
func BenchmarkBulkParts(b *testing.B) {
	const tap = 128 << 10
	for _, kind := range []string{"binary", "text"} {
		b.Run("redact-stream/"+kind, func(b *testing.B) {
			data := bulkPayload(kind, 8*tap)
			st := benchRedactor(b).NewStream(func([]byte) error { return nil })
			b.SetBytes(tap)
			for i := 0; i < b.N; i++ {
				off := (i % 8) * tap
				if err := st.Write(data[off : off+tap]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("sha256", func(b *testing.B) {
		data := bulkPayload("binary", tap)
		h := sha256.New()
		var sum [sha256.Size]byte
		b.SetBytes(tap)
		for i := 0; i < b.N; i++ {
			h.Reset()
			h.Write(sum[:])
			h.Write(data)
			h.Sum(sum[:0])
		}
	})
	b.Run("copy", func(b *testing.B) {
		data := bulkPayload("binary", tap)
		buf := make([]byte, 0, tap+64)
		b.SetBytes(tap)
		for i := 0; i < b.N; i++ {
			buf = append(buf[:0], data...)
		}
	})
	for _, d := range benchDirs(b) {
		b.Run("write/"+d.name, func(b *testing.B) {
			dir := d.dir
			if dir == "" {
				dir = b.TempDir()
			}
			f, err := os.CreateTemp(dir, "write-bench-")
			if err != nil {
				b.Fatal(err)
			}
			defer os.Remove(f.Name())
			defer f.Close()
			data := bulkPayload("binary", tap)
			b.SetBytes(tap)
			for i := 0; i < b.N; i++ {
				if i%8192 == 0 { // keep the file at 1 GiB at most
					if err := f.Truncate(0); err != nil {
						b.Fatal(err)
					}
					if _, err := f.Seek(0, 0); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := f.Write(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
