package redirect

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/intransit/intransit/pkg/bpfobj"
)

// PinnedProgram describes one pinned, attached program.
type PinnedProgram struct {
	Name     string
	Path     string
	CgroupID uint64
	ProgID   uint32
}

// Pinned lists the programs pinned under pin, whether or not an agent runs.
func Pinned(pin string) ([]PinnedProgram, error) {
	var out []PinnedProgram
	for _, p := range append(programs[:len(programs):len(programs)], ingressProgram) {
		path := filepath.Join(linksDir(pin), p.name)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			continue
		}
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			return out, fmt.Errorf("open pinned link %s: %w", path, privilegeHint(err))
		}
		pp := PinnedProgram{Name: p.name, Path: path}
		if info, err := l.Info(); err == nil {
			pp.ProgID = uint32(info.Program)
			if cg := info.Cgroup(); cg != nil {
				pp.CgroupID = cg.CgroupId
			}
		}
		l.Close()
		out = append(out, pp)
	}
	return out, nil
}

// PinnedStats reads the datapath counters from the pinned map.
func PinnedStats(pin string) (map[string]uint64, error) {
	path := filepath.Join(mapsDir(pin), bpfobj.RedirectMapStatsMap)
	m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, privilegeHint(err))
	}
	defer m.Close()
	return readStats(m)
}

// AttachedCounts returns, per program, how many programs of its attach type
// are attached directly to the cgroup: after any number of agent restarts it
// must stay 1 each (a restart updates its links, never attaches twice).
func AttachedCounts(cgroup string) (map[string]int, error) {
	f, err := os.Open(cgroup)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", cgroup, err)
	}
	defer f.Close()
	out := make(map[string]int, len(programs))
	for _, p := range programs {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: p.attach})
		if err != nil {
			return nil, fmt.Errorf("query %s programs on %s: %w", p.name, cgroup, privilegeHint(err))
		}
		out[p.name] = len(res.Programs)
	}
	return out, nil
}
