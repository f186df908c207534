package recording

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"unkeyed", nil}, {"keyed", testKey}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := bigOpts()
			o.Key = tc.key
			s := openTestStore(t, dir, o)
			id, file := writeSealed(t, s, "0123456789abcdef")

			rec, err := Load(dir, id, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Status != StatusSealed || len(rec.Problems) != 0 {
				t.Fatalf("status %s, problems %q", rec.Status, rec.Problems)
			}
			if rec.Keyed != (tc.key != nil) || rec.Size != int64(len(file)) {
				t.Fatalf("keyed %v size %d", rec.Keyed, rec.Size)
			}
			if got, want := mustJSON(t, rec.Meta), mustJSON(t, testMeta(id)); !bytes.Equal(got, want) {
				t.Fatalf("meta:\n%s\nwant\n%s", got, want)
			}
			in := sampleChunks(t)
			if len(rec.Chunks) != len(in)+3 {
				t.Fatalf("%d chunks, want %d", len(rec.Chunks), len(in)+3)
			}
			if c := rec.Chunks[0]; c.Kind != KindMeta || c.Seq != 0 || !c.Time.Equal(t0) {
				t.Fatalf("chunk 0: %+v", c)
			}
			for i, want := range in {
				got := rec.Chunks[i+1]
				if got.Seq != uint64(i+1) || !got.Time.Equal(want.Time) || got.Kind != want.Kind || got.Dir != want.Dir ||
					got.Exchange != want.Exchange || !bytes.Equal(got.Payload, want.Payload) {
					t.Fatalf("chunk %d: got %+v want %+v", i+1, got, want)
				}
			}
			n := len(rec.Chunks)
			if rec.Chunks[n-2].Kind != KindEnd || rec.Chunks[n-1].Kind != KindSeal {
				t.Fatalf("last chunks %d %d", rec.Chunks[n-2].Kind, rec.Chunks[n-1].Kind)
			}
			if got, want := mustJSON(t, rec.End), mustJSON(t, testEnd); !bytes.Equal(got, want) {
				t.Fatalf("end %s want %s", got, want)
			}
			offs := chunkOffsets(t, file)
			if rec.Seal.Chunks != uint64(n) || rec.Seal.Bytes != int64(offs[n-1]) {
				t.Fatalf("seal %+v, want %d chunks, %d bytes", rec.Seal, n, offs[n-1])
			}

			res := verify(t, dir, id, tc.key)
			if res.Status != StatusSealed || res.Chunks != uint64(n) || res.FinalMAC != hex.EncodeToString(file[len(file)-MACSize:]) || len(res.Problems) != 0 {
				t.Fatalf("verify: %+v", res)
			}
			ix, _ := os.ReadFile(filepath.Join(dir, indexName))
			if !strings.Contains(string(ix), res.FinalMAC) {
				t.Fatalf("index.log lacks the final hash:\n%s", ix)
			}

			list, err := ListKey(dir, tc.key)
			if err != nil || len(list) != 1 {
				t.Fatalf("list %v %+v", err, list)
			}
			if l := list[0]; l.ID != id || l.Status != StatusSealed || l.Chunks != uint64(n) || l.Size != int64(len(file)) ||
				l.End == nil || l.Meta.Rule != "payments" || l.Path != recPath(dir, id) {
				t.Fatalf("summary %+v", l)
			}
			if tc.key != nil {
				// Without the key the chain cannot be checked: never "sealed".
				if r := verify(t, dir, id, nil); r.Status != StatusUnverified {
					t.Fatalf("keyed without key: %+v", r)
				}
				if l, _ := List(dir); l[0].Status != StatusUnverified {
					t.Fatalf("List without key: %s", l[0].Status)
				}
			}
		})
	}
}

