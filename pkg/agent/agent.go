// Package agent wires the pieces together: datapath (redirect) → listener →
// upstream → relay, with audit and metrics on the side.
package agent

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/auth"
	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/identity"
	"github.com/intransit/intransit/pkg/listener"
	"github.com/intransit/intransit/pkg/metrics"
	"github.com/intransit/intransit/pkg/podnet"
	"github.com/intransit/intransit/pkg/recording"
	"github.com/intransit/intransit/pkg/redact"
	"github.com/intransit/intransit/pkg/redirect"
	"github.com/intransit/intransit/pkg/upstream"
	"github.com/intransit/intransit/pkg/workloadsel"
)

// unknownRule labels metrics and events that no rule owns (a direct dial to
// the proxy, an entry from a rule removed by a reload).
const unknownRule = "unknown"

// ruleState is one configured rule ready to serve.
type ruleState struct {
	cfg    config.Rule
	dialer *upstream.Dialer // enforce rules with upstream.tls
	tunnel *tunnelUpstream  // enforce rules with upstream.tunnel
	inject *auth.FileSource // rules with inject: the held credential
}

// state is what a reload swaps atomically.
type state struct {
	cfg    *config.Config
	rules  map[uint32]*ruleState // by datapath rule id
	tokens auth.TokenSource      // identity.token; nil if none
	// redactor applies the redaction section to recordings.
	redactor *redact.Redactor
}

// Agent is a running intransit agent.
type Agent struct {
	log     *slog.Logger
	audit   *audit.Logger
	metrics *metrics.Metrics
	state   atomic.Pointer[state]

	dp     *redirect.Datapath
	lis    *listener.Listener
	ready  atomic.Bool
	active sync.WaitGroup

	mu       sync.Mutex
	sessions map[string]*Session

	started time.Time
	cgroup  string

	// Inbound side (executor hosts).
	inbound     atomic.Pointer[inboundState]
	verifier    *auth.Verifier
	forward     net.Dialer
	inboundAddr net.Addr

	cgroups   *identity.Cgroups
	workloads *identity.Workloads
	pods      *identity.Pods // node pod informer (identity.pods)
	kube      kubernetes.Interface
	podTokens *identity.PodTokens // identity.token.kubernetes
	metricsAt net.Addr

	// Workload groups (rules[].workloads): syncMu orders the periodic
	// rescan against reloads, so neither writes a stale rule table.
	groups  *workloadsel.Table
	podnet  *podnet.Finder // pod network namespaces (nil if unavailable)
	syncMu  sync.Mutex
	cg2root string

	// Session recordings (rules[].record); nil until a rule records.
	store      *recording.Store
	storeShape string
	node       string
}

// Options are the parts of an agent that tests and the CLI provide.
type Options struct {
	Logger *slog.Logger
	// Audit overrides the audit sink named in the config (tests).
	Audit *audit.Logger
}

// New validates what can be validated without privileges: the upstream
// dialers (certificate files) and the audit sink.
func New(cfg *config.Config, o Options) (*Agent, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := buildState(cfg, nil)
	if err != nil {
		return nil, err
	}
	a := &Agent{log: log, sessions: make(map[string]*Session), started: time.Now()}
	a.state.Store(st)
	a.inbound.Store(buildInbound(cfg.Inbound))
	a.audit = o.Audit
	if a.audit == nil {
		if a.audit, err = audit.Open(cfg.Audit.File); err != nil {
			return nil, fmt.Errorf("audit.file %q: %w", cfg.Audit.File, err)
		}
	}
	a.audit.SetErrorLog(log)
	a.metrics = metrics.New(ruleNames(cfg))
	a.metrics.AddRules([]string{unknownRule})
	a.metrics.SetAuditErrorsSource(a.audit.Errors)
	if cfg.Metrics.WorkloadLabels {
		a.metrics.EnableWorkloadLabels()
	}
	a.node, _ = os.Hostname()
	return a, nil
}

func ruleNames(cfg *config.Config) []string {
	names := make([]string, 0, len(cfg.Rules))
	for _, r := range cfg.Rules {
		names = append(names, r.Name)
	}
	if cfg.Inbound != nil {
		for _, s := range cfg.Inbound.Services {
			names = append(names, s.Name)
		}
	}
	return names
}

// inboundShape is the part of inbound that needs a restart to change.
func inboundShape(in *config.Inbound) string {
	if in == nil {
		return ""
	}
	oidc := ""
	if in.OIDC != nil {
		oidc = in.OIDC.Issuer + "|" + in.OIDC.Audience + "|" + in.OIDC.JWKSFile
	}
	return strings.Join([]string{in.Listen, in.Cgroup, in.TLS.CertFile, in.TLS.KeyFile, in.TLS.ClientCAFile, oidc}, "|")
}

