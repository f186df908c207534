package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"

	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/auth"
	"github.com/intransit/intransit/pkg/certfile"
	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/identity"
	"github.com/intransit/intransit/pkg/redirect"
	"github.com/intransit/intransit/pkg/tunnel"
)

// Reason labels of tunnel failures, next to upstream.Reason's.
const (
	reasonToken         = "token_error"
	reasonTunnelRefused = "tunnel_refused"
	reasonTunnelDial    = "tunnel_error"
)

// Headers carried on each CONNECT besides Authorization.
const (
	// HeaderSource is the outbound agent's account of the workload that
	// connected (from the kernel): informative, the token is the proof.
	HeaderSource = "Intransit-Source"
)

// tunnelUpstream carries one rule's connections to peer agents.
type tunnelUpstream struct {
	cfg    config.Tunnel
	client *tunnel.Client
}

func newTunnelUpstream(t config.Tunnel, mark uint32, cfg *config.Config) (*tunnelUpstream, error) {
	tc := &tls.Config{ServerName: t.ServerName, MinVersion: tls.VersionTLS13}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("caFile: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("caFile %s: no PEM certificate", t.CAFile)
		}
	}
	if t.CertFile != "" {
		r, err := certfile.New(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, err
		}
		tc.GetClientCertificate = r.GetClientCertificate
	}
	return &tunnelUpstream{cfg: t, client: tunnel.NewClient(tunnel.ClientOptions{
		TLS:         tc,
		Mark:        mark,
		DialTimeout: cfg.Proxy.DialTimeout.Duration + cfg.Proxy.HandshakeTimeout.Duration,
		SingleUse:   !t.Pools(),
	})}, nil
}

// peerFor is where the agent for dst listens: a peers[] entry, else the
// destination itself on the tunnel port.
func (t *tunnelUpstream) peerFor(cfg *config.Config, dst netip.Addr) netip.AddrPort {
	if p, ok := cfg.PeerFor(dst); ok {
		return p
	}
	return netip.AddrPortFrom(dst.Unmap(), uint16(t.cfg.Port))
}

// newTokenSource builds identity.token; nil when none is configured.
func newTokenSource(ctx context.Context, id config.Identity) (auth.TokenSource, error) {
	t := id.Token
	switch {
	case t == nil:
		return nil, nil
	case t.File != "":
		return &lazyFileSource{path: t.File}, nil
	case t.ClientCredentials != nil:
		cc := t.ClientCredentials
		return auth.NewClientCredentialsSource(ctx, auth.ClientCredentials{
			Issuer: cc.Issuer, TokenURL: cc.TokenURL, ClientID: cc.ClientID,
			ClientSecretFile: cc.ClientSecretFile, Scopes: cc.Scopes, Audience: cc.Audience,
		})
	case t.Kubernetes != nil:
		// Per pod, not per host: served by Agent.podTokens (started in Run).
		return nil, nil
	}
	return nil, nil
}

// lazyFileSource tolerates a token file that another agent writes after we
// start: it is opened on first use, then reloaded on change by FileSource.
type lazyFileSource struct {
	path string
	src  *auth.FileSource
}

func (l *lazyFileSource) Token(ctx context.Context) (string, error) {
	if l.src == nil {
		s, err := auth.NewFileSource(l.path)
		if err != nil {
			return "", err
		}
		l.src = s
	}
	return l.src.Token(ctx)
}

