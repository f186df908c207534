package agent

import (
	"encoding/json"
	"os"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"

	"github.com/intransit/intransit/pkg/api"
	"github.com/intransit/intransit/pkg/redirect"
	"github.com/intransit/intransit/pkg/version"
)

// Status gathers what `intransit status` shows.
func (a *Agent) Status() api.Status {
	st := a.state.Load()
	s := api.Status{
		Version: version.Version, PID: os.Getpid(), Started: a.started, Ready: a.ready.Load(),
		Cgroup: a.cgroup, PinPath: st.cfg.BPF.PinPath, Connections: map[string]uint64{},
	}
	if a.lis != nil {
		for _, ad := range a.lis.Addrs() {
			s.Proxy = append(s.Proxy, ad.String())
		}
	}
	if a.metricsAt != nil {
		s.Metrics = a.metricsAt.String()
	}
	if progs, err := redirect.Pinned(st.cfg.BPF.PinPath); err == nil {
		for _, p := range progs {
			s.Programs = append(s.Programs, api.Program{Name: p.Name, Pinned: p.Path, Cgroup: p.CgroupID, ProgID: p.ProgID})
		}
	}
	for _, r := range st.cfg.Rules {
		ar := api.Rule{Name: r.Name, Mode: string(r.Mode), Ports: r.Ports, Destinations: r.Destinations}
		if t := r.Upstream.TLS; t != nil {
			ar.Upstream = "tls"
		}
		s.Rules = append(s.Rules, ar)
	}
	if a.dp != nil {
		s.Datapath, _ = a.dp.Stats()
		if fills, err := a.dp.MapFill(); err == nil {
			for _, f := range fills {
				s.Maps = append(s.Maps, api.MapFill{Map: f.Map, Entries: f.Entries, Capacity: f.Capacity})
			}
		}
	}
	if mfs, err := a.metrics.Registry.Gather(); err == nil {
		for _, mf := range mfs {
			if mf.GetName() != "intransit_connections_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if v := m.GetCounter().GetValue(); v > 0 {
					s.Connections[labels(m)] = uint64(v)
				}
			}
		}
	}
	a.mu.Lock()
	for _, ss := range a.sessions {
		s.ActiveSessions = append(s.ActiveSessions, api.Session{
			ID: ss.ID, Rule: ss.Rule, Source: ss.Source.String(), Destination: ss.Destination.String(),
			Upstream: ss.Upstream, Started: ss.Start, PID: ss.Process.PID, Comm: ss.Process.Comm,
			TLS: ss.TLS.Version + " " + ss.TLS.Cipher,
		})
	}
	a.mu.Unlock()
	slices.SortFunc(s.ActiveSessions, func(x, y api.Session) int { return x.Started.Compare(y.Started) })
	for _, line := range a.audit.Recent() {
		s.RecentAudit = append(s.RecentAudit, json.RawMessage(strings.TrimSpace(string(line))))
	}
	if n := len(s.RecentAudit); n > 20 {
		s.RecentAudit = s.RecentAudit[n-20:]
	}
	return s
}

func labels(m *dto.Metric) string {
	var rule, verdict string
	for _, l := range m.GetLabel() {
		switch l.GetName() {
		case "rule":
			rule = l.GetValue()
		case "verdict":
			verdict = l.GetValue()
		}
	}
	return rule + "/" + verdict
}
