// Package workloadsel applies the rules' workload selectors to cgroups: each
// combination of selectors that picks a cgroup becomes a workload group, and
// each group gets the kernel rule entries that apply to it. The datapath
// looks the client's cgroup up in the group table, then the rules of that
// group (group 0: cgroups no selector picked).
package workloadsel

import (
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/redirect"
)

// Rule is a configured rule as the datapath sees it, with its selectors.
type Rule struct {
	ID        uint32
	Mode      redirect.Mode
	Ports     []uint16
	Prefixes  []netip.Prefix // empty: any destination
	Selectors []config.WorkloadSelector
}

// Cgroup is one cgroup of the node.
type Cgroup struct {
	ID   uint64
	Path string     // below the cgroup2 mount, "/" for the root
	Pod  *audit.Pod // nil when not a pod's
}

// Table gives combinations of matching rules stable group ids for the
// agent's lifetime: a cgroup's group never changes meaning under it while
// the kernel tables are being updated.
type Table struct {
	mu   sync.Mutex
	ids  map[string]uint32
	next uint32
}

// NewTable returns an empty table whose group ids start above after (the
// highest id a previous agent left in the pinned tables).
func NewTable(after uint32) *Table { return &Table{ids: map[string]uint32{}, next: after + 1} }

// Compute returns the cgroup -> group table (only cgroups in a group other
// than 0) and the kernel rules of every group in use.
func (t *Table) Compute(rules []Rule, cgroups []Cgroup) (map[uint64]uint32, []redirect.Rule) {
	t.mu.Lock()
	defer t.mu.Unlock()
	groups := map[uint64]uint32{}
	combos := map[uint32][]int{}
	var picked []int
	for _, cg := range cgroups {
		picked = picked[:0]
		for i, r := range rules {
			if len(r.Selectors) > 0 && Matches(r.Selectors, cg) {
				picked = append(picked, i)
			}
		}
		if len(picked) == 0 {
			continue
		}
		key := comboKey(rules, picked)
		id, ok := t.ids[key]
		if !ok {
			id = t.next
			t.next++
			t.ids[key] = id
		}
		groups[cg.ID] = id
		if _, ok := combos[id]; !ok {
			combos[id] = slices.Clone(picked)
		}
	}
	out := expand(rules, 0, nil)
	ids := make([]uint32, 0, len(combos))
	for id := range combos {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		out = append(out, expand(rules, id, combos[id])...)
	}
	return groups, out
}

// comboKey names a combination by rule ids, so it survives reordering.
func comboKey(rules []Rule, picked []int) string {
	var b strings.Builder
	for _, i := range picked {
		b.WriteString(strconv.FormatUint(uint64(rules[i].ID), 10))
		b.WriteByte(',')
	}
	return b.String()
}

type selKey struct {
	port   uint16
	prefix netip.Prefix // zero: any destination
}

// expand lays out the kernel entries of one group: every rule without
// selectors plus the picked ones. At the same port and prefix a rule with
// selectors wins over one without, and among equals the first in config
// order wins; different prefixes are left to longest-prefix match.
func expand(rules []Rule, group uint32, picked []int) []redirect.Rule {
	owner := map[selKey]int{}
	var order []selKey
	consider := func(i int) {
		r := rules[i]
		prefixes := r.Prefixes
		if len(prefixes) == 0 {
			prefixes = []netip.Prefix{{}}
		}
		for _, port := range r.Ports {
			for _, p := range prefixes {
				k := selKey{port, p}
				j, taken := owner[k]
				switch {
				case !taken:
					order = append(order, k)
					owner[k] = i
				case len(rules[j].Selectors) == 0 && len(r.Selectors) > 0:
					owner[k] = i
				}
			}
		}
	}
	for _, i := range picked {
		consider(i)
	}
	for i, r := range rules {
		if len(r.Selectors) == 0 {
			consider(i)
		}
	}
	out := make([]redirect.Rule, 0, len(order))
	for _, k := range order {
		r := rules[owner[k]]
		dr := redirect.Rule{ID: r.ID, Mode: r.Mode, Ports: []uint16{k.port}, Group: group}
		if k.prefix.IsValid() {
			dr.Prefixes = []netip.Prefix{k.prefix}
		}
		out = append(out, dr)
	}
	return out
}

// Matches reports whether any selector picks the cgroup.
func Matches(sels []config.WorkloadSelector, cg Cgroup) bool {
	for _, s := range sels {
		if matchOne(s, cg) {
			return true
		}
	}
	return false
}

func matchOne(s config.WorkloadSelector, cg Cgroup) bool {
	if s.Cgroup != "" && !matchCgroup(s.Cgroup, cg.Path) {
		return false
	}
	if s.Namespace != "" || len(s.Labels) > 0 {
		// An unresolved pod matches nothing: never guess.
		if cg.Pod == nil || cg.Pod.Name == audit.Unknown {
			return false
		}
		if s.Namespace != "" && cg.Pod.Namespace != s.Namespace {
			return false
		}
		for k, v := range s.Labels {
			if got, ok := cg.Pod.Labels[k]; !ok || got != v {
				return false
			}
		}
	}
	return true
}

// matchCgroup matches the glob against the path and each of its ancestors,
// so a selector for a pod or service covers the cgroups below it.
func matchCgroup(glob, p string) bool {
	for {
		if ok, _ := path.Match(glob, p); ok {
			return true
		}
		if p == "/" || p == "" || p == "." {
			return false
		}
		p = path.Dir(p)
	}
}