func TestRandomIDAndDefaults(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, bigOpts())
	w, err := s.Create(Meta{Rule: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if !ValidID(w.ID()) || w.Path() != recPath(dir, w.ID()) || s.Dir() != dir {
		t.Fatalf("id %q path %q", w.ID(), w.Path())
	}
	before := time.Now()
	if err := w.Append(Chunk{Kind: KindData, Dir: DirClientToServer, Payload: []byte("x"), Seq: 99}); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(End{}); err != nil {
		t.Fatal(err)
	}
	rec, err := Load(dir, w.ID(), nil)
	if err != nil || rec.Status != StatusSealed {
		t.Fatalf("%v %+v", err, rec)
	}
	if rec.Meta.ID != w.ID() || rec.Meta.Start.IsZero() {
		t.Fatalf("meta %+v", rec.Meta)
	}
	c := rec.Chunks[1]
	if c.Seq != 1 || c.Time.Before(before.Add(-time.Second)) || rec.End.End.IsZero() {
		t.Fatalf("seq/time not assigned: %+v end %+v", c, rec.End)
	}
}

func TestAppendValidation(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, bigOpts())
	w, err := s.Create(testMeta("00000000000000aa"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []Kind{KindMeta, KindEnd, KindSeal, 0, 9, 255} {
		if err := w.Append(Chunk{Kind: k}); err == nil {
			t.Errorf("kind %d accepted", k)
		}
	}
	if err := w.Append(Chunk{Kind: KindData, Dir: 3}); err == nil {
		t.Error("direction 3 accepted")
	}
	if err := w.Append(Chunk{Kind: KindData, Payload: make([]byte, MaxPayload+1)}); !errors.Is(err, ErrChunkTooLarge) {
		t.Errorf("oversized payload: %v", err)
	}
	size := w.Size()
	if err := w.Finish(End{}); err != nil {
		t.Fatal(err)
	}
	if size <= int64(len(Magic)) {
		t.Fatalf("size %d", size)
	}
	if err := w.Append(Chunk{Kind: KindData}); !errors.Is(err, ErrClosed) {
		t.Errorf("append after finish: %v", err)
	}
	if err := w.Flush(); !errors.Is(err, ErrClosed) {
		t.Errorf("flush after finish: %v", err)
	}
	if err := w.Finish(End{}); !errors.Is(err, ErrClosed) {
		t.Errorf("finish twice: %v", err)
	}
	if err := w.Abandon(); err != nil {
		t.Errorf("abandon after finish: %v", err)
	}
	if _, err := s.Create(testMeta("00000000000000aa")); !errors.Is(err, os.ErrExist) {
		t.Errorf("duplicate id: %v", err)
	}
}

// Flipping any byte of a sealed recording must never leave it "sealed":
// with index.log, without it (the chain alone), and keyed.
func TestFlipEveryByte(t *testing.T) {
	for _, tc := range []struct {
		name    string
		key     []byte
		noIndex bool
	}{{"index", nil, false}, {"chain-only", nil, true}, {"keyed-chain-only", testKey, true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := bigOpts()
			o.Key = tc.key
			s := openTestStore(t, dir, o)
			id, orig := writeSealed(t, s, "00000000000000f1")
			if tc.noIndex {
				os.Remove(filepath.Join(dir, indexName))
			}
			path := recPath(dir, id)
			b := bytes.Clone(orig)
			for off := range b {
				for _, mask := range []byte{0x01, 0x80} {
					b[off] ^= mask
					writeFile(t, path, b)
					rec, err := Load(dir, id, tc.key)
					if err != nil {
						t.Fatalf("offset %d: %v", off, err)
					}
					if rec.Status != StatusTampered && rec.Status != StatusTruncated {
						t.Fatalf("offset %d mask %#x: status %s, problems %q", off, mask, rec.Status, rec.Problems)
					}
					b[off] ^= mask
				}
			}
		})
	}
}

// Cutting a sealed recording at any length is detected: tampered when
// index.log has the seal, truncated or unfinished without it.
func TestTruncateEveryOffset(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, bigOpts())
	id, orig := writeSealed(t, s, "00000000000000c0")
	ixPath := filepath.Join(dir, indexName)
	ix, _ := os.ReadFile(ixPath)
	path := recPath(dir, id)
	boundary := map[int]bool{}
	for _, o := range chunkOffsets(t, orig) {
		boundary[o] = true
	}
	for _, withIndex := range []bool{true, false} {
		if withIndex {
			writeFile(t, ixPath, ix)
		} else {
			os.Remove(ixPath)
		}
		for n := 0; n < len(orig); n++ {
			writeFile(t, path, orig[:n])
			res := verify(t, dir, id, nil)
			switch {
			case withIndex && res.Status != StatusTampered:
				t.Fatalf("index, cut at %d: %s %q", n, res.Status, res.Problems)
			case !withIndex && boundary[n] && n > len(Magic) && res.Status != StatusUnfinished:
				t.Fatalf("no index, cut at chunk boundary %d: %s %q", n, res.Status, res.Problems)
			case !withIndex && !boundary[n] && res.Status != StatusTruncated:
				t.Fatalf("no index, cut at %d: %s %q", n, res.Status, res.Problems)
			}
		}
	}
}

