package redirect

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/intransit/intransit/pkg/bpfobj"
)

var statNames = map[bpfobj.RedirectStat]string{
	bpfobj.RedirectStatSTAT_MATCHED:       "matched",
	bpfobj.RedirectStatSTAT_AUDIT:         "audit",
	bpfobj.RedirectStatSTAT_REDIRECT:      "redirect",
	bpfobj.RedirectStatSTAT_DENY:          "deny",
	bpfobj.RedirectStatSTAT_ERROR:         "error",
	bpfobj.RedirectStatSTAT_EVENTS_LOST:   "events_lost",
	bpfobj.RedirectStatSTAT_ESTABLISHED:   "established",
	bpfobj.RedirectStatSTAT_CLOSED:        "closed",
	bpfobj.RedirectStatSTAT_INGRESS_AUDIT: "ingress_audit",
	bpfobj.RedirectStatSTAT_INGRESS_DROP:  "ingress_drop",
}

// Stats sums the per-CPU datapath counters.
func (d *Datapath) Stats() (map[string]uint64, error) {
	return readStats(d.objs.StatsMap)
}

func readStats(m *ebpf.Map) (map[string]uint64, error) {
	out := make(map[string]uint64, len(statNames))
	for idx, name := range statNames {
		var per []uint64
		if err := m.Lookup(uint32(idx), &per); err != nil {
			return nil, fmt.Errorf("read datapath counter %s: %w", name, err)
		}
		var sum uint64
		for _, v := range per {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}

// MapFill is how full one map is.
type MapFill struct {
	Map      string
	Entries  int
	Capacity int
}

// MapFill counts the entries of the original-destination maps. It walks the
// maps in batches, so callers should not call it on every packet.
func (d *Datapath) MapFill() ([]MapFill, error) {
	cookies, err := countEntries[uint64, bpfobj.RedirectOrig](d.objs.ByCookie)
	if err != nil {
		return nil, fmt.Errorf("count %s: %w", bpfobj.RedirectMapByCookie, err)
	}
	addrs, err := countEntries[bpfobj.RedirectAddrKey, bpfobj.RedirectOrig](d.objs.ByAddr)
	if err != nil {
		return nil, fmt.Errorf("count %s: %w", bpfobj.RedirectMapByAddr, err)
	}
	return []MapFill{
		{Map: bpfobj.RedirectMapByCookie, Entries: cookies, Capacity: int(d.objs.ByCookie.MaxEntries())},
		{Map: bpfobj.RedirectMapByAddr, Entries: addrs, Capacity: int(d.objs.ByAddr.MaxEntries())},
	}, nil
}

func countEntries[K, V any](m *ebpf.Map) (int, error) {
	const chunk = 4096
	keys := make([]K, chunk)
	vals := make([]V, chunk)
	var cursor ebpf.MapBatchCursor
	total := 0
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		total += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return countByIteration[K, V](m)
		}
		if err != nil {
			return total, err
		}
	}
}

func countByIteration[K, V any](m *ebpf.Map) (int, error) {
	var k K
	var v V
	n := 0
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	return n, it.Err()
}
