package redirect

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/intransit/intransit/pkg/bpfobj"
)

// Orig is what the kernel recorded about a redirected connect.
type Orig struct {
	Destination  netip.AddrPort // the address the application dialled
	RuleID       uint32
	PID, TID     uint32
	UID, GID     uint32
	Comm         string
	CgroupID     uint64
	NetnsCookie  uint64
	SocketCookie uint64
	IPv6Socket   bool // the client used an AF_INET6 socket (also for v4-mapped)
}

func origFrom(o *bpfobj.RedirectOrig) Orig {
	return Orig{
		Destination:  netip.AddrPortFrom(addrFrom16(o.Addr), ntohs(o.Port)),
		RuleID:       o.RuleId,
		PID:          o.Pid,
		TID:          o.Tid,
		UID:          o.Uid,
		GID:          o.Gid,
		Comm:         commString(o.Comm),
		CgroupID:     o.CgroupId,
		NetnsCookie:  o.NetnsCookie,
		SocketCookie: o.Cookie,
		IPv6Socket:   o.Family == 10,
	}
}

func commString(c [16]int8) string {
	b := make([]byte, 0, len(c))
	for _, ch := range c {
		if ch == 0 {
			break
		}
		b = append(b, byte(ch))
	}
	return string(b)
}

// ErrNoEntry means the kernel holds no original destination for a connection:
// it was not redirected (someone dialled the proxy directly) or its entry was
// evicted. The caller must refuse the connection, never guess.
var ErrNoEntry = errors.New("no redirect entry for this connection")

// Take returns and removes the original destination of the connection whose
// client end is remote (the remote address the proxy saw on accept). Removing
// it means a later socket reusing the same port cannot inherit it.
func (d *Datapath) Take(remote netip.AddrPort) (Orig, error) {
	k := bpfobj.RedirectAddrKey{Addr: remote.Addr().As16(), PortHost: remote.Port()}
	var v bpfobj.RedirectOrig
	err := d.objs.ByAddr.LookupAndDelete(&k, &v)
	if errors.Is(err, ebpf.ErrNotSupported) {
		// Kernels before 5.14 have no lookup-and-delete for hash maps.
		if err = d.objs.ByAddr.Lookup(&k, &v); err == nil {
			_ = d.objs.ByAddr.Delete(&k)
		}
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Orig{}, ErrNoEntry
	}
	if err != nil {
		return Orig{}, fmt.Errorf("look up original destination of %s: %w", remote, err)
	}
	return origFrom(&v), nil
}