func TestRemovedEndDetectedViaIndex(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, bigOpts())
	id, orig := writeSealed(t, s, "00000000000000e0")
	offs := chunkOffsets(t, orig)
	path := recPath(dir, id)
	for _, drop := range []int{1, 2} { // the seal; End and Seal
		writeFile(t, path, orig[:offs[len(offs)-drop]])
		res := verify(t, dir, id, nil)
		if res.Status != StatusTampered || !hasProblem(res.Problems, "last chunks removed") {
			t.Fatalf("drop %d: %+v", drop, res)
		}
		rec, err := Load(dir, id, nil)
		if err != nil || rec.Status != StatusTampered || len(rec.Chunks) != len(offs)-drop {
			t.Fatalf("load drop %d: %v %+v", drop, err, rec)
		}
	}
	// Without index.log the same cut is indistinguishable from a crash.
	os.Remove(filepath.Join(dir, indexName))
	if res := verify(t, dir, id, nil); res.Status != StatusUnfinished {
		t.Fatalf("no index: %+v", res)
	}
}

// A writer that never finished (crash) leaves a readable, unfinished
// recording with every flushed chunk; while it runs the recording is open.
func TestCrashInterruptedIsUnfinished(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, bigOpts())
	w, err := s.Create(testMeta("00000000000000d0"))
	if err != nil {
		t.Fatal(err)
	}
	in := sampleChunks(t)
	for _, c := range in {
		if err := w.Append(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	// Appended, never flushed: lost in the crash.
	if err := w.Append(Chunk{Kind: KindData, Payload: []byte("lost")}); err != nil {
		t.Fatal(err)
	}
	if res := verify(t, dir, w.ID(), nil); res.Status != StatusOpen {
		t.Fatalf("while writing: %+v", res)
	}
	w.f.Close() // the process dies: no End, no Seal, no index line

	rec, err := Load(dir, w.ID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != StatusUnfinished || rec.End != nil || rec.Seal != nil {
		t.Fatalf("status %s end %v seal %v problems %q", rec.Status, rec.End, rec.Seal, rec.Problems)
	}
	if len(rec.Chunks) != len(in)+1 {
		t.Fatalf("%d chunks, want %d", len(rec.Chunks), len(in)+1)
	}
	for i, c := range in {
		if !bytes.Equal(rec.Chunks[i+1].Payload, c.Payload) {
			t.Fatalf("chunk %d differs", i+1)
		}
	}
	list, err := List(dir)
	if err != nil || len(list) != 1 || list[0].Status != StatusUnfinished || list[0].End != nil {
		t.Fatalf("list: %v %+v", err, list)
	}

	// A store reopened over it may evict it (it is not open).
	s.Close()
	s2 := openTestStore(t, dir, bigOpts())
	if s2.Usage() != duSize(t, dir) {
		t.Fatalf("usage %d, on disk %d", s2.Usage(), duSize(t, dir))
	}
}

func TestAbandonIsUnfinished(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, bigOpts())
	w, err := s.Create(testMeta("00000000000000d1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(Chunk{Kind: KindData, Dir: DirClientToServer, Payload: []byte("abc")}); err != nil {
		t.Fatal(err)
	}
	if err := w.Abandon(); err != nil { // flushes what is buffered
		t.Fatal(err)
	}
	rec, err := Load(dir, w.ID(), nil)
	if err != nil || rec.Status != StatusUnfinished || len(rec.Chunks) != 2 || string(rec.Chunks[1].Payload) != "abc" {
		t.Fatalf("%v %+v", err, rec)
	}
	if !hasProblem(rec.Problems, "no seal") {
		t.Fatalf("problems %q", rec.Problems)
	}
}

func TestStructuralTampering(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, bigOpts())
	id, orig := writeSealed(t, s, "00000000000000b0")
	offs := append(chunkOffsets(t, orig), len(orig))
	path := recPath(dir, id)
	chunk := func(i int) []byte { return orig[offs[i]:offs[i+1]] }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"swap 2 and 3", cat(orig[:offs[2]], chunk(3), chunk(2), orig[offs[4]:]), "hash mismatch"},
		{"drop middle chunk", cat(orig[:offs[3]], orig[offs[4]:]), "sequence number"},
		{"duplicate chunk", cat(orig[:offs[4]], chunk(3), orig[offs[4]:]), "sequence number"},
		{"trailing bytes", cat(orig, []byte("x")), "trailing bytes after the seal"},
		{"trailing chunk", cat(orig, chunk(2)), "trailing bytes after the seal"},
		{"wrong magic", cat([]byte("XTREC\x00\x01\n"), orig[len(Magic):]), "wrong magic"},
		{"future version", cat([]byte("ITREC\x00\x02\n"), orig[len(Magic):]), "unsupported format version 2"},
		{"empty", nil, "inside the magic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writeFile(t, path, tc.file)
			rec, err := Load(dir, id, nil)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Status == StatusSealed || !hasProblem(rec.Problems, tc.want) {
				t.Fatalf("status %s problems %q", rec.Status, rec.Problems)
			}
		})
	}

	// The same file under another id: the chain is bound to the id.
	writeFile(t, path, orig)
	other := "00000000000000b1"
	writeFile(t, recPath(dir, other), orig)
	res := verify(t, dir, other, nil)
	if res.Status != StatusTampered || !hasProblem(res.Problems, "does not match the file's id") || !hasProblem(res.Problems, "chunk 0: hash mismatch") {
		t.Fatalf("renamed: %+v", res)
	}
}

