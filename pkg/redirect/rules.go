package redirect

import (
	"errors"
	"fmt"
	"net/netip"

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
		for _, port := range r.Ports {
			if len(r.Prefixes) == 0 {
				k := bpfobj.RedirectRuleKey{Prefixlen: 16, Port: htons(port)}
				if prev, dup := out[k]; dup && prev != val {
					return nil, fmt.Errorf("port %d is selected by two rules (ids %d and %d)", port, prev.RuleId, r.ID)
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
					Prefixlen: uint32(16 + bits),
					Port:      htons(port),
					Addr:      p.Addr().As16(),
				}
				if prev, dup := out[k]; dup && prev != val {
					return nil, fmt.Errorf("port %d, %s is selected by two rules (ids %d and %d)", port, p, prev.RuleId, r.ID)
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
	want, err := ruleKeys(rules)
	if err != nil {
		return fmt.Errorf("set rules: %w", err)
	}
	m := d.objs.RulesMap
	if int(m.MaxEntries()) < len(want) {
		return fmt.Errorf("set rules: %d port/prefix selectors exceed the kernel table's %d", len(want), m.MaxEntries())
	}
	for k, v := range want {
		if err := m.Put(&k, &v); err != nil {
			return fmt.Errorf("set rules: write selector: %w", err)
		}
	}
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
