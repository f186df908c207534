package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// tunnelFiles are the extra files the identity and inbound keys name.
type tunnelFiles struct {
	*testFiles
	secret      string // a client secret
	emptySecret string // whitespace only
	token       string // an existing token file
	jwks        string // a valid JWKS
	jwksNoKeys  string // JSON without "keys"
	jwksEmpty   string // "keys": []
	jwksNoKty   string // a key without "kty"
	jwksNotList string // "keys" is an object
	notJSON     string
}

func newTunnelFiles(t *testing.T) *tunnelFiles {
	t.Helper()
	f := &tunnelFiles{testFiles: newTestFiles(t)}
	for _, w := range []struct {
		path *string
		name string
		data string
	}{
		{&f.secret, "secret", "s3cret\n"},
		{&f.emptySecret, "empty-secret", " \n"},
		{&f.token, "token", "eyJhbGciOi...\n"},
		{&f.jwks, "jwks.json", `{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "1"}]}`},
		{&f.jwksNoKeys, "nokeys.json", `{"issuer": "https://x"}`},
		{&f.jwksEmpty, "empty.json", `{"keys": []}`},
		{&f.jwksNoKty, "nokty.json", `{"keys": [{"kty": "RSA", "n": "AA", "e": "AQAB"}, {"kid": "2"}]}`},
		{&f.jwksNotList, "notlist.json", `{"keys": {"kty": "RSA"}}`},
		{&f.notJSON, "not.json", `keys: [a]`},
	} {
		*w.path = filepath.Join(f.dir, w.name)
		if err := os.WriteFile(*w.path, []byte(w.data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *tunnelFiles) expand(s string) string {
	return f.testFiles.expand(strings.NewReplacer(
		"$SECRET", f.secret,
		"$EMPTYSECRET", f.emptySecret,
		"$TOKEN", f.token,
		"$GOODJWKS", f.jwks,
		"$NOKEYSJWKS", f.jwksNoKeys,
		"$EMPTYJWKS", f.jwksEmpty,
		"$NOKTYJWKS", f.jwksNoKty,
		"$NOTLISTJWKS", f.jwksNotList,
		"$NOTJSON", f.notJSON,
	).Replace(s))
}

// uncommentBlock uncomments the commented-out block of ExampleYAML whose
// first line starts where marker is found: that line and the following
// lines with '#' in the same column, up to a lone '#' or any other line.
// Nested comments ("#  # text", "#  #key:") stay comments.
func uncommentBlock(t *testing.T, y, marker string) string {
	t.Helper()
	at := strings.Index(y, marker)
	if at < 0 || strings.Count(y, marker) != 1 {
		t.Fatalf("marker %q found %d times", marker, strings.Count(y, marker))
	}
	lines := strings.Split(y, "\n")
	first := strings.Count(y[:at], "\n")
	col := strings.Index(lines[first], "#")
	if col < 0 || strings.TrimSpace(lines[first][:col]) != "" {
		t.Fatalf("marker %q is not on a commented line: %q", marker, lines[first])
	}
	for i := first; i < len(lines); i++ {
		l := lines[i]
		if len(l) <= col+1 || l[col] != '#' || strings.TrimSpace(l[:col]) != "" {
			break
		}
		lines[i] = l[:col] + l[col+1:]
	}
	return strings.Join(lines, "\n")
}

// exampleWithTunnel is ExampleYAML with the tunnel rule, peers, inbound
// and the given token source uncommented, file paths pointing at f.
func exampleWithTunnel(t *testing.T, f *tunnelFiles, tokenMarker string) string {
	t.Helper()
	y := ExampleYAML
	for _, m := range []string{"#peers:", "#- # An executor that only speaks plaintext", "#inbound:"} {
		y = uncommentBlock(t, y, m)
	}
	if tokenMarker != "" {
		y = uncommentBlock(t, y, tokenMarker)
	}
	return strings.NewReplacer(
		"/var/run/secrets/intransit/token", f.token,
		"/etc/intransit/client-secret", f.secret,
		"/etc/intransit/tls.crt", f.cert,
		"/etc/intransit/tls.key", f.key,
		"/etc/intransit/jwks.json", f.jwks,
		"/etc/intransit/client-ca.pem", f.ca,
		"/etc/intransit/peer-ca.pem", f.ca,
		"/etc/intransit/agent.pem", f.cert,
		"/etc/intransit/agent-key.pem", f.key,
	).Replace(y)
}

const (
	tokenFileMarker   = "#token:\n  #  file:"
	tokenClientMarker = "#token:\n  #  clientCredentials:"
	tokenKubeMarker   = "#token:\n  #  kubernetes:"
)

// TestExampleYAMLTunnel uncomments the tunnel sections of the example: they
// must parse and state the defaults.
func TestExampleYAMLTunnel(t *testing.T) {
	f := newTunnelFiles(t)
	y := exampleWithTunnel(t, f, tokenKubeMarker)
	c, err := Parse([]byte(y))
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	var d Config
	d.Identity.Token = &TokenSource{Kubernetes: &KubernetesToken{}}
	d.Rules = []Rule{{Upstream: Upstream{Tunnel: &Tunnel{}}}}
	d.Inbound = &Inbound{OIDC: &OIDC{}, Services: []Service{{}}}
	d.SetDefaults()
	if got, want := *c.Identity.Token.Kubernetes, *d.Identity.Token.Kubernetes; got != want {
		t.Errorf("kubernetes = %+v, want the defaults %+v", got, want)
	}
	r := c.RuleByName("legacy-executor")
	if r == nil || r.Upstream.Tunnel == nil || r.Upstream.TLS != nil {
		t.Fatalf("legacy-executor = %+v", r)
	}
	if r.Upstream.Tunnel.Port != d.Rules[0].Upstream.Tunnel.Port {
		t.Errorf("tunnel port %d, want the default %d", r.Upstream.Tunnel.Port, d.Rules[0].Upstream.Tunnel.Port)
	}
	in := c.Inbound
	if in.Listen != d.Inbound.Listen || in.OIDC.Audience != d.Inbound.OIDC.Audience || in.Services[0].Mode != d.Inbound.Services[0].Mode {
		t.Errorf("inbound %+v oidc %+v services %+v differ from the defaults", in, in.OIDC, in.Services)
	}
	if in.TLS.CertFile != f.cert || in.OIDC.Issuer != "https://issuer.internal" || len(in.Services[0].Allow) != 2 {
		t.Errorf("inbound = %+v", in)
	}
	if got := in.Services[0].Allow[1].Claims; len(got) != 1 || got["kubernetes.io/namespace"] != "agents" {
		t.Errorf("claims = %v", got)
	}
	if ap, ok := c.PeerFor(netip.MustParseAddr("10.20.3.4")); !ok || ap != netip.MustParseAddrPort("192.0.2.10:15008") {
		t.Errorf("PeerFor = %v, %v", ap, ok)
	}

	// Every optional key uncommented too.
	y = strings.NewReplacer(
		"#clientCAFile:", "clientCAFile:",
		"#jwksFile:", "jwksFile:",
		"#- peerSAN:", "- peerSAN:",
		"#cgroup: /sys/fs/cgroup/system.slice/executor.service", "cgroup: /sys/fs/cgroup/system.slice/executor.service",
		"#caFile: "+f.ca, "caFile: "+f.ca,
		"#certFile: "+f.cert, "certFile: "+f.cert,
		"#keyFile: "+f.key, "keyFile: "+f.key,
	).Replace(y)
	c, err = Parse([]byte(y))
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	tn := c.RuleByName("legacy-executor").Upstream.Tunnel
	if tn.CAFile != f.ca || tn.CertFile != f.cert || tn.KeyFile != f.key || tn.ServerName != "executor-host.internal" {
		t.Errorf("tunnel = %+v", tn)
	}
	if in := c.Inbound; in.TLS.ClientCAFile != f.ca || in.OIDC.JWKSFile != f.jwks || in.Cgroup == "" || len(in.Services[0].Allow) != 3 {
		t.Errorf("inbound = %+v", in)
	}

	// The other token sources.
	c, err = Parse([]byte(exampleWithTunnel(t, f, tokenFileMarker)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity.Token.File != f.token {
		t.Errorf("token = %+v", c.Identity.Token)
	}
	c, err = Parse([]byte(exampleWithTunnel(t, f, tokenClientMarker)))
	if err != nil {
		t.Fatal(err)
	}
	want := ClientCredentials{Issuer: "https://issuer.internal", ClientID: "intransit", ClientSecretFile: f.secret, Scopes: []string{"tunnel"}, Audience: "intransit"}
	if cc := c.Identity.Token.ClientCredentials; cc.Issuer != want.Issuer || cc.ClientID != want.ClientID || cc.ClientSecretFile != want.ClientSecretFile ||
		!slices.Equal(cc.Scopes, want.Scopes) || cc.Audience != want.Audience {
		t.Errorf("clientCredentials = %+v, want %+v", cc, want)
	}
	// The commented tokenURL is the alternative to issuer, not an addition.
	y = strings.Replace(exampleWithTunnel(t, f, tokenClientMarker), "#tokenURL:", "tokenURL:", 1)
	if _, err := Parse([]byte(y)); err == nil || !strings.Contains(err.Error(), "identity.token.clientCredentials: issuer") {
		t.Errorf("issuer and tokenURL both set: %v", err)
	}
	// Without any token source the tunnel rule has no way to authenticate.
	if _, err := Parse([]byte(exampleWithTunnel(t, f, ""))); err == nil || !strings.Contains(err.Error(), "could not authenticate") {
		t.Errorf("tunnel without identity: %v", err)
	}
}

// inboundBase is a valid inbound section to vary.
const inboundBase = `
inbound:
  tls: {certFile: $CERT, keyFile: $KEY}
  oidc: {issuer: https://issuer.example}
  services: [{name: s, port: 8080, forward: 127.0.0.1:8080, allow: [{sub: x}]}]
`

// tunnelRule is a valid tunnel rule with a token source.
const tunnelRule = `
identity: {token: {kubernetes: {}}}
rules: [{name: t, ports: [9090], destinations: [10.0.0.0/8], mode: enforce, upstream: {tunnel: {}}}]
`

func TestParseTunnelValid(t *testing.T) {
	f := newTunnelFiles(t)
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, c *Config)
	}{
		{
			name: "defaults",
			yaml: tunnelRule + inboundBase,
			check: func(t *testing.T, c *Config) {
				if k := c.Identity.Token.Kubernetes; k.Audience != "intransit" || k.TTL.Duration != 10*time.Minute {
					t.Errorf("kubernetes = %+v", k)
				}
				if p := c.Rules[0].Upstream.Tunnel.Port; p != 15008 {
					t.Errorf("tunnel port = %d", p)
				}
				in := c.Inbound
				if in.Listen != "0.0.0.0:15008" || in.OIDC.Audience != "intransit" || in.Services[0].Mode != ModeEnforce || in.Cgroup != "" {
					t.Errorf("inbound = %+v %+v %+v", in, in.OIDC, in.Services)
				}
			},
		},
		{
			name: "no identity or inbound leaves them unset",
			yaml: rule,
			check: func(t *testing.T, c *Config) {
				if c.Identity.Token != nil || c.Inbound != nil || c.Peers != nil {
					t.Errorf("got %+v %+v %+v", c.Identity, c.Inbound, c.Peers)
				}
				if _, ok := c.PeerFor(netip.MustParseAddr("10.0.0.1")); ok {
					t.Error("PeerFor without peers matched")
				}
			},
		},
		{
			name: "tunnel with a client certificate and no token",
			yaml: `rules: [{name: t, ports: [9090], mode: enforce, upstream: {tunnel: {port: 443, serverName: peer.internal, caFile: $CA, certFile: $CERT, keyFile: $KEY}}}]`,
			check: func(t *testing.T, c *Config) {
				want := Tunnel{Port: 443, ServerName: "peer.internal", CAFile: f.ca, CertFile: f.cert, KeyFile: f.key}
				if got := *c.Rules[0].Upstream.Tunnel; got != want {
					t.Errorf("tunnel = %+v, want %+v", got, want)
				}
			},
		},
		{
			name: "token file that does not exist yet, in an existing directory",
			yaml: `identity: {token: {file: $DIR/later}}` + "\n" + rule,
		},
		{
			name: "client credentials against a loopback issuer over http",
			yaml: `identity: {token: {clientCredentials: {issuer: "http://127.0.0.1:5556/dex", clientID: a, clientSecretFile: $SECRET}}}` + "\n" + rule,
		},
		{
			name: "client credentials with a localhost token URL and scopes",
			yaml: `identity: {token: {clientCredentials: {tokenURL: "http://localhost:8080/token?x=1", clientID: a, clientSecretFile: $SECRET, scopes: [a, b:c], audience: api}}}` + "\n" + rule,
			check: func(t *testing.T, c *Config) {
				if cc := c.Identity.Token.ClientCredentials; !slices.Equal(cc.Scopes, []string{"a", "b:c"}) || cc.Audience != "api" {
					t.Errorf("clientCredentials = %+v", cc)
				}
			},
		},
		{
			name: "kubernetes ttl bounds",
			yaml: `identity: {token: {kubernetes: {audience: other, ttl: 24h}}}` + "\n" + rule,
			check: func(t *testing.T, c *Config) {
				if k := c.Identity.Token.Kubernetes; k.Audience != "other" || k.TTL.Duration != 24*time.Hour {
					t.Errorf("kubernetes = %+v", k)
				}
			},
		},
		{
			name: "peers are parsed",
			yaml: `
peers:
  - {destinations: [10.20.0.0/16, 10.30.0.1], address: 192.0.2.10:15008}
  - {destinations: [10.20.5.0/24], address: "[2001:db8::7]:443"}
` + rule,
			check: func(t *testing.T, c *Config) {
				p := c.Peers[0]
				if !slices.Equal(p.Prefixes, []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("10.30.0.1/32")}) ||
					p.AddrPort != netip.MustParseAddrPort("192.0.2.10:15008") {
					t.Errorf("peer = %+v", p)
				}
				if c.Peers[1].AddrPort != netip.MustParseAddrPort("[2001:db8::7]:443") {
					t.Errorf("peer = %+v", c.Peers[1])
				}
			},
		},
		{
			name: "inbound with mTLS, JWKS, claims and every allow field",
			yaml: rule + `
inbound:
  listen: "[::]:15443"
  cgroup: /sys/fs/cgroup/executors
  tls: {certFile: $CERT, keyFile: $KEY, clientCAFile: $CA}
  oidc: {issuer: "https://issuer.example/realms/x", audience: exec, jwksFile: $GOODJWKS}
  services:
    - name: a
      port: 8080
      forward: 127.0.0.2:18080
      mode: audit
      allow:
        - {iss: "https://issuer.example/realms/x", sub: "system:serviceaccount:agents:planner", aud: exec}
        - claims: {"kubernetes.io/namespace": agents, "kubernetes.io/serviceaccount/name": planner, prots: "1.10", "yes": "true"}
        - {peerSubject: "CN=planner,O=agents", peerSAN: "spiffe://cluster.local/ns/agents/sa/planner"}
    - {name: b, port: 9090, forward: "[::1]:9090", allow: [{peerSAN: planner.agents.svc}]}
    - {name: c, port: 9091, forward: "[::ffff:127.0.0.1]:9091", allow: [{sub: x}]}
`,
			check: func(t *testing.T, c *Config) {
				in := c.Inbound
				if in.Listen != "[::]:15443" || in.TLS.ClientCAFile != f.ca || in.OIDC.Audience != "exec" || in.OIDC.JWKSFile != f.jwks {
					t.Errorf("inbound = %+v %+v", in, in.OIDC)
				}
				want := map[string]string{"kubernetes.io/namespace": "agents", "kubernetes.io/serviceaccount/name": "planner", "prots": "1.10", "yes": "true"}
				s := in.Services[0]
				if s.Mode != ModeAudit || len(s.Allow) != 3 || len(s.Allow[1].Claims) != len(want) {
					t.Fatalf("service = %+v", s)
				}
				for k, v := range want {
					if s.Allow[1].Claims[k] != v {
						t.Errorf("claims[%q] = %q, want %q", k, s.Allow[1].Claims[k], v)
					}
				}
				if a := s.Allow[2]; a.PeerSubject != "CN=planner,O=agents" || !a.HasPeerFields() || a.HasTokenFields() {
					t.Errorf("allow = %+v", a)
				}
				if in.Services[1].Mode != ModeEnforce {
					t.Errorf("services[1].mode = %q", in.Services[1].Mode)
				}
			},
		},
		{
			name: "inbound port is fine for rules that cannot reach loopback or the listen address",
			yaml: `
inbound:
  listen: 192.0.2.1:15008
  tls: {certFile: $CERT, keyFile: $KEY, clientCAFile: $CA}
  services: [{name: s, port: 8080, forward: 127.0.0.1:8080, allow: [{peerSubject: x}]}]
rules: [{name: a, ports: [15008], destinations: [10.0.0.0/8], mode: audit}]`,
		},
		{
			name: "metrics on another address may share the inbound port",
			yaml: `
metrics: {listen: "127.0.0.1:15008"}
inbound:
  listen: 192.0.2.1:15008
  tls: {certFile: $CERT, keyFile: $KEY}
  oidc: {issuer: https://issuer.example}
  services: [{name: s, port: 8080, forward: 127.0.0.1:8080, allow: [{sub: x}]}]
` + rule,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(f.expand(tt.yaml)))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestParseTunnelErrors(t *testing.T) {
	f := newTunnelFiles(t)
	// svc builds an inbound section around one service entry.
	svc := func(s string) string {
		return `
inbound:
  tls: {certFile: $CERT, keyFile: $KEY}
  oidc: {issuer: https://issuer.example}
  services: [` + s + `]
` + rule
	}
	// allow builds an inbound section around one allow list, with oidc and
	// clientCAFile as given.
	allow := func(a, oidc, clientCA string) string {
		y := "\ninbound:\n  tls: {certFile: $CERT, keyFile: $KEY" + clientCA + "}\n"
		if oidc != "" {
			y += "  oidc: {issuer: " + oidc + "}\n"
		}
		return y + "  services: [{name: s, port: 8080, forward: 127.0.0.1:8080, allow: " + a + "}]\n" + rule
	}
	tok := func(s string) string { return "identity: {token: " + s + "}\n" + rule }
	cc := func(s string) string { return tok("{clientCredentials: {" + s + "}}") }
	const ccOK = "clientID: a, clientSecretFile: $SECRET"
	peer := func(s string) string { return "peers: [" + s + "]\n" + rule }
	tunnel := func(s string) string {
		return `rules: [{name: t, ports: [9090], mode: enforce, upstream: {tunnel: {certFile: $CERT, keyFile: $KEY` + s + `}}}]`
	}
	jwks := func(path string) string {
		return "\ninbound:\n  tls: {certFile: $CERT, keyFile: $KEY}\n  oidc: {issuer: https://issuer.example, jwksFile: " + path + "}\n" +
			"  services: [{name: s, port: 8080, forward: 127.0.0.1:8080, allow: [{sub: x}]}]\n" + rule
	}
	listen := func(l string) string {
		return "\ninbound:\n  listen: " + l + "\n  tls: {certFile: $CERT, keyFile: $KEY}\n  oidc: {issuer: https://issuer.example}\n" +
			"  services: [{name: s, port: 8080, forward: 127.0.0.1:8080, allow: [{sub: x}]}]\n"
	}

	tests := []struct {
		name string
		yaml string
		want [][]string
	}{
		// decoding
		{"unknown key in inbound", "inbound: {lsiten: ':1'}\n" + rule, [][]string{{`unknown key "inbound.lsiten"`, `did you mean "listen"`}}},
		{"unknown key in an allow entry", svc(`{name: s, port: 8080, forward: 127.0.0.1:8080, allow: [{subject: x}]}`),
			[][]string{{`unknown key "inbound.services[0].allow[0].subject"`}}},
		{"unknown key in a token source", tok("{kubernetes: {audince: x}}"), [][]string{{`unknown key "identity.token.kubernetes.audince"`, `did you mean "audience"`}}},
		{"unknown key in a tunnel", `rules: [{name: t, ports: [1], mode: enforce, upstream: {tunnel: {certfile: x}}}]`,
			[][]string{{`unknown key "rules[0].upstream.tunnel.certfile"`, `did you mean "certFile"`}}},
		{"claims not a mapping", allow(`[{claims: [a]}]`, "https://i.example", ""),
			[][]string{{"inbound.services[0].allow[0].claims", "want a mapping", "a list"}}},
		{"claim value a list", allow(`[{claims: {a: [1]}}]`, "https://i.example", ""),
			[][]string{{`inbound.services[0].allow[0].claims["a"]`, "want a string", "a list"}}},
		{"claim value unquoted boolean", allow(`[{claims: {email_verified: true}}]`, "https://i.example", ""),
			[][]string{{`inbound.services[0].allow[0].claims["email_verified"]`, "quote", "boolean true"}}},
		{"claim value unquoted number", allow(`[{claims: {version: 1.10}}]`, "https://i.example", ""),
			[][]string{{`inbound.services[0].allow[0].claims["version"]`, "number 1.1", "quote it"}}},
		{"tunnel port explicit 0", `rules: [{name: t, ports: [1], mode: enforce, upstream: {tunnel: {port: 0}}}]`,
			[][]string{{"rules[0].upstream.tunnel.port", "0 is not allowed", "15008"}}},
		{"ttl a number", tok("{kubernetes: {ttl: 600}}"), [][]string{{"identity.token.kubernetes.ttl", "duration"}}},

		// identity
		{"token without a source", tok("{}"), [][]string{{"identity.token", "no source", "exactly one of file, clientCredentials, kubernetes"}}},
		{"two token sources", tok("{file: $TOKEN, kubernetes: {}}"),
			[][]string{{"identity.token", "file and kubernetes are both set", "exactly one"}}},
		{"three token sources", tok("{file: $TOKEN, kubernetes: {}, clientCredentials: {tokenURL: 'https://t.example', " + ccOK + "}}"),
			[][]string{{"identity.token", "file, clientCredentials and kubernetes are all set"}}},
		{"token file is a directory", tok("{file: $DIR}"), [][]string{{"identity.token.file", f.dir, "is a directory"}}},
		{"token file in a missing directory", tok("{file: $DIR/nope/token}"),
			[][]string{{"identity.token.file", f.dir + "/nope/token", "directory", "no such file"}}},
		{"client credentials without issuer or tokenURL", cc(ccOK),
			[][]string{{"identity.token.clientCredentials", "neither issuer nor tokenURL", "exactly one"}}},
		{"client credentials with issuer and tokenURL", cc("issuer: 'https://i.example', tokenURL: 'https://i.example/token', " + ccOK),
			[][]string{{"identity.token.clientCredentials", `issuer "https://i.example" and tokenURL "https://i.example/token" are both set`}}},
		{"issuer over plain http", cc("issuer: 'http://issuer.example', " + ccOK),
			[][]string{{"identity.token.clientCredentials.issuer", `"http://issuer.example"`, "use https", "loopback"}}},
		{"issuer with a query", cc("issuer: 'https://issuer.example/?a=b', " + ccOK),
			[][]string{{"identity.token.clientCredentials.issuer", `"https://issuer.example/?a=b"`, "query"}}},
		{"tokenURL not absolute", cc("tokenURL: issuer.example/token, " + ccOK),
			[][]string{{"identity.token.clientCredentials.tokenURL", `"issuer.example/token"`, "not an absolute URL"}}},
		{"tokenURL without a host", cc("tokenURL: 'https:///token', " + ccOK),
			[][]string{{"identity.token.clientCredentials.tokenURL", `"https:///token"`, "not an absolute URL"}}},
		{"tokenURL scheme", cc("tokenURL: 'ftp://issuer.example/token', " + ccOK),
			[][]string{{"identity.token.clientCredentials.tokenURL", `scheme "ftp" is not https`}}},
		{"tokenURL with credentials", cc("tokenURL: 'https://u:hunter2@issuer.example/token', " + ccOK),
			[][]string{{"identity.token.clientCredentials.tokenURL", "credentials", "u:xxxxx@"}}},
		{"tokenURL with a fragment", cc("tokenURL: 'https://issuer.example/token#x', " + ccOK),
			[][]string{{"identity.token.clientCredentials.tokenURL", "fragment"}}},
		{"tokenURL does not parse", cc("tokenURL: 'https://[::1', " + ccOK),
			[][]string{{"identity.token.clientCredentials.tokenURL", `"https://[::1"`, "is not a URL"}}},
		{"clientID missing", cc("tokenURL: 'https://t.example', clientSecretFile: $SECRET"),
			[][]string{{"identity.token.clientCredentials.clientID", "required"}}},
		{"clientSecretFile missing", cc("tokenURL: 'https://t.example', clientID: a"),
			[][]string{{"identity.token.clientCredentials.clientSecretFile", "required", "never written in the config"}}},
		{"clientSecretFile does not exist", cc("tokenURL: 'https://t.example', clientID: a, clientSecretFile: $DIR/nope"),
			[][]string{{"identity.token.clientCredentials.clientSecretFile", f.dir + "/nope", "no such file"}}},
		{"clientSecretFile empty", cc("tokenURL: 'https://t.example', clientID: a, clientSecretFile: $EMPTYSECRET"),
			[][]string{{"identity.token.clientCredentials.clientSecretFile", f.emptySecret, "is empty"}}},
		{"clientSecretFile is a directory", cc("tokenURL: 'https://t.example', clientID: a, clientSecretFile: $DIR"),
			[][]string{{"identity.token.clientCredentials.clientSecretFile", f.dir, "is a directory"}}},
		{"bad scopes", cc("tokenURL: 'https://t.example', " + ccOK + ", scopes: [a, '', 'b c']"),
			[][]string{{"identity.token.clientCredentials.scopes[1]", "empty scope"},
				{"identity.token.clientCredentials.scopes[2]", `"b c"`, "whitespace"}}},
		{"ttl too short", tok("{kubernetes: {ttl: 5m}}"), [][]string{{"identity.token.kubernetes.ttl", "5m0s", "10m..24h", "TokenRequest minimum"}}},
		{"ttl too long", tok("{kubernetes: {ttl: 25h}}"), [][]string{{"identity.token.kubernetes.ttl", "25h0m0s", "10m..24h"}}},
		{"ttl negative", tok("{kubernetes: {ttl: -1h}}"), [][]string{{"identity.token.kubernetes.ttl", "-1h0m0s"}}},

		// peers
		{"peer without destinations", peer("{address: 192.0.2.1:15008}"), [][]string{{"peers[0].destinations", "at least one"}}},
		{"peer destination does not parse", peer("{destinations: [10.0.0.0/8, nope], address: 192.0.2.1:15008}"),
			[][]string{{"peers[0].destinations[1]", `"nope"`, "not an IP prefix"}}},
		{"peer destination twice", peer("{destinations: [10.0.0.0/8, 10.1.0.0/8], address: 192.0.2.1:15008}"),
			[][]string{{"peers[0].destinations[1]", `"10.1.0.0/8"`, "peers[0].destinations[0]"}}},
		{"same prefix in two peers", peer("{destinations: [10.0.0.0/8], address: 192.0.2.1:15008}, {destinations: [10.9.0.0/16, 10.0.0.0/8], address: 192.0.2.2:15008}"),
			[][]string{{"peers[1].destinations[1]", `"10.0.0.0/8"`, "peers[0].destinations[0]"}}},
		{"peer without address", peer("{destinations: [10.0.0.0/8]}"), [][]string{{"peers[0].address", "required"}}},
		{"peer address is a name", peer("{destinations: [10.0.0.0/8], address: peer.internal:15008}"),
			[][]string{{"peers[0].address", `"peer.internal:15008"`, "IP literal"}}},
		{"peer address without port", peer("{destinations: [10.0.0.0/8], address: 192.0.2.1}"),
			[][]string{{"peers[0].address", `"192.0.2.1"`, "not IP:port"}}},
		{"peer address port 0", peer("{destinations: [10.0.0.0/8], address: 192.0.2.1:0}"),
			[][]string{{"peers[0].address", `"192.0.2.1:0"`, "port 0"}}},
		{"peer address unspecified", peer("{destinations: [10.0.0.0/8], address: 0.0.0.0:15008}"),
			[][]string{{"peers[0].address", `"0.0.0.0:15008"`, "unspecified"}}},
		{"peer address zone", peer(`{destinations: [10.0.0.0/8], address: "[fe80::1%eth0]:15008"}`),
			[][]string{{"peers[0].address", "zone"}}},

		// rules with tunnels
		{"enforce without tls or tunnel", `rules: [{name: a, ports: [80], mode: enforce}]`,
			[][]string{{"rules[0].upstream.tls", "required when mode is enforce", "rules[0].upstream.tunnel"}}},
		{"enforce with tls and tunnel", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {}, tunnel: {certFile: $CERT, keyFile: $KEY}}}]`,
			[][]string{{"rules[0].upstream:", "rules[0].upstream.tls", "rules[0].upstream.tunnel", "exactly one"}}},
		{"audit with tunnel", `rules: [{name: a, ports: [80], mode: audit, upstream: {tunnel: {}}}]`,
			[][]string{{"rules[0].upstream.tunnel", "not allowed when mode is audit"}}},
		{"deny with tunnel", `rules: [{name: a, ports: [80], mode: deny, upstream: {tunnel: {port: 1}}}]`,
			[][]string{{"rules[0].upstream.tunnel", "not allowed when mode is deny"}}},
		{"tunnel without token or certificate", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tunnel: {caFile: $CA}}}]`,
			[][]string{{"rules[0].upstream.tunnel", "neither identity.token nor rules[0].upstream.tunnel.certFile/keyFile", "could not authenticate this host"}}},
		{"tunnel port out of range", tunnel(", port: 70000"), [][]string{{"rules[0].upstream.tunnel.port", "70000", "1..65535"}}},
		{"tunnel port negative", tunnel(", port: -1"), [][]string{{"rules[0].upstream.tunnel.port", "-1"}}},
		{"tunnel server name", tunnel(", serverName: '*.example'"), [][]string{{"rules[0].upstream.tunnel.serverName", `"*.example"`}}},
		{"tunnel CA not PEM", tunnel(", caFile: $NOTPEM"), [][]string{{"rules[0].upstream.tunnel.caFile", f.notPEM, "no PEM certificate"}}},
		{"tunnel cert without key", "identity: {token: {kubernetes: {}}}\n" + `rules: [{name: a, ports: [80], mode: enforce, upstream: {tunnel: {certFile: $CERT}}}]`,
			[][]string{{"rules[0].upstream.tunnel", "certFile", f.cert, "keyFile is empty"}}},
		{"tunnel key without cert", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tunnel: {keyFile: $KEY}}}]`,
			[][]string{{"rules[0].upstream.tunnel", "keyFile", f.key, "certFile is empty"}}},
		{"tunnel cert and key do not match", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tunnel: {certFile: $CERT, keyFile: $OTHERKEY}}}]`,
			[][]string{{"rules[0].upstream.tunnel.certFile", "rules[0].upstream.tunnel.keyFile", "does not match"}}},
		{"rule port clashes with inbound.listen", inboundBase + `rules: [{name: a, ports: [15008], mode: audit}]`,
			[][]string{{"rules[0].ports[0]", "15008", `inbound.listen: "0.0.0.0:15008"`, "loopback"}}},
		{"rule port covering the inbound listen address", listen("192.0.2.1:15443") + `rules: [{name: a, ports: [15443], destinations: [192.0.2.0/24], mode: audit}]`,
			[][]string{{"rules[0].ports[0]", "15443", `inbound.listen: "192.0.2.1:15443"`, "covers 192.0.2.1"}}},

		// inbound
		{"inbound listen without port", listen("0.0.0.0") + rule, [][]string{{"inbound.listen", `"0.0.0.0"`, "missing port"}}},
		{"inbound listen on a name", listen("localhost:15008") + rule, [][]string{{"inbound.listen", `"localhost:15008"`, "not empty or an IP"}}},
		{"inbound listen port out of range", listen("':70000'") + rule, [][]string{{"inbound.listen", `":70000"`, "1..65535"}}},
		{"inbound listen zone", listen("'[fe80::1%eth0]:15008'") + rule, [][]string{{"inbound.listen", "zone"}}},
		{"inbound listen on the proxy port", listen("':15001'") + rule, [][]string{{"inbound.listen", `":15001"`, "proxy.port: 15001"}}},
		{"inbound listen on the metrics port", listen("':9464'") + rule, [][]string{{"inbound.listen", `":9464"`, `metrics.listen: "127.0.0.1:9464"`}}},
		{"inbound cgroup relative", "inbound: {cgroup: executors}\n" + rule, [][]string{{"inbound.cgroup", `"executors"`, "absolute"}}},
		{"inbound without tls and services", "inbound: {}\n" + rule,
			[][]string{{"inbound.tls.certFile", "required"}, {"inbound.tls.keyFile", "required"}, {"inbound.services", "at least one"}}},
		{"inbound cert and key do not match", strings.Replace(inboundBase, "$KEY", "$OTHERKEY", 1) + rule,
			[][]string{{"inbound.tls.certFile", "inbound.tls.keyFile", "does not match"}}},
		{"inbound cert missing", strings.Replace(inboundBase, "$CERT", "$DIR/nope.pem", 1) + rule,
			[][]string{{"inbound.tls.certFile", f.dir + "/nope.pem", "no such file"}}},
		{"inbound client CA bad", allow(`[{sub: x}]`, "https://i.example", ", clientCAFile: $BADCERT"),
			[][]string{{"inbound.tls.clientCAFile", f.badCert, "certificate #1"}}},
		{"oidc without issuer", "inbound:\n  oidc: {audience: x}\n" + rule, [][]string{{"inbound.oidc.issuer", "required"}}},
		{"oidc issuer over http", allow(`[{sub: x}]`, "'http://issuer.example'", ""),
			[][]string{{"inbound.oidc.issuer", `"http://issuer.example"`, "https"}}},
		{"jwks file missing", jwks("$DIR/nope.json"), [][]string{{"inbound.oidc.jwksFile", f.dir + "/nope.json", "no such file"}}},
		{"jwks file not JSON", jwks("$NOTJSON"), [][]string{{"inbound.oidc.jwksFile", f.notJSON, "not a JSON object"}}},
		{"jwks without keys", jwks("$NOKEYSJWKS"), [][]string{{"inbound.oidc.jwksFile", f.jwksNoKeys, `no "keys" array`}}},
		{"jwks with empty keys", jwks("$EMPTYJWKS"), [][]string{{"inbound.oidc.jwksFile", f.jwksEmpty, `"keys" is empty`}}},
		{"jwks key without kty", jwks("$NOKTYJWKS"), [][]string{{"inbound.oidc.jwksFile", f.jwksNoKty, `keys[1] has no "kty"`}}},
		{"jwks keys not a list", jwks("$NOTLISTJWKS"), [][]string{{"inbound.oidc.jwksFile", f.jwksNotList, "not an array"}}},
		{"service without name", svc(`{port: 8080, forward: 127.0.0.1:8080, allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].name", "required"}}},
		{"service bad name", svc(`{name: "a b", port: 8080, forward: 127.0.0.1:8080, allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].name", `"a b"`, "must match"}}},
		{"service duplicate name and port", svc(`{name: a, port: 8080, forward: 127.0.0.1:8080, allow: [{sub: x}]}, {name: a, port: 8080, forward: 127.0.0.1:8081, allow: [{sub: x}]}`),
			[][]string{{"inbound.services[1].name", `"a"`, "inbound.services[0]"}, {"inbound.services[1].port", "8080", "inbound.services[0]"}}},
		{"service port missing", svc(`{name: a, forward: 127.0.0.1:8080, allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].port", "0 is not in 1..65535"}}},
		{"service port on inbound.listen", svc(`{name: a, port: 15008, forward: 127.0.0.1:8080, allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].port", "15008", `inbound.listen: "0.0.0.0:15008"`}}},
		{"service port on the proxy", svc(`{name: a, port: 15001, forward: 127.0.0.1:8080, allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].port", "15001", "proxy.port: 15001"}}},
		{"forward missing", svc(`{name: a, port: 8080, allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].forward", "required", "loopback"}}},
		{"forward is a name", svc(`{name: a, port: 8080, forward: "localhost:8080", allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].forward", `"localhost:8080"`, "not a loopback IP:port"}}},
		{"forward without port", svc(`{name: a, port: 8080, forward: 127.0.0.1, allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].forward", `"127.0.0.1"`, "not a loopback IP:port"}}},
		{"forward off-host", svc(`{name: a, port: 8080, forward: "10.0.0.7:8080", allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].forward", `"10.0.0.7:8080"`, "not a loopback address", "127.0.0.0/8 or ::1"}}},
		{"forward to all addresses", svc(`{name: a, port: 8080, forward: "0.0.0.0:8080", allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].forward", `"0.0.0.0:8080"`, "not a loopback address"}}},
		{"forward zone", svc(`{name: a, port: 8080, forward: "[::1%lo]:8080", allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].forward", "zone"}}},
		{"forward port 0", svc(`{name: a, port: 8080, forward: "127.0.0.1:0", allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].forward", `"127.0.0.1:0"`, "port 0"}}},
		{"forward into inbound.listen", svc(`{name: a, port: 8080, forward: "127.0.0.1:15008", allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].forward", `"127.0.0.1:15008"`, "inbound.listen's port 15008", "loop"}}},
		{"forward into the proxy", svc(`{name: a, port: 8080, forward: "[::1]:15001", allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].forward", `"[::1]:15001"`, "proxy.port 15001", "loop"}}},
		{"service mode deny", svc(`{name: a, port: 8080, forward: 127.0.0.1:8080, mode: deny, allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].mode", `"deny" is not valid for a service`, "audit, enforce"}}},
		{"service mode unknown", svc(`{name: a, port: 8080, forward: 127.0.0.1:8080, mode: block, allow: [{sub: x}]}`),
			[][]string{{"inbound.services[0].mode", `"block" is not one of audit, enforce`}}},
		{"allow missing", svc(`{name: a, port: 8080, forward: 127.0.0.1:8080}`),
			[][]string{{"inbound.services[0].allow", "at least one entry"}}},
		{"allow entry empty", allow(`[{sub: x}, {}, null]`, "https://i.example", ""),
			[][]string{{"inbound.services[0].allow[1]", "empty entry", "every caller"}, {"inbound.services[0].allow[2]", "empty entry"}}},
		{"token fields without oidc", allow(`[{iss: "https://i.example", sub: x, aud: api, claims: {a: b}}]`, "", ""),
			[][]string{
				{"inbound.services[0].allow[0].iss", `"https://i.example"`, "needs inbound.oidc"},
				{"inbound.services[0].allow[0].sub", `"x"`, "needs inbound.oidc"},
				{"inbound.services[0].allow[0].aud", `"api"`, "needs inbound.oidc"},
				{"inbound.services[0].allow[0].claims", "needs inbound.oidc"},
			}},
		{"iss that can never match", allow(`[{iss: "https://other.example"}]`, "https://i.example", ""),
			[][]string{{"inbound.services[0].allow[0].iss", `"https://other.example"`, "never match", `inbound.oidc.issuer "https://i.example"`}}},
		{"peer fields without clientCAFile", allow(`[{peerSubject: CN=a, peerSAN: "spiffe://x/y"}]`, "", ""),
			[][]string{
				{"inbound.services[0].allow[0].peerSubject", `"CN=a"`, "needs inbound.tls.clientCAFile"},
				{"inbound.services[0].allow[0].peerSAN", `"spiffe://x/y"`, "needs inbound.tls.clientCAFile"},
			}},
		{"bad claims", allow(`[{claims: {"": a, "a//b": c, "/lead": d, "trail/": e, empty: "", "null": null}}]`, "https://i.example", ""),
			[][]string{
				{`inbound.services[0].allow[0].claims[""]`, "empty claim name"},
				{`inbound.services[0].allow[0].claims["a//b"]`, `"a//b"`, "empty path segment"},
				{`inbound.services[0].allow[0].claims["/lead"]`, "empty path segment"},
				{`inbound.services[0].allow[0].claims["trail/"]`, "empty path segment"},
				{`inbound.services[0].allow[0].claims["empty"]`, "empty value"},
				{`inbound.services[0].allow[0].claims["null"]`, "empty value"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(f.expand(tt.yaml)))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c)
			}
			if c != nil {
				t.Errorf("Parse returned a config with an error")
			}
			t.Log(err)
			lines := strings.Split(err.Error(), "\n")
			for _, want := range tt.want {
				if !slices.ContainsFunc(lines, func(l string) bool { return containsAll(l, want) }) {
					t.Errorf("no error line contains all of %q; got:\n%v", want, err)
				}
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, "config: ") {
					t.Errorf("line %q lacks the config: prefix", l)
				}
			}
		})
	}
}

// TestTunnelNoExtraErrors makes sure one mistake gives one line: the
// cross-checks must not pile follow-up complaints onto a single problem.
func TestTunnelNoExtraErrors(t *testing.T) {
	f := newTunnelFiles(t)
	for _, y := range []string{
		// A half-set certificate pair is not also "could not authenticate".
		`rules: [{name: a, ports: [80], mode: enforce, upstream: {tunnel: {certFile: $CERT}}}]`,
		// Both upstreams set: the tunnel is still checked, but only once.
		`rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {}, tunnel: {certFile: $CERT, keyFile: $KEY}}}]`,
		// An invalid listen is reported once, not again by every service.
		listenOnly("nowhere"),
	} {
		_, err := Parse([]byte(f.expand(y)))
		if err == nil || strings.Count(err.Error(), "\n") != 0 {
			t.Errorf("want exactly one error line for\n%s\ngot:\n%v", y, err)
		}
	}
}

func listenOnly(l string) string {
	return "inbound:\n  listen: " + l + "\n  tls: {certFile: $CERT, keyFile: $KEY}\n  oidc: {issuer: https://issuer.example}\n" +
		"  services: [{name: s, port: 8080, forward: 127.0.0.1:8080, allow: [{sub: x}]}]\n" + rule
}

func TestPeerFor(t *testing.T) {
	c := &Config{
		Rules: []Rule{{Name: "a", Ports: []int{80}, Mode: ModeAudit}},
		Peers: []Peer{
			{Destinations: []string{"10.0.0.0/8"}, Address: "192.0.2.1:15008"},
			{Destinations: []string{"10.20.0.0/16", "2001:db8::/32"}, Address: "192.0.2.2:15008"},
			{Destinations: []string{"10.20.30.40"}, Address: "[2001:db8::9]:443"},
			{Destinations: []string{"::/0"}, Address: "[2001:db8::1]:15008"},
		},
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		dst  string
		want string // "" for no match
	}{
		{"10.1.2.3", "192.0.2.1:15008"},
		{"10.20.1.1", "192.0.2.2:15008"},
		{"10.20.30.40", "[2001:db8::9]:443"},
		{"::ffff:10.20.30.40", "[2001:db8::9]:443"}, // v4-mapped matches the IPv4 /32
		{"::ffff:10.1.0.1", "192.0.2.1:15008"},      // the IPv4 /8 beats ::/0
		{"2001:db8::5", "192.0.2.2:15008"},
		{"2001:db8::5%eth0", "192.0.2.2:15008"},
		{"2001:db9::5", "[2001:db8::1]:15008"},
		{"192.168.1.1", ""},
	} {
		ap, ok := c.PeerFor(netip.MustParseAddr(tt.dst))
		switch {
		case tt.want == "" && ok:
			t.Errorf("PeerFor(%s) = %v, want no match", tt.dst, ap)
		case tt.want != "" && (!ok || ap != netip.MustParseAddrPort(tt.want)):
			t.Errorf("PeerFor(%s) = %v, %v, want %s", tt.dst, ap, ok, tt.want)
		}
	}
}
