package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/intransit/intransit/pkg/bpfobj"
)

// Mode is what the datapath does with a matching connect.
type Mode uint32

const (
	ModeAudit   = Mode(bpfobj.RedirectModeMODE_AUDIT)
	ModeEnforce = Mode(bpfobj.RedirectModeMODE_ENFORCE)
	ModeDeny    = Mode(bpfobj.RedirectModeMODE_DENY)
)

// Rule is one selector in the kernel's rule table. ID is reported back in
// events and lookups so the agent can name the rule.
type Rule struct {
	ID       uint32
	Mode     Mode
	Ports    []uint16
	Prefixes []netip.Prefix // empty: any destination
	// Group is the workload group the rule applies to (see
	// SetWorkloadGroups); 0 is every cgroup not in another group.
	Group uint32
}

// ruleKeys expands rules into LPM keys: port first, then the address, so the
// longest prefix wins and a port-only rule is a 16-bit prefix.
func ruleKeys(rules []Rule) (map[bpfobj.RedirectRuleKey]bpfobj.RedirectRuleVal, error) {
	out := make(map[bpfobj.RedirectRuleKey]bpfobj.RedirectRuleVal)
	for _, r := range rules {
		if r.ID == 0 {
			return nil, errors.New("rule id 0 is reserved")
		}
		val := bpfobj.RedirectRuleVal{RuleId: r.ID, Mode: uint32(r.Mode)}
		group := htonl(r.Group)
		for _, port := range r.Ports {
			if len(r.Prefixes) == 0 {
				k := bpfobj.RedirectRuleKey{Prefixlen: 32 + 16, Group: group, Port: htons(port)}
				if prev, dup := out[k]; dup && prev != val {
					return nil, fmt.Errorf("port %d (workload group %d) is selected by two rules (ids %d and %d)", port, r.Group, prev.RuleId, r.ID)
				}
				out[k] = val
				continue
			}
			for _, p := range r.Prefixes {
				p = p.Masked()
				bits := p.Bits()
				if p.Addr().Is4() {
					bits += 96 // stored as ::ffff:a.b.c.d
				}
				k := bpfobj.RedirectRuleKey{
					Prefixlen: uint32(32 + 16 + bits),
					Group:     group,
					Port:      htons(port),
					Addr:      p.Addr().As16(),
				}
				if prev, dup := out[k]; dup && prev != val {
					return nil, fmt.Errorf("port %d, %s (workload group %d) is selected by two rules (ids %d and %d)", port, p, r.Group, prev.RuleId, r.ID)
				}
				out[k] = val
			}
		}
	}
	return out, nil
}

// SetRules replaces the kernel's rule table. New and changed keys are written
// before stale ones are deleted, so a rule kept across a reload never has a
// gap during which its connects would pass in plaintext.
func (d *Datapath) SetRules(rules []Rule) error {
	want, err := d.putRules(rules)
	if err != nil {
		return err
	}
	return d.deleteStaleRules(want)
}

// SetRulesAndGroups replaces the rule table and the cgroup -> workload group
// table together, in the order that leaves no gap: new rule entries, then
// the group table, then stale rule entries (of groups no cgroup is in any
// more).
func (d *Datapath) SetRulesAndGroups(rules []Rule, groups map[uint64]uint32) error {
	want, err := d.putRules(rules)
	if err != nil {
		return err
	}
	if err := d.SetWorkloadGroups(groups); err != nil {
		return err
	}
	return d.deleteStaleRules(want)
}

func (d *Datapath) putRules(rules []Rule) (map[bpfobj.RedirectRuleKey]bpfobj.RedirectRuleVal, error) {
	want, err := ruleKeys(rules)
	if err != nil {
		return nil, fmt.Errorf("set rules: %w", err)
	}
	m := d.objs.RulesMap
	if int(m.MaxEntries()) < len(want) {
		return nil, fmt.Errorf("set rules: %d port/prefix selectors (over all workload groups) exceed the kernel table's %d", len(want), m.MaxEntries())
	}
	for k, v := range want {
		if err := m.Put(&k, &v); err != nil {
			return nil, fmt.Errorf("set rules: write selector: %w", err)
		}
	}
	return want, nil
}