// ruleID names a rule in the kernel. It is derived from the rule's name, not
// its position, so a reload that reorders rules cannot hand a connection
// redirected under one rule to another rule's upstream.
func ruleID(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	if id := h.Sum32(); id != 0 {
		return id
	}
	return 1
}

// buildState prepares everything a config needs to serve. Tunnel clients of
// unchanged rules are carried over from prev so their pooled connections
// survive a reload.
func buildState(cfg *config.Config, prev *state) (*state, error) {
	st := &state{cfg: cfg, rules: make(map[uint32]*ruleState, len(cfg.Rules))}
	tokens, err := newTokenSource(context.Background(), cfg.Identity)
	if err != nil {
		return nil, err
	}
	st.tokens = tokens
	if st.redactor, err = redact.New(cfg.RedactPolicy()); err != nil {
		return nil, fmt.Errorf("redaction: %w", err)
	}
	for i, r := range cfg.Rules {
		id := ruleID(r.Name)
		if prev, dup := st.rules[id]; dup {
			return nil, fmt.Errorf("rules[%d].name %q: its internal id collides with rule %q; rename one of them", i, r.Name, prev.cfg.Name)
		}
		rs := &ruleState{cfg: r}
		if rs.inject, err = newInjectSource(r.Inject); err != nil {
			return nil, fmt.Errorf("rules[%d] (%s).%w", i, r.Name, err)
		}
		if r.Mode == config.ModeEnforce && r.Upstream.TLS != nil {
			d, err := upstream.NewDialer(upstream.Options{
				TLS:              *r.Upstream.TLS,
				Mark:             cfg.BPF.Mark,
				DialTimeout:      cfg.Proxy.DialTimeout.Duration,
				HandshakeTimeout: cfg.Proxy.HandshakeTimeout.Duration,
			})
			if err != nil {
				return nil, fmt.Errorf("rules[%d] (%s).upstream.tls: %w", i, r.Name, err)
			}
			rs.dialer = d
		}
		if r.Mode == config.ModeEnforce && r.Upstream.Tunnel != nil {
			if prev != nil {
				if old := prev.rules[id]; old != nil && old.tunnel != nil && old.tunnel.cfg.Equal(*r.Upstream.Tunnel) {
					rs.tunnel = old.tunnel
				}
			}
			if rs.tunnel == nil {
				t, err := newTunnelUpstream(*r.Upstream.Tunnel, cfg.BPF.Mark, cfg)
				if err != nil {
					return nil, fmt.Errorf("rules[%d] (%s).upstream.tunnel: %w", i, r.Name, err)
				}
				rs.tunnel = t
			}
		}
		st.rules[id] = rs
	}
	return st, nil
}

// datapathRules turns config rules into kernel selectors.
func datapathRules(cfg *config.Config) []redirect.Rule {
	out := make([]redirect.Rule, 0, len(cfg.Rules))
	for _, r := range cfg.Rules {
		dr := redirect.Rule{ID: ruleID(r.Name), Prefixes: r.Prefixes}
		switch r.Mode {
		case config.ModeAudit:
			dr.Mode = redirect.ModeAudit
		case config.ModeDeny:
			dr.Mode = redirect.ModeDeny
		default:
			dr.Mode = redirect.ModeEnforce
		}
		for _, p := range r.Ports {
			dr.Ports = append(dr.Ports, uint16(p))
		}
		out = append(out, dr)
	}
	return out
}

// Metrics exposes the agent's metrics (tests, API).
func (a *Agent) Metrics() *metrics.Metrics { return a.metrics }

// Ready reports nil once programs are attached and listeners are up.
func (a *Agent) Ready() error {
	if !a.ready.Load() {
		return errors.New("not ready: datapath or proxy listener not up yet")
	}
	return nil
}

