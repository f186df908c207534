//go:build linux

package recorder

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/intransit/intransit/internal/testutil"
	"github.com/intransit/intransit/pkg/recording"
)

func mountTmpfs(t *testing.T, size string) string { return testutil.MountTmpfs(t, size) }

// TestWriteFailure: the disk fills up (ENOSPC). With CloseOnError false
// Tap keeps returning nil; with it, Tap returns the error from then on.
// Either way Failed is called exactly once, with an error that wraps
// ENOSPC, and Finish returns that error without panicking.
func TestWriteFailure(t *testing.T) {
	for _, closeOnError := range []bool{false, true} {
		t.Run(fmt.Sprintf("closeOnError=%v", closeOnError), func(t *testing.T) {
			mnt := mountTmpfs(t, "256k")
			// Caps far above the disk: the disk runs out first.
			s, dir := testStore(t, mnt, recording.StoreOptions{MaxSessionBytes: 64 << 20, MaxTotalBytes: 1 << 30})
			var fails failures
			var r *Recorder
			r = start(t, s, Options{
				Full: true, CloseOnError: closeOnError,
				Failed: func(err error) {
					// Not called under the recorder's lock: this would
					// deadlock otherwise.
					if got := r.Err(); got != err {
						t.Errorf("Err() = %v in Failed(%v)", got, err)
					}
					fails.record(err)
				},
			})
			chunk := bulkPayload("text", 32<<10)
			var tapErr error
			taps := 0
			for i := 0; i < 64; i++ { // 2 MiB into 256 KiB
				up := i%2 == 0
				p := chunk
				if i < 2 {
					p = append([]byte("\x00"), chunk[1:]...) // not HTTP
				}
				err := r.Tap(up, p)
				if err == nil {
					if tapErr != nil {
						t.Fatalf("Tap %d: nil after an error", i)
					}
					continue
				}
				if !closeOnError {
					t.Fatalf("Tap %d returned %v under CloseOnError false", i, err)
				}
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("Tap %d: %v, want ENOSPC", i, err)
				}
				if tapErr == nil {
					taps = i
				}
				tapErr = err
			}
			errs := fails.get()
			if len(errs) != 1 {
				t.Fatalf("Failed called %d times: %v", len(errs), errs)
			}
			if !errors.Is(errs[0], syscall.ENOSPC) {
				t.Errorf("Failed(%v), want ENOSPC", errs[0])
			}
			if !errors.Is(r.Err(), syscall.ENOSPC) {
				t.Errorf("Err() = %v", r.Err())
			}
			if closeOnError && tapErr == nil {
				t.Error("Tap never returned the error under CloseOnError")
			}
			if closeOnError && taps == 0 {
				t.Error("the very first Tap failed: nothing fit")
			}
			err := r.Finish(recording.End{Reason: "done"})
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("Finish after the failure: %v", err)
			}
			if len(fails.get()) != 1 {
				t.Errorf("Failed called again by Finish: %v", fails.get())
			}
			if err := r.Finish(recording.End{}); err == nil {
				t.Error("second Finish succeeded")
			}
			// What was written before the failure reads as an unfinished
			// recording.
			rec, err := recording.Load(dir, r.ID(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Status != recording.StatusUnfinished || rec.End != nil {
				t.Errorf("status %s, problems %q", rec.Status, rec.Problems)
			}
			data := 0
			for _, c := range rec.Chunks {
				if c.Kind == recording.KindData {
					data += len(c.Payload)
				}
			}
			if data == 0 {
				t.Error("nothing recorded before the disk filled up")
			}
		})
	}
}
