package recorder

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/intransit/intransit/pkg/recording"
	"github.com/intransit/intransit/pkg/redact"
	"github.com/intransit/intransit/pkg/transcript"
)

// testStore opens a store in dir ("" is a fresh t.TempDir()) with o, or
// generous caps when o is zero.
func testStore(t *testing.T, dir string, o recording.StoreOptions) (*recording.Store, string) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if o.MaxSessionBytes == 0 {
		o.MaxSessionBytes = 256 << 20
	}
	if o.MaxTotalBytes == 0 {
		o.MaxTotalBytes = 1 << 30
	}
	s, err := recording.OpenStore(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func defaultRedactor(t testing.TB) *redact.Redactor {
	t.Helper()
	r, err := redact.New(redact.DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// testMeta has endpoints, so that the pcapng export works.
func testMeta() recording.Meta {
	return recording.Meta{
		Rule: "test", Level: recording.LevelFull,
		Source: "10.1.2.3:40000", Destination: "93.184.216.34:443", Upstream: "93.184.216.34:443",
	}
}

func start(t *testing.T, s *recording.Store, o Options) *Recorder {
	t.Helper()
	if o.Redactor == nil {
		o.Redactor = defaultRedactor(t)
	}
	r, err := Start(s, testMeta(), o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// failures counts Failed calls.
type failures struct {
	mu   sync.Mutex
	errs []error
}

func (f *failures) record(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, err)
}

func (f *failures) get() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]error(nil), f.errs...)
}

// msg is what one relay direction writes in one go (one message, or
// several pipelined ones).
type msg struct {
	up   bool // client -> upstream
	data string
}

// splitter cuts a message into the pieces fed to Tap.
type splitter struct {
	name  string
	split func(rng *rand.Rand, b []byte) [][]byte
}

var splitters = []splitter{
	{"whole", func(_ *rand.Rand, b []byte) [][]byte { return [][]byte{b} }},
	{"random", func(rng *rand.Rand, b []byte) [][]byte {
		var out [][]byte
		for len(b) > 0 {
			n := min(len(b), 1+rng.IntN(40))
			out = append(out, b[:n])
			b = b[n:]
		}
		return out
	}},
	{"bytewise", func(_ *rand.Rand, b []byte) [][]byte {
		out := make([][]byte, len(b))
		for i := range b {
			out[i] = b[i : i+1]
		}
		return out
	}},
}

// feed taps the messages in order, as the relay does: each message's
// pieces in its direction, a response only after its request. The pieces
// are copied into a buffer that is overwritten afterwards, as the relay
// reuses its read buffer.
func feed(t *testing.T, r *Recorder, msgs []msg, sp splitter, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	buf := make([]byte, 0, 64<<10)
	for _, m := range msgs {
		for _, p := range sp.split(rng, []byte(m.data)) {
			buf = append(buf[:0], p...)
			if err := r.Tap(m.up, buf); err != nil {
				t.Fatalf("Tap: %v", err)
			}
			for i := range buf {
				buf[i] = 'Z' // the relay reuses the buffer
			}
		}
	}
}

// loaded is a finished recording read back.
type loaded struct {
	rec  *recording.Recording
	tr   *transcript.Transcript
	file []byte // the .rec file and index.log, as on disk
}

func load(t *testing.T, dir, id string) *loaded {
	t.Helper()
	rec, err := recording.Load(dir, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := transcript.Build(transcript.Input{Meta: rec.Meta, Chunks: rec.Chunks, End: rec.End, Status: string(rec.Status), Problems: rec.Problems})
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(filepath.Join(dir, id+".rec"))
	if err != nil {
		t.Fatal(err)
	}
	index, err := os.ReadFile(filepath.Join(dir, "index.log"))
	if err != nil {
		t.Fatal(err)
	}
	return &loaded{rec: rec, tr: tr, file: append(file, index...)}
}

// exports renders the transcript every way it can be exported.
func (l *loaded) exports(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	j, err := transcript.JSON(l.tr)
	if err != nil {
		t.Fatal(err)
	}
	out["json"] = j
	h, err := transcript.HAR(l.tr)
	switch {
	case err == nil:
		out["har"] = h
	case !errors.Is(err, transcript.ErrNoHTTP):
		t.Fatal(err)
	}
	var rp bytes.Buffer
	if err := transcript.Replay(l.tr, &rp, transcript.ReplayOptions{Sleep: func(time.Duration) {}}); err != nil {
		t.Fatal(err)
	}
	out["replay"] = rp.Bytes()
	var pc bytes.Buffer
	if err := transcript.PCAPNG(l.tr, &pc); err != nil {
		t.Fatal(err)
	}
	out["pcapng"] = pc.Bytes()
	return out
}

// checkSecrets fails if any secret appears in the recording file, index.log
// or any export, as is or base64-encoded (exports encode binary bodies).
func (l *loaded) checkSecrets(t *testing.T, secrets []string) {
	t.Helper()
	where := l.exports(t)
	where["file"] = l.file
	// A secret split across chunks would escape a search of the file:
	// search each direction's payloads joined too.
	for dir := recording.DirNone; dir <= recording.DirServerToClient; dir++ {
		where[fmt.Sprintf("payloads of dir %d", dir)] = l.payloads(dir)
	}
	for name, b := range where {
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				i := bytes.Index(b, []byte(s))
				t.Errorf("secret %q found in %s: ...%q...", s, name, b[max(0, i-80):min(len(b), i+len(s)+40)])
			}
			for _, enc := range base64Forms(s) {
				if bytes.Contains(b, []byte(enc)) {
					t.Errorf("secret %q found base64-encoded in %s", s, name)
				}
			}
		}
	}
}

