package redact

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Benchmark inputs: proxied traffic without secrets (HTTP heads, JSON API
// bodies, prose, HTML) and the same with secrets sprinkled in.

var words = []string{
	"the", "request", "was", "sent", "to", "upstream", "server", "and", "a", "response", "came", "back",
	"with", "status", "ok", "data", "about", "your", "order", "shipping", "address", "payment", "method",
	"is", "being", "processed", "by", "our", "system", "please", "wait", "for", "confirmation", "email",
	"about", "quality", "service", "customer", "number", "available", "between", "information", "business",
	"Bob", "Alice", "London", "January", "Kubernetes", "cluster", "node", "pod", "deployment", "bucket",
}

func sentence(rng *rand.Rand) string {
	n := 6 + rng.IntN(12)
	s := ""
	for i := range n {
		if i > 0 {
			s += " "
		}
		s += words[rng.IntN(len(words))]
	}
	return s + ". "
}

func plainChunk(rng *rand.Rand) string {
	switch rng.IntN(4) {
	case 0:
		return fmt.Sprintf("GET /api/v1/orders/%d?page=%d&limit=50 HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: application/json\r\nAccept-Encoding: gzip, deflate\r\nX-Request-Id: %08x-%04x\r\nContent-Length: %d\r\n\r\n",
			rng.IntN(100000), rng.IntN(20), rng.Uint32(), rng.IntN(65536), rng.IntN(5000))
	case 1:
		return fmt.Sprintf(`{"id":%d,"name":"%s","email":"user%d@example.com","created_at":"2024-01-%02dT10:%02d:00Z","tags":["a","b","c"],"address":{"street":"%s","city":"London","zip":"N1 %dAB"},"total":%d.%02d,"items":[{"sku":"X-%d","qty":%d},{"sku":"Y-%d","qty":1}],"description":"%s"}`+"\n",
			rng.IntN(1e6), words[rng.IntN(len(words))], rng.IntN(1000), 1+rng.IntN(28), rng.IntN(60), sentence(rng), rng.IntN(9), rng.IntN(1000), rng.IntN(100), rng.IntN(1e5), 1+rng.IntN(5), rng.IntN(1e5), sentence(rng))
	case 2:
		return sentence(rng) + sentence(rng) + sentence(rng) + "\n"
	default:
		return fmt.Sprintf("<div class=\"item\"><a href=\"/p/%d\">%s</a><p>%s</p></div>\n", rng.IntN(1e5), words[rng.IntN(len(words))], sentence(rng))
	}
}

func secretChunk(rng *rand.Rand) string {
	switch rng.IntN(6) {
	case 0:
		return "Authorization: Bearer " + jwtTok + "\r\n"
	case 1:
		return `{"username":"bob","password":"hunter2","client_secret":"s3cr3t"}` + "\n"
	case 2:
		return "POST /token HTTP/1.1\r\n\r\ngrant_type=refresh_token&refresh_token=abcdef123456&client_id=x\n"
	case 3:
		return "aws_access_key_id = " + awsID + "\naws_secret_access_key = " + awsSecret + "\n"
	case 4:
		return pemBlock + "\n"
	default:
		return "Cookie: session=abc123def456; theme=dark\r\n"
	}
}

func benchText(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 0, n+4096)
	for len(b) < n {
		b = append(b, plainChunk(rng)...)
	}
	return b[:n]
}

func benchSecrets(n int) []byte {
	rng := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 0, n+4096)
	for len(b) < n {
		if rng.IntN(4) == 0 {
			b = append(b, secretChunk(rng)...)
		} else {
			b = append(b, plainChunk(rng)...)
		}
	}
	return b[:n]
}

func benchJSONDoc(n int) []byte {
	rng := rand.New(rand.NewPCG(5, 6))
	b := []byte(`{"data":[`)
	for len(b) < n {
		if len(b) > 10 {
			b = append(b, ',')
		}
		c := plainChunk(rng)
		for c[0] != '{' {
			c = plainChunk(rng)
		}
		b = append(b, c[:len(c)-1]...)
		if rng.IntN(8) == 0 {
			b = append(b, `,{"user":"bob","password":"hunter2","session":{"token":"abc","scopes":["a","b"]}}`...)
		}
	}
	return append(b, `],"next":null}`...)
}

func benchStream(b *testing.B, in []byte, piece int) {
	r := mustNew(b, DefaultPolicy())
	s := r.NewStream(func([]byte) error { return nil })
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		for p := in; len(p) > 0; {
			n := min(piece, len(p))
			if err := s.Write(p[:n]); err != nil {
				b.Fatal(err)
			}
			p = p[n:]
		}
	}
	if err := s.Flush(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkStreamPlain: 64 KiB writes of traffic without secrets.
func BenchmarkStreamPlain(b *testing.B) {
	b.Run("mixed", func(b *testing.B) { benchStream(b, benchText(1<<20), 64<<10) })
	b.Run("json", func(b *testing.B) {
		rng := rand.New(rand.NewPCG(8, 8))
		var in []byte
		for len(in) < 1<<20 {
			if c := plainChunk(rng); c[0] == '{' {
				in = append(in, c...)
			}
		}
		benchStream(b, in, 64<<10)
	})
	b.Run("binary", func(b *testing.B) {
		rng := rand.New(rand.NewPCG(10, 10))
		in := make([]byte, 1<<20)
		for i := range in {
			in[i] = byte(rng.Uint32())
		}
		benchStream(b, in, 64<<10)
	})
}

// BenchmarkStreamWithSecrets: 64 KiB writes of traffic with a secret every
// few hundred bytes.
func BenchmarkStreamWithSecrets(b *testing.B) {
	benchStream(b, benchSecrets(1<<20), 64<<10)
}

// BenchmarkStreamSmallWrites: TCP-segment-sized writes.
func BenchmarkStreamSmallWrites(b *testing.B) {
	benchStream(b, benchText(1<<20), 1400)
}

// BenchmarkJSON: a 1 MiB API response through JSON().
func BenchmarkJSON(b *testing.B) {
	r := mustNew(b, DefaultPolicy())
	doc := benchJSONDoc(1 << 20)
	if _, ok := r.JSON(doc); !ok {
		b.Fatal("benchmark document is not valid JSON")
	}
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		r.JSON(doc)
	}
}

// BenchmarkBytes: Bytes on a 1 MiB body without secrets.
func BenchmarkBytes(b *testing.B) {
	r := mustNew(b, DefaultPolicy())
	in := benchText(1 << 20)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		r.Bytes(in)
	}
}
