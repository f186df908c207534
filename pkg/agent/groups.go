package agent

import (
	"context"
	"io/fs"
	"net/netip"
	"path/filepath"
	"syscall"
	"time"

	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/identity"
	"github.com/intransit/intransit/pkg/workloadsel"
)

// groupRescan is how often cgroups are matched against workload selectors:
// a new pod or service is covered within it.
const groupRescan = 500 * time.Millisecond

// workloadRules turns config rules into the selector-aware form.
func workloadRules(cfg *config.Config) []workloadsel.Rule {
	out := make([]workloadsel.Rule, 0, len(cfg.Rules))
	for _, dr := range datapathRules(cfg) {
		out = append(out, workloadsel.Rule{ID: dr.ID, Mode: dr.Mode, Ports: dr.Ports, Prefixes: dr.Prefixes})
	}
	for i, r := range cfg.Rules {
		out[i].Selectors = r.Workloads
	}
	return out
}

// syncDatapath writes cfg's rules and, when rules select workloads, the
// cgroup -> group table. syncMu is held by the caller.
func (a *Agent) syncDatapath(cfg *config.Config) error {
	var cgs []workloadsel.Cgroup
	if cfg.HasWorkloads() {
		cgs = a.scanCgroups()
	}
	groups, rules := a.groups.Compute(workloadRules(cfg), cgs)
	return a.dp.SetRulesAndGroups(rules, groups)
}

// watchGroups keeps the group table current as cgroups (pods, services)
// come and go or pods change labels.
func (a *Agent) watchGroups(ctx context.Context) {
	t := time.NewTicker(groupRescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.syncMu.Lock()
		cfg := a.state.Load().cfg
		if cfg.HasWorkloads() {
			if err := a.syncDatapath(cfg); err != nil {
				a.log.Error("update workload groups", "error", err)
			}
		}
		a.syncMu.Unlock()
		a.syncPodNamespaces()
	}
}

// syncPodNamespaces finds the network namespaces of processes under the
// attach cgroup and, for each whose default gateway is an address of this
// host, listens there and tells the datapath to send that namespace's
// redirected connects to it. Others use proxy.podAddress.
func (a *Agent) syncPodNamespaces() {
	if a.podnet == nil || a.lis == nil {
		return
	}
	via := map[uint64]netip.Addr{}
	var addrs []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, ns := range a.podnet.Find(a.cgroup) {
		if !ns.Via.IsValid() {
			continue
		}
		via[ns.Cookie] = ns.Via
		if !seen[ns.Via] {
			seen[ns.Via] = true
			addrs = append(addrs, ns.Via)
		}
	}
	// Listen first, so a redirected connect always finds the proxy.
	if err := a.lis.SetExtra(addrs); err != nil {
		a.log.Warn("pod namespace addresses", "error", err)
	}
	if err := a.dp.SetNetnsProxies(via); err != nil {
		a.log.Error("update pod namespace proxy addresses", "error", err)
	}
}

// scanCgroups lists the cgroups under the attach cgroup with their pods.
func (a *Agent) scanCgroups() []workloadsel.Cgroup {
	if a.cg2root == "" {
		return nil
	}
	var out []workloadsel.Cgroup
	_ = filepath.WalkDir(a.cgroup, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil // cgroups vanish while we walk: skip them
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel, err := filepath.Rel(a.cg2root, p)
		if err != nil {
			return nil
		}
		cg := workloadsel.Cgroup{ID: st.Ino, Path: "/" + filepath.ToSlash(rel)}
		if rel == "." {
			cg.Path = "/"
		}
		if uid, ok := identity.PodUIDFromCgroup(cg.Path); ok {
			if a.pods != nil {
				if pod, ok := a.pods.PodByUID(uid); ok {
					cg.Pod = &pod
				}
			}
			if cg.Pod == nil {
				cg.Pod = &audit.Pod{UID: uid, Namespace: audit.Unknown, Name: audit.Unknown, ServiceAccount: audit.Unknown}
			}
		}
		out = append(out, cg)
		return nil
	})
	return out
}