// base64Forms returns the base64 runs that any encoding of a text holding
// s contains, whatever its alignment (the middle, stable part).
func base64Forms(s string) []string {
	var out []string
	for off := 0; off < 3; off++ {
		enc := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("\x00", off) + s))
		// Only the characters whose 6 bits all come from s.
		lo, hi := (8*off+5)/6, 8*(off+len(s))/6
		if hi-lo >= 8 {
			out = append(out, enc[lo:hi])
		}
	}
	return out
}

// chunksOf returns the recording's chunks of a kind.
func (l *loaded) chunksOf(kind recording.Kind) []recording.Chunk {
	var out []recording.Chunk
	for _, c := range l.rec.Chunks {
		if c.Kind == kind {
			out = append(out, c)
		}
	}
	return out
}

func hasNote(notes []recording.Note, code string) bool {
	for _, n := range notes {
		if n.Code == code {
			return true
		}
	}
	return false
}

// payloads concatenates the payloads of every chunk of one direction.
func (l *loaded) payloads(dir recording.Dir) []byte {
	var out []byte
	for _, c := range l.rec.Chunks {
		if c.Dir == dir {
			out = append(out, c.Payload...)
		}
	}
	return out
}

// rawData concatenates the Data chunks of one direction.
func (l *loaded) rawData(dir recording.Dir) []byte {
	var out []byte
	for _, c := range l.rec.Chunks {
		if c.Kind == recording.KindData && c.Dir == dir {
			out = append(out, c.Payload...)
		}
	}
	return out
}

func header(hs []recording.Header, name string) string {
	for _, h := range hs {
		if strings.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return ""
}

func finish(t *testing.T, r *Recorder) {
	t.Helper()
	if err := r.Finish(recording.End{BytesSent: 1, BytesReceived: 2}); err != nil {
		t.Fatalf("Finish: %v", err)
	}
}

func mustSealed(t *testing.T, l *loaded) {
	t.Helper()
	if l.rec.Status != recording.StatusSealed {
		t.Fatalf("status %s, problems %q", l.rec.Status, l.rec.Problems)
	}
	if len(l.tr.Problems) > 0 {
		t.Errorf("transcript problems: %q", l.tr.Problems)
	}
}