// An attacker rewrites a recording with a consistent, recomputed chain.
func TestRewriteWithRecomputedChain(t *testing.T) {
	edit := func(t *testing.T, dir, id string, key []byte) []Chunk {
		rec, err := Load(dir, id, key)
		if err != nil || rec.Status != StatusSealed {
			t.Fatalf("%v %+v", err, rec)
		}
		chunks := rec.Chunks
		chunks[5].Payload = []byte("HELLO, edited")
		return chunks
	}

	t.Run("unkeyed", func(t *testing.T) {
		dir := t.TempDir()
		s := openTestStore(t, dir, bigOpts())
		id, _ := writeSealed(t, s, "00000000000000a1")
		writeFile(t, recPath(dir, id), reencode(t, id, edit(t, dir, id, nil), nil, 0))
		res := verify(t, dir, id, nil)
		if res.Status != StatusTampered || !hasProblem(res.Problems, "file rewritten") {
			t.Fatalf("%+v", res)
		}
		// The honest limit of an unkeyed chain: without index.log the
		// rewrite is consistent.
		os.Remove(filepath.Join(dir, indexName))
		if res := verify(t, dir, id, nil); res.Status != StatusSealed {
			t.Fatalf("without index: %+v", res)
		}
	})

	t.Run("keyed", func(t *testing.T) {
		dir := t.TempDir()
		o := bigOpts()
		o.Key = testKey
		s := openTestStore(t, dir, o)
		id, _ := writeSealed(t, s, "00000000000000a2")
		chunks := edit(t, dir, id, testKey)
		os.Remove(filepath.Join(dir, indexName)) // detected from the file alone
		for _, rw := range []struct {
			name  string
			key   []byte
			flags uint16
			want  string
		}{
			{"downgraded to unkeyed", nil, 0, "not keyed"},
			{"unkeyed chain, keyed flag", nil, FlagKeyed, "hash mismatch"},
			{"guessed key", []byte("guessed-key-0123456"), FlagKeyed, "hash mismatch"},
		} {
			writeFile(t, recPath(dir, id), reencode(t, id, chunks, rw.key, rw.flags))
			res := verify(t, dir, id, testKey)
			if res.Status != StatusTampered || !hasProblem(res.Problems, rw.want) {
				t.Fatalf("%s: %+v", rw.name, res)
			}
		}
	})
}

