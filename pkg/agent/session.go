package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/metrics"
	"github.com/intransit/intransit/pkg/redirect"
	"github.com/intransit/intransit/pkg/relay"
	"github.com/intransit/intransit/pkg/upstream"
)

// Session is one proxied connection.
type Session struct {
	ID          string
	Rule        string
	Source      netip.AddrPort
	Destination netip.AddrPort
	Upstream    string
	Start       time.Time
	Process     audit.Process
	TLS         audit.TLSInfo

	client *net.TCPConn
	up     net.Conn
	closed atomic.Bool
}

func (s *Session) abort() {
	if s.closed.CompareAndSwap(false, true) {
		s.client.Close()
		if s.up != nil {
			s.up.Close()
		}
	}
}

// processOf is the workload behind a connect: the kernel's account (pid,
// comm, uid, cgroup) joined with what the agent resolves (executable,
// cgroup path, container, pod).
func (a *Agent) processOf(o redirect.Orig) *audit.Process {
	p := &audit.Process{
		PID: o.PID, TGID: o.PID, Comm: o.Comm, UID: o.UID, GID: o.GID,
		Cgroup: o.CgroupID,
	}
	if a.workloads != nil {
		a.workloads.Resolve(p)
	} else {
		p.CgroupPath = a.cgroups.Path(o.CgroupID)
	}
	return p
}

// countConnection counts a connection by rule and verdict, and by workload
// when metrics.workloadLabels is on.
func (a *Agent) countConnection(rule string, v audit.Verdict, p *audit.Process) {
	a.metrics.Connections.WithLabelValues(rule, string(v)).Inc()
	if w := a.metrics.WorkloadConnections; w != nil {
		w.WithLabelValues(rule, string(v), workloadLabel(p)).Inc()
	}
}

// startSession counts a redirected connection before handing it to its own
// goroutine, so drain (which runs once accepting stopped) waits for it.
func (a *Agent) startSession(c *net.TCPConn, o redirect.Orig) {
	a.active.Add(1)
	go a.handle(c, o)
}

// handle upgrades one redirected connection: dial the original destination
// with TLS, then relay. Any failure closes the client: never plaintext.
func (a *Agent) handle(c *net.TCPConn, o redirect.Orig) {
	defer a.active.Done()

	st := a.state.Load()
	rs := st.rules[o.RuleID]
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	ev := audit.Event{
		Event:        audit.EventSessionStart,
		Source:       netip.AddrPortFrom(src.Addr().Unmap(), src.Port()).String(),
		Destination:  o.Destination.String(),
		Process:      a.processOf(o),
		NetnsCookie:  o.NetnsCookie,
		SocketCookie: o.SocketCookie,
		Session:      audit.NewSessionID(),
		Rule:         unknownRule,
	}
	if rs == nil || (rs.dialer == nil && rs.tunnel == nil) {
		// The rule went away in a reload, or is no longer enforcing.
		ev.Verdict, ev.Reason = audit.VerdictError, "no enforcing rule for this connection (rule removed or changed by a reload)"
		a.fail(c, ev, metrics.ReasonNoRule)
		return
	}
	ev.Rule, ev.Mode = rs.cfg.Name, string(config.ModeEnforce)
	if !slices.Contains(rs.cfg.Ports, int(o.Destination.Port())) {
		// Defence in depth: the kernel said this rule, but the rule does not
		// cover this port (changed by a reload since the connect).
		ev.Verdict, ev.Reason = audit.VerdictError, fmt.Sprintf("rule %s no longer covers port %d", rs.cfg.Name, o.Destination.Port())
		a.fail(c, ev, metrics.ReasonNoRule)
		return
	}

	timeout := st.cfg.Proxy.DialTimeout.Duration + st.cfg.Proxy.HandshakeTimeout.Duration
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	start := time.Now()
	var up net.Conn
	var reason string
	var err error
	if rs.dialer != nil {
		up, reason, err = a.dialTLS(ctx, rs, o, &ev)
	} else {
		up, reason, err = a.dialTunnel(ctx, st, rs, o, &ev)
	}
	cancel()
	a.metrics.HandshakeSeconds.WithLabelValues(rs.cfg.Name).Observe(time.Since(start).Seconds())
	if err != nil {
		ev.Verdict, ev.Reason = audit.VerdictError, reason+": "+err.Error()
		a.fail(c, ev, reason)
		return
	}
	ev.Verdict = audit.VerdictUpgraded
	var peerCert []byte
	if cs, ok := up.(interface{ ConnectionState() tls.ConnectionState }); ok {
		if pcs := cs.ConnectionState().PeerCertificates; len(pcs) > 0 {
			peerCert = pcs[0].Raw
		}
	}
	hooks, rec, err := a.sessionHooks(st, rs, ev, start, peerCert)
	if err != nil {
		up.Close()
		ev.Verdict, ev.Reason = audit.VerdictError, err.Error()
		a.fail(c, ev, metrics.ReasonRecording)
		return
	}
	a.audit.Log(ev)
	a.countConnection(rs.cfg.Name, audit.VerdictUpgraded, ev.Process)

	s := &Session{
		ID: ev.Session, Rule: rs.cfg.Name, Source: src, Destination: o.Destination,
		Upstream: ev.Upstream, Start: start, Process: *ev.Process, TLS: derefTLS(ev.TLS),
		client: c, up: up,
	}
	a.track(s, true)
	active := a.metrics.ActiveSessions.WithLabelValues(rs.cfg.Name)
	active.Inc()
	stats, relayErr := relay.RelayWith(c, up, st.cfg.Proxy.IdleTimeout.Duration, hooks)
	active.Dec()
	a.track(s, false)

	dur := time.Since(start)
	a.metrics.Bytes.WithLabelValues(rs.cfg.Name, "sent").Add(float64(stats.Sent))
	a.metrics.Bytes.WithLabelValues(rs.cfg.Name, "received").Add(float64(stats.Received))
	a.metrics.SessionSeconds.WithLabelValues(rs.cfg.Name).Observe(dur.Seconds())
	end := ev
	end.Time = time.Time{}
	end.Event = audit.EventSessionEnd
	end.SetBytes(stats.Sent, stats.Received)
	end.SetDuration(dur)
	if relayErr != nil {
		end.Reason = relayErr.Error()
	}
	a.finishRecording(rec, end, stats, relayErr)
	a.audit.Log(end)
}

