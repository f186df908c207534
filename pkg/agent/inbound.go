package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/auth"
	"github.com/intransit/intransit/pkg/certfile"
	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/metrics"
	"github.com/intransit/intransit/pkg/redirect"
	"github.com/intransit/intransit/pkg/relay"
	"github.com/intransit/intransit/pkg/sockmark"
	"github.com/intransit/intransit/pkg/tunnel"
)

// inboundState is the swappable part of the inbound side: services and
// their policies (the listener and verifier stay across reloads).
type inboundState struct {
	byPort map[uint16]*inboundService
}

type inboundService struct {
	cfg   config.Service
	allow []auth.Allow
}

func buildInbound(in *config.Inbound) *inboundState {
	st := &inboundState{byPort: make(map[uint16]*inboundService)}
	if in == nil {
		return st
	}
	for _, s := range in.Services {
		is := &inboundService{cfg: s}
		for _, a := range s.Allow {
			is.allow = append(is.allow, auth.Allow{
				Issuer: a.Issuer, Subject: a.Subject, Audience: a.Audience, Claims: a.Claims,
				PeerSubject: a.PeerSubject, PeerSAN: a.PeerSAN,
			})
		}
		st.byPort[uint16(s.Port)] = is
	}
	return st
}

// datapathServices are the ports the ingress program protects.
func datapathServices(in *config.Inbound) []redirect.Service {
	if in == nil {
		return nil
	}
	out := make([]redirect.Service, 0, len(in.Services))
	for _, s := range in.Services {
		m := redirect.ModeEnforce
		if s.Mode == config.ModeAudit {
			m = redirect.ModeAudit
		}
		out = append(out, redirect.Service{ID: ruleID(s.Name), Port: uint16(s.Port), Mode: m})
	}
	return out
}

// startInbound serves tunnel streams for local services until ctx ends.
func (a *Agent) startInbound(ctx context.Context, in *config.Inbound, mark uint32) (func(), error) {
	certs, err := certfile.New(in.TLS.CertFile, in.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("inbound.tls: %w", err)
	}
	tc := &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS13}
	if in.TLS.ClientCAFile != "" {
		pem, err := os.ReadFile(in.TLS.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("inbound.tls.clientCAFile: %w", err)
		}
		tc.ClientCAs = x509.NewCertPool()
		if !tc.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("inbound.tls.clientCAFile %s: no PEM certificate", in.TLS.ClientCAFile)
		}
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if in.OIDC != nil {
		a.verifier, err = auth.NewVerifier(ctx, auth.VerifierConfig{
			Issuer: in.OIDC.Issuer, Audience: in.OIDC.Audience, JWKSFile: in.OIDC.JWKSFile, Logger: a.log,
		})
		if err != nil {
			return nil, fmt.Errorf("inbound.oidc: %w", err)
		}
	}
	ln, err := net.Listen("tcp", in.Listen)
	if err != nil {
		return nil, fmt.Errorf("inbound.listen %q: %w", in.Listen, err)
	}
	a.forward = net.Dialer{Timeout: 5 * time.Second, Control: sockmark.Control(mark)}
	srv := tunnel.NewServer(tunnel.ServerOptions{TLS: tc, Handler: a.serveInbound, Logger: a.log})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && ctx.Err() == nil {
			a.log.Error("inbound tunnel listener stopped", "error", err)
		}
	}()
	a.inboundAddr = ln.Addr()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = srv.Close()
		<-done
	}, nil
}