// dialTunnel opens a CONNECT stream for one redirected connection. ev gets
// the identity this host presented.
func (a *Agent) dialTunnel(ctx context.Context, st *state, rs *ruleState, o redirect.Orig, ev *audit.Event) (net.Conn, string, error) {
	peer := rs.tunnel.peerFor(st.cfg, o.Destination.Addr())
	ev.Upstream = "tunnel://" + peer.String()
	hdr := http.Header{}
	src := url.Values{}
	src.Set("pid", fmt.Sprint(o.PID))
	src.Set("uid", fmt.Sprint(o.UID))
	src.Set("comm", o.Comm)
	if ev.Process != nil && ev.Process.CgroupPath != "" {
		src.Set("cgroup", ev.Process.CgroupPath)
	}
	// url.Values encoding keeps workload-controlled strings (comm) from
	// breaking the header (threat T17).
	hdr.Set(HeaderSource, src.Encode())
	ev.Identity = &audit.Identity{Source: src.Encode()}
	if t := st.cfg.Identity.Token; t != nil && t.Kubernetes != nil {
		if a.podTokens == nil {
			return nil, reasonToken, errors.New("workload token: identity.token.kubernetes is set but the pod resolver is not running")
		}
		tok, pod, err := a.podTokens.TokenForCgroup(ctx, o.CgroupID)
		if err != nil {
			return nil, reasonToken, fmt.Errorf("workload token: %w", err)
		}
		hdr.Set("Authorization", "Bearer "+tok)
		src.Set("pod", pod.Namespace+"/"+pod.Name)
		src.Set("serviceaccount", pod.ServiceAccount)
		hdr.Set(HeaderSource, src.Encode())
		ev.Identity.Source = src.Encode()
		ev.Identity.Subject, ev.Identity.Issuer = unverifiedSubject(tok)
	} else if st.tokens != nil {
		tok, err := st.tokens.Token(ctx)
		if err != nil {
			return nil, reasonToken, fmt.Errorf("workload token: %w", err)
		}
		hdr.Set("Authorization", "Bearer "+tok)
		ev.Identity.Subject, ev.Identity.Issuer = unverifiedSubject(tok)
	}
	c, err := rs.tunnel.client.Dial(ctx, peer, o.Destination.String(), hdr)
	if err != nil {
		var se *tunnel.StatusError
		if errors.As(err, &se) {
			return nil, reasonTunnelRefused, err
		}
		return nil, reasonTunnelDial, err
	}
	ev.TLS = &audit.TLSInfo{Version: "TLS 1.3"}
	if cs, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok {
		s := cs.ConnectionState()
		ev.TLS = &audit.TLSInfo{Version: tls.VersionName(s.Version), Cipher: tls.CipherSuiteName(s.CipherSuite), ServerName: s.ServerName, Resumed: s.DidResume}
		if len(s.PeerCertificates) > 0 {
			ev.TLS.PeerSubject = s.PeerCertificates[0].Subject.String()
		}
	}
	return c, "", nil
}

// unverifiedSubject reads sub and iss from our own token for the audit
// trail. Nothing is decided on it: the peer verifies the token.
func unverifiedSubject(tok string) (sub, iss string) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", ""
	}
	var c struct {
		Sub string `json:"sub"`
		Iss string `json:"iss"`
	}
	_ = json.Unmarshal(payload, &c)
	return c.Sub, c.Iss
}

// startPodTokens runs the node's pod informer and the TokenRequest source
// when identity.token.kubernetes is configured.
func (a *Agent) startPodTokens(ctx context.Context, k *config.KubernetesToken) error {
	if a.pods == nil {
		if err := a.startPodInformer(ctx); err != nil {
			return fmt.Errorf("identity.token.kubernetes: %w", err)
		}
	}
	a.podTokens = identity.NewPodTokens(a.pods, a.cgroups, auth.NewKubernetesSource(a.kube, k.Audience, k.TTL.Duration))
	return nil
}

// startPods runs the node's pod informer for workload identity
// (identity.pods): auto starts it when running inside a cluster.
func (a *Agent) startPods(ctx context.Context, cfg *config.Config) error {
	switch cfg.Identity.Pods {
	case config.PodsOff:
		return nil
	case config.PodsAuto:
		// The variable every pod gets from the kubelet.
		if os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
			return nil
		}
	}
	if err := a.startPodInformer(ctx); err != nil {
		return fmt.Errorf("identity.pods: %w", err)
	}
	return nil
}

func (a *Agent) startPodInformer(ctx context.Context) error {
	client, node, err := identity.InCluster()
	if err != nil {
		return err
	}
	pods := identity.NewPods(client, node, a.log)
	if err := pods.Start(ctx); err != nil {
		return fmt.Errorf("watch pods on node %s: %w", node, err)
	}
	a.kube, a.pods = client, pods
	return nil
}
