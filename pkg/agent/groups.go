package agent

import (
	"context"
	"io/fs"
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