// serveInbound authenticates and authorizes one CONNECT, then relays it to
// the local executor over loopback. Only configured services are ever
// dialled, whatever the caller asks for (threat T2).
func (a *Agent) serveInbound(ctx context.Context, r *tunnel.Request, accept func() (net.Conn, error)) error {
	st := a.inbound.Load()
	ev := audit.Event{
		Event:       audit.EventSessionStart,
		Source:      r.RemoteAddr.String(),
		Destination: r.Target,
		Session:     audit.NewSessionID(),
		Rule:        unknownRule,
		Identity:    &audit.Identity{Source: r.Header.Get(HeaderSource)},
	}
	if len(r.PeerCerts) > 0 {
		leaf := r.PeerCerts[0]
		ev.Identity.PeerSubject = leaf.Subject.String()
		ev.Identity.PeerSANs = sans(leaf)
	}
	refuse := func(status int, reason, label string) error {
		ev.Verdict, ev.Reason = audit.VerdictRefused, reason
		a.audit.Log(ev)
		a.metrics.Connections.WithLabelValues(ev.Rule, string(audit.VerdictRefused)).Inc()
		a.metrics.UpstreamErrors.WithLabelValues(ev.Rule, label).Inc()
		return &tunnel.Refusal{Status: status, Reason: reason}
	}

	_, portStr, err := net.SplitHostPort(r.Target)
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil {
		return refuse(http.StatusBadRequest, fmt.Sprintf("target %q is not host:port", r.Target), reasonInboundTarget)
	}
	svc := st.byPort[uint16(port)]
	if svc == nil {
		return refuse(http.StatusForbidden, fmt.Sprintf("no local service for port %d: only configured services are forwarded", port), reasonInboundTarget)
	}
	ev.Rule, ev.Service, ev.Mode = svc.cfg.Name, svc.cfg.Name, "tunnel"

	id := auth.Identity{}
	if len(r.PeerCerts) > 0 {
		id.Peer = r.PeerCerts[0]
	}
	if authz := r.Header.Get("Authorization"); authz != "" {
		tok, ok := strings.CutPrefix(authz, "Bearer ")
		if !ok || a.verifier == nil {
			return refuse(http.StatusUnauthorized, "token rejected: bearer token not accepted here (no inbound.oidc)", "token_unsupported")
		}
		claims, err := a.verifier.Verify(ctx, tok)
		if err != nil {
			return refuse(http.StatusUnauthorized, "token rejected: "+err.Error(), "token_"+auth.ReasonOf(err))
		}
		id.Claims = claims
		ev.Identity.Subject, ev.Identity.Issuer = claims.Subject, claims.Issuer
	}
	if ok, _ := auth.Allowed(svc.allow, id); !ok {
		who := "an anonymous caller"
		if id.Claims != nil {
			who = fmt.Sprintf("token subject %q", id.Claims.Subject)
		} else if id.Peer != nil {
			who = fmt.Sprintf("certificate %q", id.Peer.Subject.String())
		}
		return refuse(http.StatusForbidden, fmt.Sprintf("%s is not allowed by services[%s].allow", who, svc.cfg.Name), "policy")
	}

	start := time.Now()
	fwd, err := a.forward.DialContext(ctx, "tcp", svc.cfg.Forward)
	if err != nil {
		ev.Verdict, ev.Reason = audit.VerdictError, "executor unreachable: "+err.Error()
		a.audit.Log(ev)
		a.metrics.Connections.WithLabelValues(ev.Rule, string(audit.VerdictError)).Inc()
		a.metrics.UpstreamErrors.WithLabelValues(ev.Rule, "forward_error").Inc()
		return &tunnel.Refusal{Status: http.StatusBadGateway, Reason: "executor unreachable"}
	}
	stream, err := accept()
	if err != nil {
		fwd.Close()
		return err
	}
	ev.Upstream = svc.cfg.Forward
	if r.TLS != nil {
		ev.TLS = &audit.TLSInfo{Version: tls.VersionName(r.TLS.Version), Cipher: tls.CipherSuiteName(r.TLS.CipherSuite), Resumed: r.TLS.DidResume}
	}
	ev.Verdict = audit.VerdictUpgraded
	a.audit.Log(ev)
	a.metrics.Connections.WithLabelValues(ev.Rule, string(audit.VerdictUpgraded)).Inc()
	active := a.metrics.ActiveSessions.WithLabelValues(ev.Rule)
	active.Inc()
	a.active.Add(1)
	stats, rerr := relay.Relay(stream, fwd, a.state.Load().cfg.Proxy.IdleTimeout.Duration)
	a.active.Done()
	active.Dec()
	dur := time.Since(start)
	// As on the outbound side: sent is caller → executor.
	a.metrics.Bytes.WithLabelValues(ev.Rule, metrics.DirectionSent).Add(float64(stats.Sent))
	a.metrics.Bytes.WithLabelValues(ev.Rule, metrics.DirectionReceived).Add(float64(stats.Received))
	end := ev
	end.Time, end.Event = time.Time{}, audit.EventSessionEnd
	end.SetBytes(stats.Sent, stats.Received)
	end.SetDuration(dur)
	// x/net cannot half-close a server stream: an executor that closes
	// first (HTTP/1.0 style) ends both directions, after every byte it sent
	// was delivered. That is a normal end, not an error.
	if rerr != nil && !errors.Is(rerr, tunnel.ErrServerHalfClose) {
		end.Reason = rerr.Error()
	}
	a.audit.Log(end)
	return nil
}

const reasonInboundTarget = "unlisted_target"

func sans(c *x509.Certificate) []string {
	var out []string
	out = append(out, c.DNSNames...)
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

// onIngress reports plaintext that reached a protected service port from
// off the host (threat T15).
func (a *Agent) onIngress(e redirect.Event) {
	name := unknownRule
	mode := ""
	if in := a.state.Load().cfg.Inbound; in != nil {
		for _, s := range in.Services {
			if ruleID(s.Name) == e.ServiceID {
				name, mode = s.Name, string(s.Mode)
			}
		}
	}
	v, reason := audit.VerdictAudit, "plaintext from off-host to an inbound service (audit mode: passed)"
	if e.Verdict == redirect.VerdictIngressDrop {
		v, reason = audit.VerdictDenied, "plaintext from off-host to an inbound service: dropped"
	}
	a.audit.Log(audit.Event{
		Event:       "ingress",
		Verdict:     v,
		Rule:        name,
		Service:     name,
		Mode:        mode,
		Source:      e.Peer.String(),
		Destination: fmt.Sprintf(":%d", e.LocalPort),
		Reason:      reason,
	})
	a.metrics.Connections.WithLabelValues(name, string(v)).Inc()
}
