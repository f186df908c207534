package workloadsel

import (
	"net/netip"
	"testing"

	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/redirect"
)

func TestMatchCgroupCoversDescendants(t *testing.T) {
	sel := []config.WorkloadSelector{{Cgroup: "/kubepods.slice/*pod1234*.slice"}}
	for p, want := range map[string]bool{
		"/kubepods.slice/kubepods-pod1234.slice":                         true,
		"/kubepods.slice/kubepods-pod1234.slice/cri-containerd-ab.scope": true,
		"/kubepods.slice/kubepods-pod9999.slice/cri-containerd-ab.scope": false,
		"/system.slice/kubepods.slice/kubepods-pod1234.slice/x":          false,
		"/": false,
	} {
		if got := Matches(sel, Cgroup{Path: p}); got != want {
			t.Errorf("%s: %v, want %v", p, got, want)
		}
	}
}

func TestMatchPods(t *testing.T) {
	pod := &audit.Pod{Namespace: "agents", Name: "planner-1", Labels: map[string]string{"app": "planner", "tier": "a"}}
	unknown := &audit.Pod{Namespace: audit.Unknown, Name: audit.Unknown, UID: "u"}
	cases := []struct {
		sel  config.WorkloadSelector
		pod  *audit.Pod
		want bool
	}{
		{config.WorkloadSelector{Namespace: "agents"}, pod, true},
		{config.WorkloadSelector{Namespace: "other"}, pod, false},
		{config.WorkloadSelector{Labels: map[string]string{"app": "planner"}}, pod, true},
		{config.WorkloadSelector{Namespace: "agents", Labels: map[string]string{"app": "planner", "tier": "b"}}, pod, false},
		{config.WorkloadSelector{Namespace: "agents"}, nil, false},
		{config.WorkloadSelector{Namespace: audit.Unknown}, unknown, false}, // never guessed
		{config.WorkloadSelector{Cgroup: "/x*", Namespace: "agents"}, pod, false},
	}
	for i, c := range cases {
		if got := Matches([]config.WorkloadSelector{c.sel}, Cgroup{Path: "/kubepods/pod-u", Pod: c.pod}); got != c.want {
			t.Errorf("case %d: %v, want %v", i, got, c.want)
		}
	}
}

// TestComputeGroups: one node, two workloads picked by different rules on
// the same port, one unpicked; precedence and stable ids.
func TestComputeGroups(t *testing.T) {
	any80 := []uint16{80}
	net10 := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	rules := []Rule{
		{ID: 1, Mode: redirect.ModeAudit, Ports: any80},                                                                            // everyone
		{ID: 2, Mode: redirect.ModeEnforce, Ports: any80, Selectors: []config.WorkloadSelector{{Cgroup: "/pods/a*"}}},              // pod a
		{ID: 3, Mode: redirect.ModeDeny, Ports: any80, Prefixes: net10, Selectors: []config.WorkloadSelector{{Cgroup: "/pods/b"}}}, // pod b, 10/8 only
		{ID: 4, Mode: redirect.ModeEnforce, Ports: any80, Selectors: []config.WorkloadSelector{{Cgroup: "/pods/a1"}}},              // also a1: rule 2 is first
	}
	cgs := []Cgroup{{ID: 10, Path: "/pods/a1"}, {ID: 11, Path: "/pods/a2"}, {ID: 12, Path: "/pods/b"}, {ID: 13, Path: "/pods/c"}}
	tab := NewTable(0)
	groups, dp := tab.Compute(rules, cgs)
	if _, ok := groups[13]; ok {
		t.Errorf("unpicked cgroup got a group: %v", groups)
	}
	if groups[10] == groups[11] || groups[10] == 0 || groups[11] == 0 || groups[12] == 0 {
		t.Fatalf("groups = %v: a1 (rules 2+4) and a2 (rule 2) differ, b has its own", groups)
	}
	byGroup := map[uint32][]redirect.Rule{}
	for _, r := range dp {
		byGroup[r.Group] = append(byGroup[r.Group], r)
	}
	check := func(g uint32, want map[string]uint32) {
		t.Helper()
		got := map[string]uint32{}
		for _, r := range byGroup[g] {
			k := "any"
			if len(r.Prefixes) > 0 {
				k = r.Prefixes[0].String()
			}
			got[k] = r.ID
		}
		if len(got) != len(want) {
			t.Errorf("group %d: %v, want %v", g, got, want)
		}
		for k, id := range want {
			if got[k] != id {
				t.Errorf("group %d %s: rule %d, want %d", g, k, got[k], id)
			}
		}
	}
	check(0, map[string]uint32{"any": 1})
	check(groups[10], map[string]uint32{"any": 2}) // selected beats unselected; first selected wins
	check(groups[11], map[string]uint32{"any": 2})
	check(groups[12], map[string]uint32{"any": 1, "10.0.0.0/8": 3}) // longest prefix is the kernel's job
	// Stable ids: the same combination keeps its id after cgroups change.
	g2, _ := tab.Compute(rules, []Cgroup{{ID: 20, Path: "/pods/b"}, {ID: 21, Path: "/pods/a2"}})
	if g2[20] != groups[12] || g2[21] != groups[11] {
		t.Errorf("ids moved: %v then %v", groups, g2)
	}
}