// Run brings the agent up and serves until ctx is done. Order matters for
// fail-closed: the listener is bound before programs attach (so redirected
// connects find it), and on shutdown the listener closes while the pinned
// programs stay, so enforced connects are refused rather than leaked.
func (a *Agent) Run(ctx context.Context) error {
	cfg := a.state.Load().cfg
	cg, err := redirect.ResolveCgroup(cfg.Cgroup)
	if err != nil {
		return err
	}
	a.cgroup = cg
	// The mount holding the attach cgroup: in a pod that is the host's
	// hierarchy (e.g. /host/sys/fs/cgroup), not the container's own.
	if root, err := redirect.Cgroup2RootOf(cg); err == nil {
		a.cgroups = identity.NewCgroups(root)
		a.cg2root = root
	} else if root, err := redirect.Cgroup2Root(); err == nil {
		a.cgroups = identity.NewCgroups(root)
		a.cg2root = root
	}
	if err := a.startPods(ctx, cfg); err != nil {
		return err
	}
	if t := cfg.Identity.Token; t != nil && t.Kubernetes != nil {
		if err := a.startPodTokens(ctx, t.Kubernetes); err != nil {
			return err
		}
	}
	var lookup identity.PodLookup
	if a.pods != nil {
		lookup = a.pods
	} else if cfg.NeedsPods() {
		return errNoPods
	}
	a.workloads = identity.NewWorkloads(a.cgroups, lookup, "/proc")
	if a.podnet, err = podnet.NewFinder("/proc", nil); err != nil {
		a.log.Warn("pod network namespaces will not be discovered; pods use proxy.podAddress", "error", err)
	}
	if err := a.openStore(cfg); err != nil {
		return err
	}

	if cfg.Metrics.Listen != "off" {
		a.metricsAt, err = metrics.Serve(ctx, cfg.Metrics.Listen, a.metrics, a.Ready, a.log)
		if err != nil {
			return fmt.Errorf("metrics.listen: %w", err)
		}
	}

	var podAddr netip.Addr
	if cfg.Proxy.PodAddress != "" {
		podAddr = netip.MustParseAddr(cfg.Proxy.PodAddress) // validated by config
	}
	a.lis, err = listener.Listen(uint16(cfg.Proxy.Port), podAddr, a.log)
	if err != nil {
		return err
	}
	defer a.lis.Close()

	// stopInbound sends GOAWAY and waits for tunnel streams; it runs before
	// the audit trail closes so their session_end lines are written.
	stopInbound := func() {}
	var ingressCgroup string
	if cfg.Inbound != nil {
		if ingressCgroup, err = redirect.ResolveCgroup(cfg.Inbound.Cgroup); err != nil {
			return fmt.Errorf("inbound.cgroup: %w", err)
		}
	}
	// Rules and workload groups are computed before the datapath loads, so
	// a restart updates the pinned tables in one ordered pass; group ids
	// continue above the pinned ones.
	a.groups = workloadsel.NewTable(redirect.PinnedMaxGroup(cfg.BPF.PinPath))
	var cgs []workloadsel.Cgroup
	if cfg.HasWorkloads() {
		cgs = a.scanCgroups()
	}
	groups, dpRules := a.groups.Compute(workloadRules(cfg), cgs)
	a.dp, err = redirect.Install(redirect.Options{
		PinPath:       cfg.BPF.PinPath,
		Cgroup:        cg,
		IngressCgroup: ingressCgroup,
		PodProxyIP:    podAddr,
		MapSize:       cfg.BPF.MapSize,
		Mark:          cfg.BPF.Mark,
		ProxyPort:     uint16(cfg.Proxy.Port),
		Groups:        groups,
		Logger:        a.log,
	}, dpRules)
	if err != nil {
		return err
	}
	defer a.dp.Close()
	if err := a.dp.SetServices(datapathServices(cfg.Inbound)); err != nil {
		return err
	}
	if cfg.Inbound != nil {
		stop, err := a.startInbound(ctx, cfg.Inbound, cfg.BPF.Mark)
		if err != nil {
			return err
		}
		stopInbound = stop
	}
	a.metrics.SetMapFillSource(a.mapFill)
	a.log.Info("datapath attached", "cgroup", cg, "pinPath", cfg.BPF.PinPath, "reusedPinnedLinks", a.dp.Reused)

	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(3)
	go func() {
		defer wg.Done()
		a.watchGroups(ctx)
	}()
	go func() {
		defer wg.Done()
		if err := a.dp.ReadEvents(ctx, a.onEvent, a.metrics.EventsLost.Inc); err != nil {
			errc <- err
		}
	}()
	go func() {
		defer wg.Done()
		if err := a.lis.Serve(ctx, a.dp, a.startSession, a.refuse); err != nil {
			errc <- err
		}
	}()
	if cfg.API.Socket != "" && cfg.API.Socket != "off" {
		stop, err := a.serveAPI(ctx, cfg.API.Socket)
		if err != nil {
			a.log.Warn("local API not available; intransit status will inspect pins only", "socket", cfg.API.Socket, "error", err)
		} else {
			defer stop()
		}
	}
	a.syncPodNamespaces()
	a.ready.Store(true)
	a.log.Info("agent ready", "proxy", a.lis.Addrs(), "rules", len(cfg.Rules))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	a.ready.Store(false)
	a.lis.Close()
	stopInbound()
	// proxy.drainTimeout of the configuration in service (reloadable).
	a.drain(a.state.Load().cfg.Proxy.DrainTimeout.Duration)
	wg.Wait()
	if a.store != nil {
		// Releases the directory lock for the next agent.
		_ = a.store.Close()
	}
	a.audit.Close()
	return runErr
}

