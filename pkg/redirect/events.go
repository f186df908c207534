package redirect

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
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
	// Inbound enforcement on executor hosts.
	VerdictIngressAudit = Verdict(bpfobj.RedirectVerdictVERDICT_INGRESS_AUDIT)
	VerdictIngressDrop  = Verdict(bpfobj.RedirectVerdictVERDICT_INGRESS_DROP)
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
	case VerdictIngressAudit:
		return "INGRESS_AUDIT"
	case VerdictIngressDrop:
		return "INGRESS_DROP"
	}
	return fmt.Sprintf("verdict(%d)", uint32(v))
}

// Event is one matched connect, as seen in process context, or (ingress
// verdicts) one plaintext connection attempt reaching an inbound service.
type Event struct {
	Orig
	Verdict   Verdict
	Monotonic uint64 // bpf_ktime_get_ns

	// Ingress events only.
	ServiceID uint32
	Peer      netip.AddrPort // the off-host source
	LocalPort uint16         // the service port
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
		ev := Event{Verdict: Verdict(raw.Verdict), Monotonic: raw.TsNs}
		switch ev.Verdict {
		case VerdictIngressAudit, VerdictIngressDrop:
			ev.ServiceID = raw.ServiceId
			ev.Peer = netip.AddrPortFrom(addrFrom16(raw.PeerAddr), ntohs(raw.PeerPort))
			ev.LocalPort = raw.LocalPort
		default:
			ev.Orig = origFrom(&raw.O)
		}
		fn(ev)
	}
}
