package recorder

import (
	"math/rand/v2"
	"testing"

	"github.com/intransit/intransit/pkg/recording"
	"github.com/intransit/intransit/pkg/transcript"
)

// FuzzRecorder feeds arbitrary client and server streams in arbitrary
// pieces: the recorder must not panic, the recording must be sealed and
// well-formed, the transcript must build and export, and no chunk may
// exceed the payload limit.
func FuzzRecorder(f *testing.F) {
	msgs, _, _ := keepAliveSession()
	var up, down []byte
	for _, m := range msgs {
		if m.up {
			up = append(up, m.data...)
		} else {
			down = append(down, m.data...)
		}
	}
	f.Add(up, down, uint64(1))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), uint64(2))
	f.Add([]byte("CONNECT h:443 HTTP/1.1\r\n\r\n\x16\x03\x01"), []byte("HTTP/1.1 200 OK\r\n\r\n\x16\x03\x03"), uint64(3))
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"password\":\"x\"}"), []byte("HTTP/1.1 400 Bad\r\n\r\n"), uint64(4))
	f.Add([]byte("*1\r\n$4\r\nPING\r\n"), []byte("+PONG\r\n"), uint64(5))
	red := defaultRedactor(f)
	f.Fuzz(func(t *testing.T, up, down []byte, seed uint64) {
		s, dir := testStore(t, "", recording.StoreOptions{MaxSessionBytes: 1 << 20, MaxTotalBytes: 8 << 20})
		r, err := Start(s, testMeta(), Options{Full: true, Redactor: red, MaskHeaders: []string{"X-Cred"}})
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(seed, seed>>32))
		for len(up) > 0 || len(down) > 0 {
			// Alternate directions, a random piece each.
			for _, d := range []struct {
				up bool
				p  *[]byte
			}{{true, &up}, {false, &down}} {
				if len(*d.p) == 0 {
					continue
				}
				n := 1 + rng.IntN(len(*d.p))
				if err := r.Tap(d.up, (*d.p)[:n]); err != nil {
					t.Fatal(err)
				}
				*d.p = (*d.p)[n:]
			}
		}
		if err := r.Finish(recording.End{}); err != nil {
			t.Fatal(err)
		}
		rec, err := recording.Load(dir, r.ID(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Status != recording.StatusSealed {
			t.Fatalf("status %s: %q", rec.Status, rec.Problems)
		}
		for _, c := range rec.Chunks {
			if len(c.Payload) > recording.MaxPayload {
				t.Fatalf("chunk of %d bytes", len(c.Payload))
			}
		}
		tr, err := transcript.Build(transcript.Input{Meta: rec.Meta, Chunks: rec.Chunks, End: rec.End, Status: string(rec.Status)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := transcript.JSON(tr); err != nil {
			t.Fatal(err)
		}
		for _, ex := range tr.Exchanges {
			for _, m := range []*transcript.Message{ex.Request, ex.Response} {
				if m != nil && m.Complete && !m.Head.Chunked && m.BodySize < int64(len(m.Body))-1024 {
					t.Errorf("exchange %d: %d body bytes recorded, %d on the wire", ex.N, len(m.Body), m.BodySize)
				}
			}
		}
	})
}
