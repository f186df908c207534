package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// briefExample is the example from the design notes; its paths are rewritten
// to test files by files.expand.
const briefExample = `
cgroup: /sys/fs/cgroup/legacy
bpf: {pinPath: /sys/fs/bpf/intransit}
proxy: {port: 15001}
audit: {file: /var/log/intransit/audit.jsonl}
metrics: {listen: 127.0.0.1:9464}
rules:
  - name: executor
    ports: [8080]
    destinations: [10.0.0.0/8]
    mode: enforce
    upstream: {tls: {port: 8443, serverName: executor.internal, caFile: /etc/intransit/ca.pem}}
`

// testFiles are PEM files generated in a temp dir.
type testFiles struct {
	dir      string // exists; audit files go here
	ca       string // a CA certificate
	notPEM   string // plain text
	keyOnly  string // PEM without a certificate
	badCert  string // a CERTIFICATE block holding garbage
	cert     string // client certificate signed by ca
	key      string // its key
	otherKey string // a key not matching cert
}

func newTestFiles(t testing.TB) *testFiles {
	t.Helper()
	dir := t.TempDir()
	f := &testFiles{
		dir:      dir,
		ca:       filepath.Join(dir, "ca.pem"),
		notPEM:   filepath.Join(dir, "not.pem"),
		keyOnly:  filepath.Join(dir, "keyonly.pem"),
		badCert:  filepath.Join(dir, "bad.pem"),
		cert:     filepath.Join(dir, "client.pem"),
		key:      filepath.Join(dir, "client-key.pem"),
		otherKey: filepath.Join(dir, "other-key.pem"),
	}
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "intransit test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	clientKey := newKey(t)
	clientDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "client"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, &clientKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, f.ca, "CERTIFICATE", caDER)
	writePEM(t, f.cert, "CERTIFICATE", clientDER)
	writePEM(t, f.key, "PRIVATE KEY", keyDER(t, clientKey))
	writePEM(t, f.otherKey, "PRIVATE KEY", keyDER(t, newKey(t)))
	writePEM(t, f.keyOnly, "PRIVATE KEY", keyDER(t, clientKey))
	writePEM(t, f.badCert, "CERTIFICATE", []byte("not DER"))
	if err := os.WriteFile(f.notPEM, []byte("hello, not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func keyDER(t testing.TB, k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// expand replaces $DIR, $CA, $NOTPEM, ... and the example's absolute paths.
func (f *testFiles) expand(s string) string {
	return strings.NewReplacer(
		"/etc/intransit/ca.pem", f.ca,
		"/var/log/intransit", f.dir,
		"$DIR", f.dir,
		"$CA", f.ca,
		"$NOTPEM", f.notPEM,
		"$KEYONLY", f.keyOnly,
		"$BADCERT", f.badCert,
		"$CERT", f.cert,
		"$KEY", f.key,
		"$OTHERKEY", f.otherKey,
	).Replace(s)
}

func TestParseBriefExample(t *testing.T) {
	f := newTestFiles(t)
	c, err := Parse([]byte(f.expand(briefExample)))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.Cgroup != "/sys/fs/cgroup/legacy" {
		t.Errorf("Cgroup = %q", c.Cgroup)
	}
	want := BPF{PinPath: "/sys/fs/bpf/intransit", MapSize: 65536, Mark: 0x1e7a0001}
	if c.BPF != want {
		t.Errorf("BPF = %+v, want %+v", c.BPF, want)
	}
	wantProxy := Proxy{
		Port:             15001,
		DialTimeout:      Duration{5 * time.Second},
		HandshakeTimeout: Duration{10 * time.Second},
		IdleTimeout:      Duration{time.Hour},
		DrainTimeout:     Duration{DefaultDrainTimeout},
	}
	if c.Proxy != wantProxy {
		t.Errorf("Proxy = %+v, want %+v", c.Proxy, wantProxy)
	}
	if want := filepath.Join(f.dir, "audit.jsonl"); c.Audit.File != want {
		t.Errorf("Audit.File = %q, want %q", c.Audit.File, want)
	}
	if c.Metrics.Listen != "127.0.0.1:9464" {
		t.Errorf("Metrics.Listen = %q", c.Metrics.Listen)
	}
	if c.API.Socket != "/run/intransit/api.sock" {
		t.Errorf("API.Socket = %q", c.API.Socket)
	}
	if len(c.Rules) != 1 {
		t.Fatalf("got %d rules", len(c.Rules))
	}
	r := c.Rules[0]
	if r.Name != "executor" || r.Mode != ModeEnforce || !slices.Equal(r.Ports, []int{8080}) {
		t.Errorf("rule = %+v", r)
	}
	if !slices.Equal(r.Prefixes, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}) {
		t.Errorf("Prefixes = %v", r.Prefixes)
	}
	wantTLS := TLS{Port: 8443, ServerName: "executor.internal", CAFile: f.ca}
	if r.Upstream.TLS == nil || *r.Upstream.TLS != wantTLS {
		t.Errorf("TLS = %+v, want %+v", r.Upstream.TLS, wantTLS)
	}
	if c.RuleByName("executor") != &c.Rules[0] {
		t.Error("RuleByName(executor) does not point into Rules")
	}
	if c.RuleByName("nope") != nil {
		t.Error("RuleByName(nope) != nil")
	}
}

func TestExampleYAMLParses(t *testing.T) {
	c, err := Parse([]byte(ExampleYAML))
	if err != nil {
		t.Fatalf("ExampleYAML: %v", err)
	}
	// The example states the defaults, so it must equal an empty config's.
	var d Config
	d.SetDefaults()
	if c.BPF != d.BPF || c.Proxy != d.Proxy || c.Audit != d.Audit || c.Metrics != d.Metrics || c.API != d.API {
		t.Errorf("ExampleYAML values differ from the defaults:\n got %+v\nwant %+v", c, d)
	}
	if len(c.Rules) != 3 {
		t.Errorf("got %d rules", len(c.Rules))
	}
}

// TestExampleYAMLCommentedKeys checks that uncommenting the optional keys
// still gives a valid config, once the file paths point somewhere real.
func TestExampleYAMLCommentedKeys(t *testing.T) {
	f := newTestFiles(t)
	y := strings.NewReplacer(
		"#cgroup:", "cgroup:",
		"#caFile: /etc/intransit/ca.pem", "caFile: "+f.ca,
		"#certFile: /etc/intransit/client.pem", "certFile: "+f.cert,
		"#keyFile: /etc/intransit/client-key.pem", "keyFile: "+f.key,
	).Replace(ExampleYAML)
	c, err := Parse([]byte(y))
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if tl := c.Rules[0].Upstream.TLS; tl.CAFile != f.ca || tl.CertFile != f.cert || tl.KeyFile != f.key || c.Cgroup == "" {
		t.Errorf("uncommented keys not picked up: %+v %q", tl, c.Cgroup)
	}
}

func TestParseValid(t *testing.T) {
	f := newTestFiles(t)
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, c *Config)
	}{
		{
			name: "minimal config gets every default",
			yaml: `rules: [{name: a, ports: [80], mode: audit}]`,
			check: func(t *testing.T, c *Config) {
				var d Config
				d.SetDefaults()
				d.Rules = c.Rules
				if c.Cgroup != "" || c.BPF != d.BPF || c.Proxy != d.Proxy || c.Audit.File != "-" || c.Metrics != d.Metrics || c.API != d.API {
					t.Errorf("got %+v", c)
				}
				if len(c.Rules[0].Prefixes) != 0 {
					t.Errorf("Prefixes = %v, want none", c.Rules[0].Prefixes)
				}
			},
		},
		{
			name: "negative idleTimeout stays negative, zero means default",
			yaml: `
proxy: {idleTimeout: -1s, dialTimeout: 0s}
rules: [{name: a, ports: [80], mode: audit}]`,
			check: func(t *testing.T, c *Config) {
				if c.Proxy.IdleTimeout.Duration != -time.Second || c.Proxy.DialTimeout.Duration != 5*time.Second {
					t.Errorf("Proxy = %+v", c.Proxy)
				}
			},
		},
		{
			name: "bare IPs become host prefixes and prefixes are masked",
			yaml: `rules: [{name: a, ports: [80], mode: audit, destinations: [10.1.2.3, "2001:db8::1", 192.168.7.9/16, "2001:db8:1::/32"]}]`,
			check: func(t *testing.T, c *Config) {
				want := []netip.Prefix{
					netip.MustParsePrefix("10.1.2.3/32"),
					netip.MustParsePrefix("2001:db8::1/128"),
					netip.MustParsePrefix("192.168.0.0/16"),
					netip.MustParsePrefix("2001:db8::/32"),
				}
				if got := c.Rules[0].Prefixes; !slices.Equal(got, want) {
					t.Errorf("Prefixes = %v, want %v", got, want)
				}
			},
		},
		{
			name: "client certificate, IP server name, tls.port 0",
			yaml: `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {port: 0, serverName: "10.0.0.1", caFile: $CA, certFile: $CERT, keyFile: $KEY}}}]`,
			check: func(t *testing.T, c *Config) {
				if tl := c.Rules[0].Upstream.TLS; tl.CertFile != f.cert || tl.KeyFile != f.key || tl.Port != 0 {
					t.Errorf("TLS = %+v", tl)
				}
			},
		},
		{
			name: "unquoted off disables metrics, so the metrics port is free",
			yaml: `
metrics: {listen: off}
rules: [{name: a, ports: [9464], mode: audit}]`,
			check: func(t *testing.T, c *Config) {
				if c.Metrics.Listen != "off" {
					t.Errorf("Metrics.Listen = %q", c.Metrics.Listen)
				}
			},
		},
		{
			name: "metrics port is fine for rules that cannot reach loopback",
			yaml: `rules: [{name: a, ports: [9464], destinations: [10.0.0.0/8], mode: audit}]`,
		},
		{
			name: "same port with different prefixes in two rules",
			yaml: `
rules:
  - {name: a, ports: [80], destinations: [10.0.0.0/8], mode: audit}
  - {name: b, ports: [80], destinations: [10.1.0.0/16], mode: deny}
  - {name: c, ports: [80], mode: audit}`,
		},
		{
			name: "audit file in an existing directory, hex mark, custom proxy port",
			yaml: `
bpf: {mark: 0x10, mapSize: 64}
proxy: {port: 9000}
audit: {file: $DIR/audit.jsonl}
rules: [{name: a.b_c-1, ports: [80, 443], mode: audit}]`,
			check: func(t *testing.T, c *Config) {
				if c.BPF.Mark != 0x10 || c.BPF.MapSize != 64 || c.Proxy.Port != 9000 {
					t.Errorf("got %+v %+v", c.BPF, c.Proxy)
				}
			},
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

// rule is a valid rule to pad error cases with.
const rule = "rules: [{name: a, ports: [80], mode: audit}]\n"

func TestParseErrors(t *testing.T) {
	f := newTestFiles(t)
	long := strings.Repeat("x", 64)
	tests := []struct {
		name string
		yaml string
		// each entry lists substrings that must share one line of the error
		want [][]string
	}{
		// decoding
		{"unknown key", `rules: [{name: a, prots: [80], ports: [80], mode: audit}]`,
			[][]string{{`unknown key "rules[0].prots"`, `did you mean "ports"`}}},
		{"unknown top-level key", "colour: red\n" + rule, [][]string{{`unknown key "colour"`}}},
		{"key in the wrong case", "bpf: {PinPath: /x}\n" + rule,
			[][]string{{`unknown key "bpf.PinPath"`, `did you mean "pinPath"`}}},
		{"duplicate key", "proxy:\n  port: 1000\n  port: 2000\n" + rule, [][]string{{`config: yaml: line 3: key "port" already set`}}},
		{"yaml syntax", "rules: [", [][]string{{"yaml"}}},
		{"top level is a list", "- a\n- b\n", [][]string{{"top level", "want a mapping", "a list"}}},
		{"port is a string", `rules: [{name: a, ports: [http], mode: audit}]`,
			[][]string{{"rules[0].ports[0]", `"http"`, "integer"}}},
		{"port is fractional", `rules: [{name: a, ports: [80.5], mode: audit}]`,
			[][]string{{"rules[0].ports[0]", "80.5"}}},
		{"rules is a mapping", `rules: {name: a}`, [][]string{{"rules", "want a list"}}},
		{"duration is a number", "proxy: {dialTimeout: 5}\n" + rule,
			[][]string{{"proxy.dialTimeout", "5", "duration"}}},
		{"duration does not parse", "proxy: {handshakeTimeout: 5 parsecs}\n" + rule,
			[][]string{{"proxy.handshakeTimeout", `"5 parsecs"`}}},
		{"negative mark", "bpf: {mark: -1}\n" + rule, [][]string{{"bpf.mark", "-1"}}},
		{"boolean for a string", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {serverName: yes}}}]`,
			[][]string{{"rules[0].upstream.tls.serverName", "boolean true"}}},

		// global keys
		{"cgroup relative", "cgroup: sys/fs/cgroup\n" + rule, [][]string{{"cgroup", `"sys/fs/cgroup"`, "absolute"}}},
		{"pinPath relative", "bpf: {pinPath: bpf}\n" + rule, [][]string{{"bpf.pinPath", `"bpf"`}}},
		{"mapSize too small", "bpf: {mapSize: 10}\n" + rule, [][]string{{"bpf.mapSize", "10", "64..16777216"}}},
		{"mapSize too large", "bpf: {mapSize: 16777217}\n" + rule, [][]string{{"bpf.mapSize", "16777217"}}},
		{"mapSize explicit 0", "bpf: {mapSize: 0}\n" + rule, [][]string{{"bpf.mapSize", "0"}}},
		{"mark explicit 0", "bpf: {mark: 0}\n" + rule, [][]string{{"bpf.mark", "0 is not allowed"}}},
		{"proxy port too large", "proxy: {port: 70000}\n" + rule, [][]string{{"proxy.port", "70000", "1..65535"}}},
		{"proxy port negative", "proxy: {port: -1}\n" + rule, [][]string{{"proxy.port", "-1"}}},
		{"proxy port explicit 0", "proxy: {port: 0}\n" + rule, [][]string{{"proxy.port", "0"}}},
		{"negative dialTimeout", "proxy: {dialTimeout: -1s}\n" + rule, [][]string{{"proxy.dialTimeout", "-1s", "negative"}}},
		{"negative handshakeTimeout", "proxy: {handshakeTimeout: -2m}\n" + rule, [][]string{{"proxy.handshakeTimeout", "-2m0s"}}},
		{"audit dir missing", "audit: {file: $DIR/nope/audit.jsonl}\n" + rule,
			[][]string{{"audit.file", f.dir + "/nope/audit.jsonl", "no such file"}}},
		{"audit file is a directory", "audit: {file: $DIR}\n" + rule, [][]string{{"audit.file", f.dir, "is a directory"}}},
		{"metrics missing port", "metrics: {listen: localhost}\n" + rule, [][]string{{"metrics.listen", `"localhost"`, "missing port"}}},
		{"metrics named port", "metrics: {listen: 'localhost:http'}\n" + rule, [][]string{{"metrics.listen", `"localhost:http"`, "not a number"}}},
		{"metrics port out of range", "metrics: {listen: ':70000'}\n" + rule, [][]string{{"metrics.listen", `":70000"`}}},
		{"metrics listen true", "metrics: {listen: on}\n" + rule, [][]string{{"metrics.listen", "boolean true"}}},
		{"api socket relative", "api: {socket: api.sock}\n" + rule, [][]string{{"api.socket", `"api.sock"`, "absolute"}}},
		{"api socket too long", "api: {socket: /" + strings.Repeat("s", 120) + "}\n" + rule, [][]string{{"api.socket", "longer than 107"}}},

		// rules
		{"no rules", "rules: []", [][]string{{"rules", "at least one rule"}}},
		{"empty document", "", [][]string{{"rules", "at least one rule"}}},
		{"empty name", `rules: [{ports: [80], mode: audit}]`, [][]string{{"rules[0].name", "required"}}},
		{"bad name", `rules: [{name: "a b!", ports: [80], mode: audit}]`, [][]string{{"rules[0].name", `"a b!"`, "must match"}}},
		{"name too long", `rules: [{name: ` + long + `, ports: [80], mode: audit}]`, [][]string{{"rules[0].name", long}}},
		{"duplicate name", `
rules:
  - {name: a, ports: [80], mode: audit}
  - {name: a, ports: [81], mode: audit}`, [][]string{{"rules[1].name", `"a"`, "rules[0]"}}},
		{"no ports", `rules: [{name: a, mode: audit}]`, [][]string{{"rules[0].ports", "at least one port"}}},
		{"port 0", `rules: [{name: a, ports: [80, 0], mode: audit}]`, [][]string{{"rules[0].ports[1]", "0 is not in 1..65535"}}},
		{"port too large", `rules: [{name: a, ports: [65536], mode: audit}]`, [][]string{{"rules[0].ports[0]", "65536"}}},
		{"duplicate port", `rules: [{name: a, ports: [80, 443, 80], mode: audit}]`,
			[][]string{{"rules[0].ports[2]", "80", "twice", "rules[0].ports[0]"}}},
		{"unparseable CIDR", `rules: [{name: a, ports: [80], mode: audit, destinations: [10.0.0.0/33]}]`,
			[][]string{{"rules[0].destinations[0]", `"10.0.0.0/33"`}}},
		{"not an address", `rules: [{name: a, ports: [80], mode: audit, destinations: [10.0.0.0/8, example.com]}]`,
			[][]string{{"rules[0].destinations[1]", `"example.com"`}}},
		{"zone", `rules: [{name: a, ports: [80], mode: audit, destinations: ["fe80::1%eth0"]}]`,
			[][]string{{"rules[0].destinations[0]", `"fe80::1%eth0"`, "zone"}}},
		{"duplicate destination after masking", `rules: [{name: a, ports: [80], mode: audit, destinations: [10.0.0.0/8, 10.1.0.0/8]}]`,
			[][]string{{"rules[0].destinations[1]", `"10.1.0.0/8"`, "rules[0].destinations[0]"}}},
		{"same selector in two rules", `
rules:
  - {name: a, ports: [80, 443], destinations: [10.0.0.0/8], mode: audit}
  - {name: b, ports: [443], destinations: [10.0.0.0/8], mode: deny}`,
			[][]string{{"rules[1]", "port 443", "10.0.0.0/8", `rules[0] ("a")`, `rules[1] ("b")`}}},
		{"two rules without destinations", `
rules:
  - {name: a, ports: [80], mode: audit}
  - {name: b, ports: [80], mode: deny}`,
			[][]string{{"rules[1]", "port 80", `"a"`, `"b"`, "every address"}}},
		{"any vs ::/0", `
rules:
  - {name: a, ports: [80], mode: audit}
  - {name: b, ports: [80], destinations: ["::/0"], mode: deny}`,
			[][]string{{"rules[1]", "port 80", "::/0", `"a"`, `"b"`}}},
		{"mode outside the set", `rules: [{name: a, ports: [80], mode: block}]`,
			[][]string{{"rules[0].mode", `"block" is not one of audit, enforce, deny`}}},
		{"mode missing", `rules: [{name: a, ports: [80]}]`, [][]string{{"rules[0].mode", "required"}}},
		{"port clash with the proxy", `rules: [{name: a, ports: [15001], mode: audit}]`,
			[][]string{{"rules[0].ports[0]", "15001", "proxy.port: 15001"}}},
		{"port clash with a custom proxy port", "proxy: {port: 9000}\n" + `rules: [{name: a, ports: [80, 9000], mode: audit}]`,
			[][]string{{"rules[0].ports[1]", "9000", "proxy.port: 9000"}}},
		{"port clash with metrics, no destinations", `rules: [{name: a, ports: [9464], mode: audit}]`,
			[][]string{{"rules[0].ports[0]", "9464", `metrics.listen: "127.0.0.1:9464"`}}},
		{"port clash with metrics, loopback destination", "metrics: {listen: '[::1]:9000'}\n" + `rules: [{name: a, ports: [9000], destinations: ["::/0"], mode: audit}]`,
			[][]string{{"rules[0].ports[0]", "9000", `metrics.listen: "[::1]:9000"`}}},
		{"enforce without tls", `rules: [{name: a, ports: [80], mode: enforce}]`,
			[][]string{{"rules[0].upstream.tls", "required when mode is enforce"}}},
		{"audit with tls", `rules: [{name: a, ports: [80], mode: audit, upstream: {tls: {}}}]`,
			[][]string{{"rules[0].upstream.tls", "not allowed when mode is audit"}}},
		{"deny with tls", `rules: [{name: a, ports: [80], mode: deny, upstream: {tls: {port: 443}}}]`,
			[][]string{{"rules[0].upstream.tls", "not allowed when mode is deny"}}},
		{"tls port out of range", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {port: 70000}}}]`,
			[][]string{{"rules[0].upstream.tls.port", "70000"}}},
		{"tls port negative", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {port: -443}}}]`,
			[][]string{{"rules[0].upstream.tls.port", "-443"}}},
		{"bad server name", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {serverName: "exa mple.com"}}}]`,
			[][]string{{"rules[0].upstream.tls.serverName", `"exa mple.com"`}}},
		{"wildcard server name", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {serverName: "*.example.com"}}}]`,
			[][]string{{"rules[0].upstream.tls.serverName", `"*.example.com"`}}},
		{"mistyped IP server name", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {serverName: 10.0.0.300}}}]`,
			[][]string{{"rules[0].upstream.tls.serverName", `"10.0.0.300"`}}},
		{"server name label starts with hyphen", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {serverName: -a.example.com}}}]`,
			[][]string{{"rules[0].upstream.tls.serverName", `"-a.example.com"`}}},
		{"CA file missing", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {caFile: $DIR/missing.pem}}}]`,
			[][]string{{"rules[0].upstream.tls.caFile", f.dir + "/missing.pem", "no such file or directory"}}},
		{"CA file not PEM", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {caFile: $NOTPEM}}}]`,
			[][]string{{"rules[0].upstream.tls.caFile", f.notPEM, "no PEM certificate"}}},
		{"CA file holds only a key", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {caFile: $KEYONLY}}}]`,
			[][]string{{"rules[0].upstream.tls.caFile", f.keyOnly, "no PEM certificate"}}},
		{"CA certificate does not parse", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {caFile: $BADCERT}}}]`,
			[][]string{{"rules[0].upstream.tls.caFile", f.badCert, "certificate #1"}}},
		{"CA file is a directory", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {caFile: $DIR}}}]`,
			[][]string{{"rules[0].upstream.tls.caFile", f.dir, "is a directory"}}},
		{"cert without key", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {certFile: $CERT}}}]`,
			[][]string{{"rules[0].upstream.tls", "certFile", f.cert, "keyFile is empty"}}},
		{"key without cert", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {keyFile: $KEY}}}]`,
			[][]string{{"rules[0].upstream.tls", "keyFile", f.key, "certFile is empty"}}},
		{"cert and key do not match", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {certFile: $CERT, keyFile: $OTHERKEY}}}]`,
			[][]string{{"rules[0].upstream.tls.certFile", f.cert, "rules[0].upstream.tls.keyFile", f.otherKey, "does not match"}}},
		{"cert file missing", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {certFile: $DIR/nope.pem, keyFile: $KEY}}}]`,
			[][]string{{"rules[0].upstream.tls.certFile", f.dir + "/nope.pem", "no such file"}}},
		{"cert file not PEM", `rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {certFile: $NOTPEM, keyFile: $KEY}}}]`,
			[][]string{{"rules[0].upstream.tls.certFile", f.notPEM, "rules[0].upstream.tls.keyFile", "PEM"}}},
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

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func TestParseReportsAllErrors(t *testing.T) {
	y := `
bpf: {mapSize: 1}
proxy: {dialTimeout: -1s}
metrics: {listen: nowhere}
rules:
  - {name: "bad name", ports: [0, 15001], mode: block}
  - {name: b, ports: [80], destinations: [300.0.0.0/8], mode: enforce}
`
	_, err := Parse([]byte(y))
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	want := []string{
		"bpf.mapSize: 1 ",
		"proxy.dialTimeout: -1s ",
		`metrics.listen: "nowhere" `,
		`rules[0].name: "bad name" `,
		"rules[0].ports[0]: 0 ",
		"rules[0].ports[1]: 15001 clashes with proxy.port",
		`rules[0].mode: "block" `,
		`rules[1].destinations[0]: "300.0.0.0/8" `,
		"rules[1].upstream.tls: required",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Errorf("got %d error lines, want %d:\n%v", len(lines), len(want), err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), "config: "+w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	// Structural problems are all reported too, before any validation.
	_, err = Parse([]byte("bogus: 1\nproxy: {port: x, typo: 2}\n" + rule))
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Errorf("want 3 lines, got:\n%v", err)
	}
}