func TestKeys(t *testing.T) {
	dir := t.TempDir()
	o := bigOpts()
	o.Key = testKey
	s := openTestStore(t, dir, o)
	id, _ := writeSealed(t, s, "00000000000000a3")
	s.Close()

	res := verify(t, dir, id, []byte("the-wrong-key-0123456"))
	if res.Status != StatusTampered || !hasProblem(res.Problems, "wrong key") {
		t.Fatalf("wrong key: %+v", res)
	}
	if len(res.Problems) > maxProblems+1 {
		t.Fatalf("%d problems: not bounded", len(res.Problems))
	}
	if res := verify(t, dir, id, nil); res.Status != StatusUnverified || !hasProblem(res.Problems, "no key given") {
		t.Fatalf("no key: %+v", res)
	}

	// An unkeyed recording verified with a key is not trusted.
	dir2 := t.TempDir()
	s2 := openTestStore(t, dir2, bigOpts())
	id2, _ := writeSealed(t, s2, "00000000000000a4")
	if res := verify(t, dir2, id2, testKey); res.Status != StatusTampered || !hasProblem(res.Problems, "not keyed") {
		t.Fatalf("unkeyed with key: %+v", res)
	}

	if _, err := OpenStore(t.TempDir(), StoreOptions{MaxSessionBytes: 1 << 20, MaxTotalBytes: 1 << 20, Key: []byte("short")}); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestIndexTampering(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, bigOpts())
	ids := []string{"0000000000000001", "0000000000000002", "0000000000000003"}
	for _, id := range ids {
		writeSealed(t, s, id)
	}
	s.Close()
	ixPath := filepath.Join(dir, indexName)
	ix, _ := os.ReadFile(ixPath)
	lines := strings.SplitAfter(string(ix), "\n")
	lines = lines[:len(lines)-1]
	if len(lines) != 3 {
		t.Fatalf("index:\n%s", ix)
	}
	for _, id := range ids {
		if r := verify(t, dir, id, nil); r.Status != StatusSealed {
			t.Fatalf("%s: %+v", id, r)
		}
	}

	// Removing a middle line breaks the index chain.
	writeFile(t, ixPath, []byte(lines[0]+lines[2]))
	if r := verify(t, dir, ids[0], nil); r.Status != StatusTampered || !hasProblem(r.Problems, "index.log line 2: hash mismatch") {
		t.Fatalf("line removed: %+v", r)
	}
	// Editing a line's chunk count: its hash no longer matches.
	edited := strings.Replace(lines[1], " 12 ", " 11 ", 1)
	if edited == lines[1] {
		t.Fatalf("no chunk count in %q", lines[1])
	}
	writeFile(t, ixPath, []byte(lines[0]+edited+lines[2]))
	if r := verify(t, dir, ids[1], nil); r.Status != StatusTampered {
		t.Fatalf("line edited: %+v", r)
	}
	// An interrupted last write is not tampering.
	writeFile(t, ixPath, []byte(lines[0]+lines[1]+lines[2]+"seal 00000"))
	if r := verify(t, dir, ids[2], nil); r.Status != StatusSealed || !hasProblem(r.Problems, "incomplete last line") {
		t.Fatalf("partial line: %+v", r)
	}
	// ...and a store reopened over it starts the next line on a new line.
	s2 := openTestStore(t, dir, bigOpts())
	writeSealed(t, s2, "0000000000000004")
	s2.Close()
	for _, id := range append(ids, "0000000000000004") {
		if r := verify(t, dir, id, nil); r.Status != StatusSealed || !hasProblem(r.Problems, "line 4: malformed") {
			t.Fatalf("%s after partial line: %+v", id, r)
		}
	}
}

func TestInvalidIDs(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "passwd"), []byte("root:x:0:0"))
	s := openTestStore(t, dir, bigOpts())
	for _, id := range []string{"", "../../etc/passwd", "../passwd", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "0123456789abcde/", "/tmp/x0123456789", "0123456789abcdeg"} {
		if _, err := Load(dir, id, nil); !errors.Is(err, ErrInvalidID) {
			t.Errorf("Load(%q): %v", id, err)
		}
		if _, err := Verify(dir, id, nil); !errors.Is(err, ErrInvalidID) {
			t.Errorf("Verify(%q): %v", id, err)
		}
		if id != "" {
			if _, err := s.Create(Meta{ID: id}); !errors.Is(err, ErrInvalidID) {
				t.Errorf("Create(%q): %v", id, err)
			}
		}
	}
	if _, err := Load(dir, "0123456789abcdef", nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	// A symlink named like a recording is not followed.
	if err := os.Symlink(filepath.Join(dir, "passwd"), recPath(dir, "1111111111111111")); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, "1111111111111111", nil); err == nil {
		t.Error("symlink followed")
	}
}

