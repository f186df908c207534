package redirect

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/intransit/intransit/pkg/bpfobj"
)

var statNames = map[bpfobj.RedirectStat]string{
	bpfobj.RedirectStatSTAT_MATCHED:     "matched",
	bpfobj.RedirectStatSTAT_AUDIT:       "audit",
	bpfobj.RedirectStatSTAT_REDIRECT:    "redirect",
	bpfobj.RedirectStatSTAT_DENY:        "deny",
	bpfobj.RedirectStatSTAT_ERROR:       "error",
	bpfobj.RedirectStatSTAT_EVENTS_LOST: "events_lost",
	bpfobj.RedirectStatSTAT_ESTABLISHED: "established",
	bpfobj.RedirectStatSTAT_CLOSED:      "closed",
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
	var out []MapFill
	for _, m := range []struct {
		name string
		m    *ebpf.Map
	}{
		{bpfobj.RedirectMapByCookie, d.objs.ByCookie},
		{bpfobj.RedirectMapByAddr, d.objs.ByAddr},
	} {
		n, err := countEntries(m.m)
		if err != nil {
			return nil, fmt.Errorf("count %s: %w", m.name, err)
		}
		out = append(out, MapFill{Map: m.name, Entries: n, Capacity: int(m.m.MaxEntries())})
	}
	return out, nil
}

func countEntries(m *ebpf.Map) (int, error) {
	const chunk = 4096
	keys := make([]byte, chunk*int(m.KeySize()))
	vals := make([]byte, chunk*int(m.ValueSize()))
	var cursor ebpf.MapBatchCursor
	total := 0
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		total += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return countByIteration(m)
		}
		if err != nil {
			return total, err
		}
	}
}

func countByIteration(m *ebpf.Map) (int, error) {
	var key []byte
	n := 0
	it := m.Iterate()
	var val []byte
	for it.Next(&key, &val) {
		n++
	}
	return n, it.Err()
}