func (a *Agent) track(s *Session, add bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if add {
		a.sessions[s.ID] = s
	} else {
		delete(a.sessions, s.ID)
	}
}

// fail ends a connection that could not be upgraded: reset, audit, count.
func (a *Agent) fail(c *net.TCPConn, ev audit.Event, reason string) {
	_ = c.SetLinger(0)
	c.Close()
	a.audit.Log(ev)
	a.countConnection(ev.Rule, ev.Verdict, ev.Process)
	a.metrics.UpstreamErrors.WithLabelValues(ev.Rule, reason).Inc()
}

// refuse records a connection to the proxy with no redirect entry (threat
// T1): someone dialled the proxy directly, or the entry was evicted.
func (a *Agent) refuse(remote, local netip.AddrPort, err error) {
	a.audit.Log(audit.Event{
		Event:       audit.EventConnect,
		Verdict:     audit.VerdictRefused,
		Rule:        unknownRule,
		Source:      netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()).String(),
		Destination: netip.AddrPortFrom(local.Addr().Unmap(), local.Port()).String(),
		Reason:      err.Error() + ": dialled the proxy directly, or its entry was evicted; nothing was forwarded",
	})
	a.metrics.Connections.WithLabelValues(unknownRule, string(audit.VerdictRefused)).Inc()
}

// onEvent turns datapath connect events into audit lines. Redirected connects
// are reported by the proxy when it upgrades them (with TLS details), so only
// audit, deny and datapath errors are written here.
func (a *Agent) onEvent(e redirect.Event) {
	var v audit.Verdict
	var reason string
	switch e.Verdict {
	case redirect.VerdictAudit:
		v = audit.VerdictAudit
	case redirect.VerdictDeny:
		v, reason = audit.VerdictDenied, "deny rule: connect refused with EPERM"
	case redirect.VerdictError:
		v, reason = audit.VerdictError, "original-destination map update failed: connect refused with EPERM (fail closed)"
	case redirect.VerdictIngressAudit, redirect.VerdictIngressDrop:
		a.onIngress(e)
		return
	default:
		return
	}
	rule, mode := unknownRule, ""
	if rs := a.state.Load().rules[e.RuleID]; rs != nil {
		rule, mode = rs.cfg.Name, string(rs.cfg.Mode)
	}
	p := a.processOf(e.Orig)
	a.audit.Log(audit.Event{
		Event:        audit.EventConnect,
		Verdict:      v,
		Rule:         rule,
		Mode:         mode,
		Destination:  e.Destination.String(),
		Process:      p,
		NetnsCookie:  e.NetnsCookie,
		SocketCookie: e.SocketCookie,
		Reason:       reason,
	})
	a.countConnection(rule, v, p)
}

func derefTLS(t *audit.TLSInfo) audit.TLSInfo {
	if t == nil {
		return audit.TLSInfo{}
	}
	return *t
}

// dialTLS originates TLS to the destination itself (upstream.tls).
func (a *Agent) dialTLS(ctx context.Context, rs *ruleState, o redirect.Orig, ev *audit.Event) (net.Conn, string, error) {
	up, err := rs.dialer.Dial(ctx, o.Destination)
	if err != nil {
		return nil, upstream.Reason(err), err
	}
	version, cipher := upstream.ConnectionState(up)
	cs := up.ConnectionState()
	ev.Upstream = up.RemoteAddr().String()
	ev.TLS = &audit.TLSInfo{Version: version, Cipher: cipher, ServerName: cs.ServerName, Resumed: cs.DidResume}
	if len(cs.PeerCertificates) > 0 {
		ev.TLS.PeerSubject = cs.PeerCertificates[0].Subject.String()
	}
	return up, "", nil
}