func TestPermissions(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "a", "recordings")
	s := openTestStore(t, dir, bigOpts())
	id, _ := writeSealed(t, s, "0000000000000010")
	w, err := s.Create(testMeta("0000000000000011"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abandon()
	mode := func(p string) os.FileMode {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	for p, want := range map[string]os.FileMode{
		dir: 0o700, recPath(dir, id): 0o600, w.Path(): 0o600, filepath.Join(dir, indexName): 0o600,
	} {
		if got := mode(p); got != want {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
	}
	w.Abandon()
	s.Close()

	// A loosened directory, recording and index are tightened on open.
	os.Chmod(dir, 0o755)
	os.Chmod(recPath(dir, id), 0o644)
	os.Chmod(filepath.Join(dir, indexName), 0o666)
	s2 := openTestStore(t, dir, bigOpts())
	s2.Close()
	for _, p := range []string{dir, recPath(dir, id), filepath.Join(dir, indexName)} {
		if got := mode(p); got&0o077 != 0 {
			t.Errorf("%s: still %v", p, got)
		}
	}

	// Not a directory.
	f := filepath.Join(root, "file")
	writeFile(t, f, nil)
	if _, err := OpenStore(f, bigOpts()); err == nil {
		t.Error("OpenStore on a file succeeded")
	}
}

func TestStoreLockedAgainstSecondOpen(t *testing.T) {
	dir := t.TempDir()
	openTestStore(t, dir, bigOpts())
	if _, err := OpenStore(dir, bigOpts()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second store: %v", err)
	}
}

func TestSessionCap(t *testing.T) {
	dir := t.TempDir()
	o := StoreOptions{MaxSessionBytes: MinSessionBytes + 16<<10, MaxTotalBytes: 1 << 30}
	s := openTestStore(t, dir, o)
	w, err := s.Create(testMeta("0000000000000020"))
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("d"), 4000)
	var capErr error
	appended := 0
	for i := 0; i < 100; i++ {
		if capErr = w.Append(Chunk{Kind: KindData, Dir: DirServerToClient, Payload: data}); capErr != nil {
			break
		}
		appended++
		if i%4 == 0 {
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !errors.Is(capErr, ErrSessionCap) {
		t.Fatalf("no session cap error: %v", capErr)
	}
	if w.Size()+chunkSize(len(data)) <= o.MaxSessionBytes-SessionReserve {
		t.Fatalf("refused too early at %d", w.Size())
	}
	size := w.Size()
	// Stream chunks stay refused, even small ones; nothing is written.
	if err := w.Append(Chunk{Kind: KindHTTPHead, Payload: []byte("{}")}); !errors.Is(err, ErrSessionCap) {
		t.Fatalf("small chunk after cap: %v", err)
	}
	if w.Size() != size {
		t.Fatalf("size changed %d -> %d", size, w.Size())
	}
	// The note saying so fits, End and Seal too, even with a long reason.
	if err := w.Append(Chunk{Kind: KindNote, Payload: mustJSON(t, Note{Code: NoteSessionCap, Message: "cap reached"})}); err != nil {
		t.Fatalf("note after cap: %v", err)
	}
	if err := w.Finish(End{Reason: strings.Repeat("é", 5000)}); err != nil {
		t.Fatal(err)
	}
	rec, err := Load(dir, w.ID(), nil)
	if err != nil || rec.Status != StatusSealed {
		t.Fatalf("%v %+v", err, rec)
	}
	if !rec.End.Truncated || len(rec.End.Reason) > maxReason+len("…") {
		t.Fatalf("end %+v", rec.End)
	}
	if rec.Size > o.MaxSessionBytes {
		t.Fatalf("size %d over the cap %d", rec.Size, o.MaxSessionBytes)
	}
	if len(rec.Chunks) != 1+appended+1+2 {
		t.Fatalf("%d chunks", len(rec.Chunks))
	}
	if _, err := OpenStore(t.TempDir(), StoreOptions{MaxSessionBytes: 1000, MaxTotalBytes: 1 << 20}); err == nil {
		t.Fatal("tiny session cap accepted")
	}
}

// finishSized writes a sealed recording of about size bytes.
func finishSized(t *testing.T, s *Store, id string, start time.Time, size int) {
	t.Helper()
	m := testMeta(id)
	m.Start = start
	w, err := s.Create(m)
	if err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	if err := w.Append(Chunk{Kind: KindData, Payload: make([]byte, size)}); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(End{}); err != nil {
		t.Fatal(err)
	}
}

func TestTotalCapEvictsOldestNeverOpen(t *testing.T) {
	dir := t.TempDir()
	o := StoreOptions{MaxSessionBytes: 1 << 20, MaxTotalBytes: 300 << 10}
	s := openTestStore(t, dir, o)
	// Created out of start order: eviction follows start time.
	finishSized(t, s, "00000000000000b2", t0.Add(2*time.Minute), 60<<10)
	finishSized(t, s, "00000000000000a1", t0.Add(1*time.Minute), 60<<10)
	open, err := s.Create(testMeta("0000000000000000")) // oldest start of all, open
	if err != nil {
		t.Fatal(err)
	}
	if err := open.Append(Chunk{Kind: KindData, Payload: make([]byte, 60<<10)}); err != nil {
		t.Fatal(err)
	}
	if err := open.Flush(); err != nil {
		t.Fatal(err)
	}
	finishSized(t, s, "00000000000000c3", t0.Add(3*time.Minute), 60<<10)
	if s.Evicted() != 0 {
		t.Fatalf("evicted %d early", s.Evicted())
	}
	if s.Usage() != duSize(t, dir) {
		t.Fatalf("usage %d, du %d", s.Usage(), duSize(t, dir))
	}
	finishSized(t, s, "00000000000000d4", t0.Add(4*time.Minute), 60<<10)
	exists := func(id string) bool { _, err := os.Stat(recPath(dir, id)); return err == nil }
	if s.Evicted() != 1 || exists("00000000000000a1") || !exists("00000000000000b2") || !exists("0000000000000000") {
		t.Fatalf("evicted %d; a1 %v b2 %v open %v", s.Evicted(), exists("00000000000000a1"), exists("00000000000000b2"), exists("0000000000000000"))
	}
	// Flushing the open writer evicts too.
	if err := open.Append(Chunk{Kind: KindData, Payload: make([]byte, 80<<10)}); err != nil {
		t.Fatal(err)
	}
	if err := open.Flush(); err != nil {
		t.Fatal(err)
	}
	if s.Evicted() != 2 || exists("00000000000000b2") || !exists("0000000000000000") {
		t.Fatalf("evicted %d", s.Evicted())
	}
	if s.Usage() != duSize(t, dir) || s.Usage() > o.MaxTotalBytes {
		t.Fatalf("usage %d, du %d, cap %d", s.Usage(), duSize(t, dir), o.MaxTotalBytes)
	}
	_, err = Verify(dir, "00000000000000a1", nil)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "evicted") {
		t.Fatalf("verify evicted: %v", err)
	}
	if err := open.Finish(End{}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"0000000000000000", "00000000000000c3", "00000000000000d4"} {
		if r := verify(t, dir, id, nil); r.Status != StatusSealed {
			t.Fatalf("%s: %+v", id, r)
		}
	}
	if s.Usage() != duSize(t, dir) {
		t.Fatalf("usage %d, du %d", s.Usage(), duSize(t, dir))
	}

	// A reopened store picks up the same usage and order.
	s.Close()
	s2 := openTestStore(t, dir, o)
	if s2.Usage() != duSize(t, dir) {
		t.Fatalf("reopened usage %d, du %d", s2.Usage(), duSize(t, dir))
	}
	finishSized(t, s2, "00000000000000e5", t0.Add(5*time.Minute), 100<<10)
	if exists("0000000000000000") || !exists("00000000000000d4") {
		t.Fatal("reopened store did not evict the oldest first")
	}
}

func TestStoreFullWhenOnlyOpenWriters(t *testing.T) {
	dir := t.TempDir()
	o := StoreOptions{MaxSessionBytes: 1 << 20, MaxTotalBytes: 200 << 10}
	s := openTestStore(t, dir, o)
	a, err := s.Create(testMeta("00000000000000a0"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Create(testMeta("00000000000000b0"))
	if err != nil {
		t.Fatal(err)
	}
	// Fill the store with a's bytes, leaving 1 KiB: less than a Create needs.
	fill := o.MaxTotalBytes - s.Usage() - 2*EndReserve - chunkSize(0) - 1024
	if err := a.Append(Chunk{Kind: KindData, Payload: make([]byte, fill)}); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(Chunk{Kind: KindData, Payload: make([]byte, 4<<10)}); err != nil {
		t.Fatal(err)
	}
	size := b.Size()
	err = b.Flush()
	if !errors.Is(err, ErrStoreFull) || !strings.Contains(err.Error(), "00000000000000b0") {
		t.Fatalf("flush: %v", err)
	}
	if b.Size() != size {
		t.Fatal("a refused flush dropped the buffered chunk")
	}
	if _, err := s.Create(testMeta("00000000000000c0")); !errors.Is(err, ErrStoreFull) {
		t.Fatalf("create: %v", err)
	}
	if s.Evicted() != 0 {
		t.Fatalf("evicted an open writer's recording")
	}
	// Finish still seals: the refused chunk is dropped and a note says so.
	if err := b.Finish(End{}); err != nil {
		t.Fatal(err)
	}
	rec, err := Load(dir, "00000000000000b0", nil)
	if err != nil || rec.Status != StatusSealed || !rec.End.Truncated {
		t.Fatalf("%v %+v", err, rec)
	}
	var note Note
	if k := rec.Chunks[1]; k.Kind != KindNote || json.Unmarshal(k.Payload, &note) != nil || note.Code != NoteStoreFull {
		t.Fatalf("chunk 1: %+v", rec.Chunks[1])
	}
	if s.Usage()+EndReserve > o.MaxTotalBytes || s.Usage() != duSize(t, dir) {
		t.Fatalf("usage %d du %d", s.Usage(), duSize(t, dir))
	}
	// Now b is closed and evictable: there is room again.
	c, err := s.Create(testMeta("00000000000000c0"))
	if err != nil {
		t.Fatal(err)
	}
	c.Abandon()
	a.Abandon()
	if s.Usage() != duSize(t, dir) {
		t.Fatalf("usage %d du %d", s.Usage(), duSize(t, dir))
	}
}

// The MAC seed for a fixed id, as printed in docs/recording-format.md, so
// an independent reader can check its implementation.
func TestFormatVector(t *testing.T) {
	id := "0123456789abcdef"
	seed := newChain(nil).seed(id)
	if got := hex.EncodeToString(seed[:]); got != docSeedUnkeyed {
		t.Errorf("unkeyed seed %s", got)
	}
	kseed := newChain([]byte("0123456789abcdef0123456789abcdef")).seed(id)
	if got := hex.EncodeToString(kseed[:]); got != docSeedKeyed {
		t.Errorf("keyed seed %s", got)
	}
	// One Meta chunk, {"id":"0123456789abcdef"}, time 1 s after the epoch.
	f := reencode(t, id, []Chunk{{Kind: KindMeta, Time: time.Unix(1, 0), Payload: []byte(`{"id":"0123456789abcdef"}`)}}, nil, 0)
	if got := hex.EncodeToString(f); got != docFileHex {
		t.Errorf("file %s", got)
	}
	dir := t.TempDir()
	writeFile(t, recPath(dir, id), f)
	if r := verify(t, dir, id, nil); r.Status != StatusUnfinished || r.Chunks != 1 {
		t.Errorf("vector: %+v", r)
	}
}

const (
	docSeedUnkeyed = "bbd2049b076e8738a80ddab5072b410f41cf9b4c28d9b40b5992d1c930b025e7"
	docSeedKeyed   = "df1bb3386e707d837f7085ca7dd9803a4cfe4be2104e08e3e38eb06d33c618db"
	docFileHex     = "495452454300010a00000019010000000000000000000000000000003b9aca00000000007b226964223a2230313233343536373839616263646566227d50c55ce050adae17d65abca349bd88683ddbd7b4696a32374f2479ee0175741b"
)
