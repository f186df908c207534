package recording

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the reader, as a keyed and an unkeyed
// recording, with the original's index.log entry: it must never panic, and
// anything but the original must never read as sealed.
func FuzzLoad(f *testing.F) {
	dir := f.TempDir()
	s, err := OpenStore(dir, bigOpts())
	if err != nil {
		f.Fatal(err)
	}
	id, orig := writeSealed(f, s, "0000000000000f00")
	s.Close()
	ix, err := readIndex(dir, nil, id)
	if err != nil || ix.seals[id].chunks == 0 {
		f.Fatalf("index: %v %+v", err, ix)
	}
	kdir := f.TempDir()
	ks, err := OpenStore(kdir, StoreOptions{MaxSessionBytes: 1 << 20, MaxTotalBytes: 1 << 30, Key: testKey})
	if err != nil {
		f.Fatal(err)
	}
	_, korig := writeSealed(f, ks, id)
	ks.Close()
	kix, err := readIndex(kdir, testKey, id)
	if err != nil {
		f.Fatal(err)
	}

	f.Add(orig)
	f.Add(korig)
	f.Add([]byte{})
	f.Add([]byte(Magic))
	f.Add(orig[:len(orig)-1])
	f.Add(append(bytes.Clone(orig), 0))
	big := bytes.Clone(orig)
	big[len(Magic)] = 0xff // payload length far beyond the file
	f.Add(big)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, tc := range []struct {
			key  []byte
			ix   *indexInfo
			orig []byte
		}{{nil, ix, orig}, {testKey, kix, korig}, {nil, nil, orig}} {
			d, err := decode(bytes.NewReader(data), int64(len(data)), id, tc.key, true)
			if err != nil {
				t.Fatal(err)
			}
			st := d.judge(tc.ix)
			// Every byte is covered by the magic check or the chain.
			if st == StatusSealed && !bytes.Equal(data, tc.orig) {
				t.Fatalf("mutated input reads as sealed: %q", d.problems)
			}
			if st == StatusSealed && len(d.chunks) < 3 {
				t.Fatalf("sealed with %d chunks", len(d.chunks))
			}
		}
	})
}

// The file path end to end on fuzz-like inputs, through Load: never a
// panic, never sealed.
func TestLoadGarbageFiles(t *testing.T) {
	dir := t.TempDir()
	id := "0000000000000abc"
	inputs := [][]byte{
		nil, []byte("x"), []byte(Magic + "\x00"), bytes.Repeat([]byte{0xff}, 100),
		append([]byte(Magic), bytes.Repeat([]byte{0}, 60)...),
		append([]byte(Magic), 0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0),
	}
	for i, in := range inputs {
		if err := os.WriteFile(filepath.Join(dir, id+fileExt), in, 0o600); err != nil {
			t.Fatal(err)
		}
		rec, err := Load(dir, id, nil)
		if err != nil {
			t.Fatalf("input %d: %v", i, err)
		}
		if rec.Status == StatusSealed {
			t.Fatalf("input %d sealed", i)
		}
	}
}

// benchDir is a directory on tmpfs when /dev/shm exists, so that the
// figure is the recorder's cost, not the disk's.
func benchDir(b *testing.B) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dir, err := os.MkdirTemp("/dev/shm", "recording-bench-")
		if err == nil {
			b.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return b.TempDir()
}

// BenchmarkAppendFlush: 64 KiB data chunks appended and flushed one by
// one into a real file (page cache or tmpfs, no fsync in the loop).
func BenchmarkAppendFlush(b *testing.B) {
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"sha256", nil}, {"hmac-sha256", testKey}} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := OpenStore(benchDir(b), StoreOptions{MaxSessionBytes: 1 << 40, MaxTotalBytes: 256 << 20, Key: tc.key})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			payload := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
			w, err := s.Create(Meta{Rule: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if w.Size() > 64<<20 {
					// Rotate (Finish fsyncs; eviction deletes) outside
					// the measurement.
					b.StopTimer()
					if err := w.Finish(End{}); err != nil {
						b.Fatal(err)
					}
					if w, err = s.Create(Meta{Rule: "bench"}); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				if err := w.Append(Chunk{Kind: KindData, Dir: DirServerToClient, Payload: payload}); err != nil {
					b.Fatal(err)
				}
				if err := w.Flush(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			w.Abandon()
		})
	}
}

// BenchmarkAppend is the format cost alone (chain hash and copy), no file.
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"sha256", nil}, {"hmac-sha256", testKey}} {
		b.Run(tc.name, func(b *testing.B) {
			w := &Writer{store: &Store{o: StoreOptions{MaxSessionBytes: 1 << 62}}, ch: newChain(tc.key)}
			payload := bytes.Repeat([]byte("0123456789abcdef"), 4096)
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := w.Append(Chunk{Kind: KindData, Payload: payload}); err != nil {
					b.Fatal(err)
				}
				w.buf = w.buf[:0]
			}
		})
	}
}

// BenchmarkVerify is the read side: a 64 MiB recording checked end to end.
func BenchmarkVerify(b *testing.B) {
	dir := benchDir(b)
	s, err := OpenStore(dir, StoreOptions{MaxSessionBytes: 1 << 30, MaxTotalBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	w, err := s.Create(Meta{Rule: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	for i := 0; i < 1024; i++ {
		w.Append(Chunk{Kind: KindData, Payload: payload})
		w.Flush()
	}
	w.Finish(End{})
	s.Close()
	b.SetBytes(w.Size())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := Verify(dir, w.ID(), nil)
		if err != nil || r.Status != StatusSealed {
			b.Fatal(err, r)
		}
	}
}
