package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/intransit/intransit/internal/testutil"
	"github.com/intransit/intransit/pkg/tunnel"
)

// TestInboundAuthMatrix drives an agent's inbound side with a real tunnel
// client: each token failure (threat T7), each mTLS failure, an unlisted
// target (T2) and the success cases, with a local OIDC issuer (discovery and
// JWKS over HTTP, real RS256 tokens). Each refusal carries its own reason.
func TestInboundAuthMatrix(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "inbound")
	other := testutil.NewCA(t, dir, "other")
	server := ca.Issue(t, dir, testutil.Leaf{CommonName: "executor-host", IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	planner := ca.Issue(t, dir, testutil.Leaf{CommonName: "planner", DNSNames: []string{"planner.agents.svc"},
		ExtKeyUse: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	stranger := ca.Issue(t, dir, testutil.Leaf{CommonName: "stranger", DNSNames: []string{"stranger.example"},
		ExtKeyUse: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	forged := other.Issue(t, dir, testutil.Leaf{CommonName: "planner-forged", DNSNames: []string{"planner.agents.svc"},
		ExtKeyUse: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	issuer := testutil.NewIssuer(t, ln)

	exec, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	defer exec.Close()
	go func() {
		for {
			c, err := exec.Accept()
			if err != nil {
				return
			}
			go echo(c)
		}
	}()
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startAgent(t, agentOpts{extra: fmt.Sprintf(`inbound:
  listen: %s
  cgroup: %s
  tls: {certFile: %s, keyFile: %s, clientCAFile: %s}
  oidc: {issuer: %s, audience: intransit}
  services:
    - name: executor
      port: 8080
      forward: %s
      mode: audit
      allow:
        - {sub: "system:serviceaccount:agents:planner"}
        - {peerSAN: planner.agents.svc}
`, listen, testutil.NewCgroup(t), server.CertFile, server.KeyFile, ca.File, issuer.URL, exec.Addr())})
	peer := netip.MustParseAddrPort(listen)

	good := issuer.Mint(t, "system:serviceaccount:agents:planner", "intransit", time.Hour, nil)
	cases := []struct {
		name   string
		cert   *testutil.Issued
		token  string
		target string
		status int    // 0: success
		reason string // in the refusal and the audit event
	}{
		{"token", &stranger, good, "10.0.0.7:8080", 0, ""},
		{"mtls-san", &planner, "", "10.0.0.7:8080", 0, ""},
		{"expired", &stranger, issuer.Mint(t, "system:serviceaccount:agents:planner", "intransit", -time.Minute, nil), "10.0.0.7:8080", 401, "expired"},
		{"wrong-audience", &stranger, issuer.Mint(t, "system:serviceaccount:agents:planner", "someone-else", time.Hour, nil), "10.0.0.7:8080", 401, "wrong_audience"},
		{"bad-signature", &stranger, good[:len(good)-4] + "AAAA", "10.0.0.7:8080", 401, "bad_signature"},
		{"alg-none", &stranger, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + strings.Split(good, ".")[1] + ".", "10.0.0.7:8080", 401, "unsupported_alg"},
		{"wrong-subject", &stranger, issuer.Mint(t, "system:serviceaccount:other:intruder", "intransit", time.Hour, nil), "10.0.0.7:8080", 403, "not allowed"},
		{"cert-not-allowed", &stranger, "", "10.0.0.7:8080", 403, "not allowed"},
		{"unlisted-target", &planner, "", "10.0.0.7:22", 403, "no local service for port 22"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tunnelClient(t, ca, tc.cert)
			hdr := http.Header{}
			if tc.token != "" {
				hdr.Set("Authorization", "Bearer "+tc.token)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := c.Dial(ctx, peer, tc.target, hdr)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				defer s.Close()
				if got, err := roundTrip(s, "through"); err != nil || got != "through" {
					t.Fatalf("echo %q, %v", got, err)
				}
				return
			}
			var se *tunnel.StatusError
			if !errors.As(err, &se) || se.Code != tc.status || !strings.Contains(se.Reason, tc.reason) {
				t.Fatalf("dial error %v, want status %d with reason containing %q", err, tc.status, tc.reason)
			}
		})
	}

	// mTLS failures happen in the handshake: no stream at all.
	for _, tc := range []struct {
		name string
		cert *testutil.Issued
	}{{"no-client-cert", nil}, {"client-cert-from-another-ca", &forged}} {
		t.Run(tc.name, func(t *testing.T) {
			c := tunnelClient(t, ca, tc.cert)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := c.Dial(ctx, peer, "10.0.0.7:8080", http.Header{"Authorization": {"Bearer " + good}})
			if err == nil {
				s.Close()
				t.Fatal("a caller without a certificate from the client CA must be refused")
			}
		})
	}

	// T8: a token is checked when a stream opens. An open stream outlives
	// its token (as in ztunnel's HBONE); a new stream needs a valid one. A
	// token replayed to another destination is judged by that service's
	// allow list: audience "intransit" names agents, not services.
	t.Run("token-expires-during-stream", func(t *testing.T) {
		short := issuer.Mint(t, "system:serviceaccount:agents:planner", "intransit", 2*time.Second, nil)
		c := tunnelClient(t, ca, &stranger)
		hdr := http.Header{"Authorization": {"Bearer " + short}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := c.Dial(ctx, peer, "10.0.0.7:8080", hdr)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		time.Sleep(2500 * time.Millisecond)
		if got, err := roundTrip(s, "still open"); err != nil || got != "still open" {
			t.Fatalf("open stream after expiry: %q, %v", got, err)
		}
		// A new stream with an expired token is the "expired" case above
		// (beyond the verifier's 30 s clock-skew leeway).
	})

	evs := r.events(t, countAtLeast(8, "verdict", "REFUSED"))
	for _, reason := range []string{"expired", "wrong_audience", "bad_signature", "unsupported_alg", "system:serviceaccount:other:intruder", "stranger", "port 22"} {
		found := false
		for _, e := range having(evs, "verdict", "REFUSED") {
			if strings.Contains(fmt.Sprint(e["reason"]), reason) {
				found = true
			}
		}
		if !found {
			t.Errorf("no REFUSED audit event mentioning %q", reason)
		}
	}
	up := having(evs, "event", "session_start", "verdict", "UPGRADED", "service", "executor")
	if len(up) != 3 {
		t.Fatalf("want 3 upgraded sessions, got %v", up)
	}
	subjects := fmt.Sprint(up[0]["identity"], up[1]["identity"])
	if !strings.Contains(subjects, "system:serviceaccount:agents:planner") || !strings.Contains(subjects, "planner.agents.svc") {
		t.Errorf("identities = %s", subjects)
	}
}

func tunnelClient(t *testing.T, ca *testutil.CA, cert *testutil.Issued) *tunnel.Client {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if cert != nil {
		tc.Certificates = []tls.Certificate{cert.TLS}
	}
	c := tunnel.NewClient(tunnel.ClientOptions{TLS: tc, DialTimeout: 3 * time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}
