package redirect

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/intransit/intransit/pkg/bpfobj"
)

// Verdict is what the datapath did with a matched connect.
type Verdict uint32

const (
	VerdictAudit    = Verdict(bpfobj.RedirectVerdictVERDICT_AUDIT)
	VerdictRedirect = Verdict(bpfobj.RedirectVerdictVERDICT_REDIRECT)
	VerdictDeny     = Verdict(bpfobj.RedirectVerdictVERDICT_DENY)
	VerdictError    = Verdict(bpfobj.RedirectVerdictVERDICT_ERROR)
)

func (v Verdict) String() string {
	switch v {
	case VerdictAudit:
		return "AUDIT"
	case VerdictRedirect:
		return "REDIRECT"
	case VerdictDeny:
		return "DENIED"
	case VerdictError:
		return "ERROR"
	}
	return fmt.Sprintf("verdict(%d)", uint32(v))
}

// Event is one matched connect, as seen in process context.
type Event struct {
	Orig
	Verdict   Verdict
	Monotonic uint64 // bpf_ktime_get_ns
}

const eventSize = int(unsafe.Sizeof(bpfobj.RedirectEvent{}))

// ReadEvents delivers ring buffer events to fn until ctx is done. Malformed
// records are counted in lost rather than stopping the reader.
func (d *Datapath) ReadEvents(ctx context.Context, fn func(Event), lost func()) error {
	rd, err := ringbuf.NewReader(d.objs.Events)
	if err != nil {
		return fmt.Errorf("open event ring buffer: %w", err)
	}
	go func() {
		<-ctx.Done()
		rd.Close()
	}()
	var rec ringbuf.Record
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read event ring buffer: %w", err)
		}
		if len(rec.RawSample) < eventSize {
			if lost != nil {
				lost()
			}
			continue
		}
		var raw bpfobj.RedirectEvent
		if _, err := binary.Decode(rec.RawSample[:eventSize], binary.NativeEndian, &raw); err != nil {
			if lost != nil {
				lost()
			}
			continue
		}
		fn(Event{Orig: origFrom(&raw.O), Verdict: Verdict(raw.Verdict), Monotonic: raw.TsNs})
	}
}