func TestLoad(t *testing.T) {
	f := newTestFiles(t)
	path := filepath.Join(f.dir, "intransit.yaml")
	if err := os.WriteFile(path, []byte(f.expand(briefExample)), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.RuleByName("executor") == nil {
		t.Error("rule executor missing")
	}

	_, err = Load(filepath.Join(f.dir, "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("Load(missing) = %v", err)
	}

	// Errors from a file are prefixed with its path, one per line.
	if err := os.WriteFile(path, []byte("rules: [{name: a, ports: [80], mode: block, upstream: {tls: {caFile: /nonexistent/ca.pem}}}]"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if err == nil {
		t.Fatal("Load succeeded")
	}
	for l := range strings.SplitSeq(err.Error(), "\n") {
		if !strings.HasPrefix(l, path+": rules[0].") {
			t.Errorf("line %q not prefixed with the path and key", l)
		}
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the caFile error should wrap fs.ErrNotExist: %v", err)
	}
}

func TestValidateHandBuilt(t *testing.T) {
	c := &Config{Rules: []Rule{{Name: "a", Ports: []int{80}, Mode: ModeAudit, Destinations: []string{"10.0.0.1"}}}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "bpf.mark") {
		t.Errorf("Validate without defaults = %v, want a bpf.mark error", err)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if want := netip.MustParsePrefix("10.0.0.1/32"); len(c.Rules[0].Prefixes) != 1 || c.Rules[0].Prefixes[0] != want {
		t.Errorf("Prefixes = %v", c.Rules[0].Prefixes)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(ExampleYAML))
	f.Add([]byte(briefExample))
	f.Add([]byte(rule))
	f.Add([]byte("rules: [{name: a, ports: [80, 80, 0], destinations: [::/0, 10.0.0.0/33], mode: enforce, upstream: {tls: {port: -1, serverName: '*'}}}]"))
	f.Add([]byte("proxy: {port: 0, idleTimeout: -1s}\nbpf: {mark: 0x0}\nmetrics: {listen: off}\n" + rule))
	f.Add([]byte("- a\n- b"))
	f.Add([]byte(`
identity: {token: {kubernetes: {ttl: 1h}}}
peers: [{destinations: [10.20.0.0/16, "::/0"], address: "192.0.2.10:15008"}, {destinations: [10.20.0.0/16], address: x}]
rules: [{name: t, ports: [9090], mode: enforce, upstream: {tunnel: {port: 0, serverName: peer}}}]
inbound: {listen: ":15008", oidc: {issuer: "http://localhost/x"}, services: [{name: s, port: 8080, forward: "127.0.0.1:15008", mode: deny, allow: [{}, {claims: {"a/b": c, d: 1}}, {peerSAN: x}]}]}
`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		if len(c.Rules) == 0 && c.Inbound == nil {
			t.Fatal("valid config without rules or inbound")
		}
		for _, r := range c.Rules {
			if len(r.Prefixes) != len(r.Destinations) {
				t.Fatalf("rule %q: %d prefixes for %d destinations", r.Name, len(r.Prefixes), len(r.Destinations))
			}
			if r.Mode == ModeEnforce && (r.Upstream.TLS == nil) == (r.Upstream.Tunnel == nil) {
				t.Fatalf("rule %q: enforce without exactly one upstream: %+v", r.Name, r.Upstream)
			}
		}
		for i, p := range c.Peers {
			if len(p.Prefixes) != len(p.Destinations) || len(p.Prefixes) == 0 || !p.AddrPort.IsValid() {
				t.Fatalf("peers[%d] = %+v", i, p)
			}
		}
		if in := c.Inbound; in != nil {
			for _, s := range in.Services {
				if len(s.Allow) == 0 || s.Mode == ModeDeny {
					t.Fatalf("service %+v", s)
				}
				for _, a := range s.Allow {
					if !a.HasTokenFields() && !a.HasPeerFields() {
						t.Fatalf("service %q: empty allow entry", s.Name)
					}
				}
			}
		}
	})
}