func (d *Datapath) deleteStaleRules(want map[bpfobj.RedirectRuleKey]bpfobj.RedirectRuleVal) error {
	m := d.objs.RulesMap
	var stale []bpfobj.RedirectRuleKey
	var k bpfobj.RedirectRuleKey
	var v bpfobj.RedirectRuleVal
	it := m.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("set rules: list selectors: %w", err)
	}
	for _, k := range stale {
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("set rules: delete stale selector: %w", err)
		}
	}
	return nil
}

// PinnedMaxGroup returns the highest workload group in the rule table a
// previous agent pinned under pinPath (0 if none or unreadable), so a new
// agent numbers its groups above it: an id never changes meaning while
// cgroups still point at it.
func PinnedMaxGroup(pinPath string) uint32 {
	m, err := ebpf.LoadPinnedMap(filepath.Join(mapsDir(pinPath), bpfobj.RedirectMapRulesMap), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return 0
	}
	defer m.Close()
	if m.KeySize() != uint32(binary.Size(bpfobj.RedirectRuleKey{})) {
		return 0 // an older layout: replaced wholesale on load
	}
	var max uint32
	var k bpfobj.RedirectRuleKey
	var v bpfobj.RedirectRuleVal
	it := m.Iterate()
	for it.Next(&k, &v) {
		if g := htonl(k.Group); g > max {
			max = g
		}
	}
	return max
}

// SetWorkloadGroups replaces the cgroup id -> workload group table. Entries
// are written before stale ones are deleted; a cgroup missing from groups is
// in group 0.
func (d *Datapath) SetWorkloadGroups(groups map[uint64]uint32) error {
	return syncHash(d.objs.WorkloadGroups, groups, "workload groups")
}

// SetNetnsProxies replaces the netns cookie -> proxy address table: where
// enforced connects from each known pod network namespace are sent (an IPv4
// address of this host reachable from it, where the proxy listens).
func (d *Datapath) SetNetnsProxies(addrs map[uint64]netip.Addr) error {
	want := make(map[uint64]uint32, len(addrs))
	for cookie, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			return fmt.Errorf("set netns proxies: %s is not an IPv4 address", a)
		}
		b := a.As4()
		want[cookie] = binary.NativeEndian.Uint32(b[:]) // bytes stay in network order
	}
	return syncHash(d.objs.NetnsProxy, want, "netns proxies")
}

// syncHash makes a u64-keyed hash map hold exactly want, writing before
// deleting.
func syncHash(m *ebpf.Map, want map[uint64]uint32, what string) error {
	if int(m.MaxEntries()) < len(want) {
		return fmt.Errorf("set %s: %d entries exceed the kernel table's %d", what, len(want), m.MaxEntries())
	}
	for k, v := range want {
		if err := m.Put(&k, &v); err != nil {
			return fmt.Errorf("set %s: write %d: %w", what, k, err)
		}
	}
	var stale []uint64
	var k uint64
	var v uint32
	it := m.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("set %s: list: %w", what, err)
	}
	for _, k := range stale {
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("set %s: delete %d: %w", what, k, err)
		}
	}
	return nil
}

// Service is an inbound service port protected on this host.
type Service struct {
	ID   uint32
	Port uint16
	Mode Mode // ModeAudit reports, ModeEnforce drops
}

// SetServices replaces the inbound service table, writing before deleting
// like SetRules.
func (d *Datapath) SetServices(services []Service) error {
	want := make(map[uint16]bpfobj.RedirectServiceVal, len(services))
	for _, s := range services {
		if prev, dup := want[s.Port]; dup {
			return fmt.Errorf("set services: port %d used by services %d and %d", s.Port, prev.ServiceId, s.ID)
		}
		want[s.Port] = bpfobj.RedirectServiceVal{ServiceId: s.ID, Mode: uint32(s.Mode)}
	}
	m := d.objs.ServicesMap
	for k, v := range want {
		if err := m.Put(&k, &v); err != nil {
			return fmt.Errorf("set services: write port %d: %w", k, err)
		}
	}
	var stale []uint16
	var k uint16
	var v bpfobj.RedirectServiceVal
	it := m.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("set services: list: %w", err)
	}
	for _, k := range stale {
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("set services: delete port %d: %w", k, err)
		}
	}
	return nil
}
