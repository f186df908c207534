package recording

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/intransit/intransit/internal/testutil"
)

func mountTmpfs(t *testing.T, size string) string { return testutil.MountTmpfs(t, size) }

func TestDiskFull(t *testing.T) {
	dir := mountTmpfs(t, "256k")
	s := openTestStore(t, dir, bigOpts()) // caps far above the disk: the disk runs out first
	w, err := s.Create(testMeta("00000000000000ff"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{0xab}, 64<<10)
	var flushErr error
	flushed := 0
	for i := 0; i < 16 && flushErr == nil; i++ {
		if err := w.Append(Chunk{Kind: KindData, Dir: DirServerToClient, Payload: chunk}); err != nil {
			t.Fatal(err)
		}
		if flushErr = w.Flush(); flushErr == nil {
			flushed++
		}
	}
	if !errors.Is(flushErr, syscall.ENOSPC) {
		t.Fatalf("flush on a full disk: %v", flushErr)
	}
	if flushed == 0 {
		t.Fatal("nothing fit on a 256k tmpfs")
	}
	// Sticky: the writer only closes now.
	if err := w.Append(Chunk{Kind: KindData, Payload: []byte("x")}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append after a write error: %v", err)
	}
	if err := w.Finish(End{}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("finish after a write error: %v", err)
	}
	if err := w.Abandon(); err != nil {
		t.Fatal(err)
	}
	if s.Usage() != duSize(t, dir) {
		t.Fatalf("usage %d, du %d", s.Usage(), duSize(t, dir))
	}
	rec, err := Load(dir, w.ID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != StatusUnfinished && rec.Status != StatusTruncated {
		t.Fatalf("status %s %q", rec.Status, rec.Problems)
	}
	if len(rec.Chunks) != 1+flushed {
		t.Fatalf("%d chunks, want meta + %d flushed", len(rec.Chunks), flushed)
	}
	// Creating on the full disk fails with the OS error too, leaving no stub.
	if w2, err := s.Create(testMeta("00000000000000fe")); err == nil {
		// The Meta fit in the room the cut-off partial chunk left: the
		// next big flush must fail.
		w2.Append(Chunk{Kind: KindData, Payload: chunk})
		if err := w2.Flush(); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("second flush on a full disk: %v", err)
		}
		w2.Abandon()
	} else if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("create on a full disk: %v", err)
	} else if _, err := os.Stat(recPath(dir, "00000000000000fe")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stub left behind: %v", err)
	}
}

// Unwritable directory (EACCES is root-proof only via a read-only mount).
func TestReadOnlyDir(t *testing.T) {
	dir := mountTmpfs(t, "1m")
	s := openTestStore(t, dir, bigOpts())
	writeSealed(t, s, "0000000000000001")
	s.Close()
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	if _, err := OpenStore(dir, bigOpts()); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("OpenStore on a read-only fs: %v", err)
	}
	// Reading still works.
	if r := verify(t, dir, "0000000000000001", nil); r.Status != StatusSealed {
		t.Fatalf("%+v", r)
	}
}

// Many writers at once on one store, with eviction: run with -race.
func TestConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	o := StoreOptions{MaxSessionBytes: 256 << 10, MaxTotalBytes: 2 << 20}
	s := openTestStore(t, dir, o)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				w, err := s.Create(Meta{Rule: "r", Start: time.Now()})
				if err != nil {
					errs <- err
					return
				}
				var mu sync.Mutex // two relay directions share the writer
				var inner sync.WaitGroup
				for d := DirClientToServer; d <= DirServerToClient; d++ {
					inner.Add(1)
					go func() {
						defer inner.Done()
						for k := 0; k < 10; k++ {
							mu.Lock()
							err := w.Append(Chunk{Kind: KindData, Dir: d, Payload: make([]byte, 4<<10)})
							if err == nil {
								err = w.Flush()
							}
							mu.Unlock()
							if err != nil && !errors.Is(err, ErrSessionCap) && !errors.Is(err, ErrStoreFull) {
								errs <- err
								return
							}
						}
					}()
				}
				inner.Wait()
				if err := w.Finish(End{}); err != nil {
					errs <- err
					return
				}
				_ = s.Usage()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s.Usage() != duSize(t, dir) || s.Usage() > o.MaxTotalBytes {
		t.Fatalf("usage %d, du %d, cap %d", s.Usage(), duSize(t, dir), o.MaxTotalBytes)
	}
	if s.Evicted() == 0 {
		t.Fatal("expected evictions")
	}
	list, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range list {
		if l.Status != StatusSealed {
			t.Fatalf("%s: %s %q", l.ID, l.Status, l.Problems)
		}
	}
	if uint64(len(list))+s.Evicted() != 64 {
		t.Fatalf("%d listed + %d evicted != 64", len(list), s.Evicted())
	}
}