// drain waits up to grace for active sessions to finish, then cuts the rest.
func (a *Agent) drain(grace time.Duration) {
	done := make(chan struct{})
	go func() { a.active.Wait(); close(done) }()
	a.mu.Lock()
	n := len(a.sessions)
	a.mu.Unlock()
	if n > 0 {
		a.log.Info("draining sessions", "sessions", n, "drainTimeout", grace.String())
	}
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	a.mu.Lock()
	for _, s := range a.sessions {
		s.abort()
	}
	n = len(a.sessions)
	a.mu.Unlock()
	a.log.Warn("drain timeout: cutting the remaining sessions", "sessions", n, "drainTimeout", grace.String())
	<-done
}

func (a *Agent) mapFill() ([]metrics.MapFill, error) {
	fills, err := a.dp.MapFill()
	if err != nil {
		return nil, err
	}
	out := make([]metrics.MapFill, 0, len(fills))
	for _, f := range fills {
		out = append(out, metrics.MapFill{Map: f.Map, Entries: f.Entries, Capacity: f.Capacity})
	}
	return out, nil
}

// Reload applies a new configuration. On any error the running one stays.
// Keys that shape the datapath itself need a restart and are reported.
func (a *Agent) Reload(cfg *config.Config) error {
	prev := a.state.Load()
	old := prev.cfg
	st, err := buildState(cfg, prev)
	if err != nil {
		return fmt.Errorf("reload refused, keeping the running config: %w", err)
	}
	var restart []string
	if cfg.Proxy.Port != old.Proxy.Port || cfg.Proxy.PodAddress != old.Proxy.PodAddress {
		restart = append(restart, "proxy.port/podAddress")
	}
	if cfg.BPF != old.BPF {
		restart = append(restart, "bpf")
	}
	if cfg.Cgroup != old.Cgroup {
		restart = append(restart, "cgroup")
	}
	if cfg.Metrics != old.Metrics {
		restart = append(restart, "metrics")
	}
	if inboundShape(cfg.Inbound) != inboundShape(old.Inbound) {
		restart = append(restart, "inbound.listen/tls/oidc/cgroup")
	}
	if a.store != nil && recordingsShape(cfg) != a.storeShape {
		restart = append(restart, "recordings.dir/maxSessionSize/maxTotalSize/keyFile")
	}
	if cfg.Identity.Pods != old.Identity.Pods || cfg.Metrics.WorkloadLabels != old.Metrics.WorkloadLabels {
		restart = append(restart, "identity.pods/metrics.workloadLabels")
	}
	if len(restart) > 0 {
		return fmt.Errorf("reload refused, keeping the running config: %v change only with a restart", restart)
	}
	if cfg.NeedsPods() && a.pods == nil && a.dp != nil {
		return fmt.Errorf("reload refused, keeping the running config: %w", errNoPods)
	}
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	if a.dp != nil {
		// A rule that starts recording needs the store before it serves.
		if err := a.openStore(cfg); err != nil {
			return fmt.Errorf("reload refused, keeping the running config: %w", err)
		}
		if err := a.syncDatapath(cfg); err != nil {
			return fmt.Errorf("reload refused: %w", err)
		}
	}
	if a.dp != nil {
		if err := a.dp.SetServices(datapathServices(cfg.Inbound)); err != nil {
			return fmt.Errorf("reload refused: %w", err)
		}
	}
	a.metrics.AddRules(ruleNames(cfg))
	a.inbound.Store(buildInbound(cfg.Inbound))
	a.state.Store(st)
	a.log.Info("configuration reloaded", "rules", len(cfg.Rules))
	return nil
}

// errNoPods refuses pod selectors that could never match: an enforce rule
// for a namespace would silently enforce nothing.
var errNoPods = errors.New("rules[].workloads select pods by namespace or labels, but the pod informer is not running (identity.pods is off, or auto outside a cluster)")

// ReopenAudit reopens the audit file (logrotate).
func (a *Agent) ReopenAudit() error { return a.audit.Reopen() }
