package recording

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/intransit/intransit/pkg/audit"
)

var testKey = []byte("0123456789abcdef-test-key")

func bigOpts() StoreOptions {
	return StoreOptions{MaxSessionBytes: 64 << 20, MaxTotalBytes: 1 << 30}
}

func openTestStore(t testing.TB, dir string, o StoreOptions) *Store {
	t.Helper()
	s, err := OpenStore(dir, o)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

func testMeta(id string) Meta {
	return Meta{
		ID:          id,
		Start:       t0,
		Rule:        "payments",
		Level:       LevelFull,
		Node:        "node-1",
		Source:      "10.0.0.5:40000",
		Destination: "10.0.0.9:80",
		Upstream:    "10.0.0.9:443",
		Process:     &audit.Process{PID: 42, Comm: "curl", UID: 1000, GID: 1000, Cgroup: 7, Exe: "/usr/bin/curl"},
		TLS:         &audit.TLSInfo{Version: "TLS 1.3", Cipher: "TLS_AES_128_GCM_SHA256", ServerName: "api.example"},
		Identity:    &audit.Identity{Subject: "svc"},
		Verdict:     audit.VerdictUpgraded,
		Redaction:   &RedactionInfo{Headers: []string{"Authorization"}, JSONFields: []string{"password"}, Patterns: []string{}},
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sampleChunks is one of every appendable kind.
func sampleChunks(t testing.TB) []Chunk {
	return []Chunk{
		{Time: t0.Add(1), Kind: KindData, Dir: DirClientToServer, Payload: []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")},
		{Time: t0.Add(2), Kind: KindHTTPHead, Dir: DirClientToServer, Exchange: 1, Payload: mustJSON(t, HTTPHead{Request: true, Method: "GET", Target: "/", Proto: "HTTP/1.1", Headers: []Header{{Name: "Host", Value: "a"}}})},
		{Time: t0.Add(3), Kind: KindHTTPEnd, Dir: DirClientToServer, Exchange: 1, Payload: mustJSON(t, HTTPEnd{})},
		{Time: t0.Add(4), Kind: KindHTTPHead, Dir: DirServerToClient, Exchange: 1, Payload: mustJSON(t, HTTPHead{Proto: "HTTP/1.1", Status: 200, Reason: "OK", Headers: []Header{{Name: "Content-Length", Value: "5"}}})},
		{Time: t0.Add(5), Kind: KindHTTPBody, Dir: DirServerToClient, Exchange: 1, Payload: []byte("hello")},
		{Time: t0.Add(6), Kind: KindHTTPEnd, Dir: DirServerToClient, Exchange: 1, Payload: mustJSON(t, HTTPEnd{BodySize: 5, Trailers: []Header{{Name: "X", Value: "y"}}})},
		{Time: t0.Add(7), Kind: KindNote, Payload: mustJSON(t, Note{Code: NoteUpgrade, Message: "switched"})},
		{Time: t0.Add(8), Kind: KindData, Dir: DirServerToClient, Payload: []byte{0, 1, 2, 0xff}},
		{Time: t0.Add(9), Kind: KindData, Dir: DirClientToServer, Payload: nil},
	}
}

var testEnd = End{End: t0.Add(time.Second), BytesSent: 27, BytesReceived: 60, Verdict: audit.VerdictUpgraded, Reason: "closed"}

// writeSealed writes a finished recording with sampleChunks and returns its
// id and file bytes.
func writeSealed(t testing.TB, s *Store, id string) (string, []byte) {
	t.Helper()
	w, err := s.Create(testMeta(id))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	for i, c := range sampleChunks(t) {
		if err := w.Append(c); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		if i%3 == 2 {
			if err := w.Flush(); err != nil {
				t.Fatalf("Flush: %v", err)
			}
		}
	}
	if err := w.Finish(testEnd); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	b, err := os.ReadFile(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	return w.ID(), b
}

// chunkOffsets returns the offset of every whole chunk in a well-formed file.
func chunkOffsets(t testing.TB, b []byte) []int {
	t.Helper()
	var offs []int
	off := len(Magic)
	for off < len(b) {
		if len(b)-off < HeaderSize {
			t.Fatalf("partial header at %d", off)
		}
		offs = append(offs, off)
		off += int(chunkSize(int(binary.BigEndian.Uint32(b[off:]))))
	}
	return offs
}

// reencode builds a file from chunks with a freshly computed chain (key nil:
// SHA-256), fixing the Seal's counts: what an attacker who can write the
// file, but does not have the key, can produce.
func reencode(t testing.TB, id string, chunks []Chunk, key []byte, flags uint16) []byte {
	t.Helper()
	c := newChain(key)
	prev := c.seed(id)
	b := []byte(Magic)
	for i, ch := range chunks {
		p := ch.Payload
		if ch.Kind == KindSeal {
			p = mustJSON(t, Seal{Chunks: uint64(i + 1), Bytes: int64(len(b))})
		}
		var h [HeaderSize]byte
		putHeader(h[:], header{length: uint32(len(p)), kind: ch.Kind, dir: ch.Dir, flags: flags, seq: uint64(i), time: ch.Time.UnixNano(), exchange: ch.Exchange})
		prev = c.next(&prev, h[:], p)
		b = append(b, h[:]...)
		b = append(b, p...)
		b = append(b, prev[:]...)
	}
	return b
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func verify(t testing.TB, dir, id string, key []byte) Result {
	t.Helper()
	r, err := Verify(dir, id, key)
	if err != nil {
		t.Fatalf("Verify %s: %v", id, err)
	}
	return r
}

func hasProblem(ps []string, sub string) bool {
	for _, p := range ps {
		if strings.Contains(p, sub) {
			return true
		}
	}
	return false
}

func recPath(dir, id string) string { return filepath.Join(dir, id+fileExt) }

func duSize(t testing.TB, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}
