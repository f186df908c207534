package auth

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"net"
	"net/url"
	"strings"
	"testing"
)

// k8sClaims are claims shaped like a Kubernetes service-account token,
// decoded the way Verify decodes them.
func k8sClaims(t *testing.T) *Claims {
	t.Helper()
	doc := `{
		"iss": "https://kubernetes.default.svc",
		"sub": "system:serviceaccount:agents:planner",
		"aud": ["intransit", "vault"],
		"exp": 4102444800,
		"kubernetes.io": {
			"namespace": "agents",
			"serviceaccount": {"name": "planner", "uid": "5b1f"},
			"pod": {"name": "planner-0"}
		},
		"groups": ["system:serviceaccounts", "system:serviceaccounts:agents"],
		"https://example.com/roles": ["deployer"],
		"tier": 3,
		"admin": false
	}`
	var all map[string]any
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	if err := dec.Decode(&all); err != nil {
		t.Fatal(err)
	}
	c, err := parseClaims(mustJSON(t, all))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func peerCert() *x509.Certificate {
	spiffe, _ := url.Parse("spiffe://cluster.local/ns/agents/sa/planner")
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: "planner", Organization: []string{"agents"}},
		DNSNames:    []string{"planner.agents.svc"},
		URIs:        []*url.URL{spiffe},
		IPAddresses: []net.IP{net.ParseIP("10.1.2.3"), net.ParseIP("2001:db8::1")},
	}
}

func TestAllowed(t *testing.T) {
	claims := k8sClaims(t)
	peer := peerCert()
	token := Identity{Claims: claims}
	mtls := Identity{Peer: peer}
	both := Identity{Claims: claims, Peer: peer}

	tests := []struct {
		name  string
		allow []Allow
		id    Identity
		ok    bool
		match int
	}{
		{"empty list allows nothing", nil, both, false, -1},
		{"empty entry allows nothing", []Allow{{}}, both, false, -1},
		{"sub", []Allow{{Subject: "system:serviceaccount:agents:planner"}}, token, true, 0},
		{"sub differs", []Allow{{Subject: "system:serviceaccount:agents:other"}}, token, false, -1},
		{"iss and sub", []Allow{{Issuer: "https://kubernetes.default.svc", Subject: "system:serviceaccount:agents:planner"}}, token, true, 0},
		{"iss differs", []Allow{{Issuer: "https://other", Subject: "system:serviceaccount:agents:planner"}}, token, false, -1},
		{"aud in array", []Allow{{Audience: "vault"}}, token, true, 0},
		{"aud not in array", []Allow{{Audience: "kubernetes"}}, token, false, -1},
		{"namespace", []Allow{{Claims: map[string]string{"kubernetes.io/namespace": "agents"}}}, token, true, 0},
		{"namespace and sa", []Allow{{Claims: map[string]string{"kubernetes.io/namespace": "agents", "kubernetes.io/serviceaccount/name": "planner"}}}, token, true, 0},
		{"sa differs", []Allow{{Claims: map[string]string{"kubernetes.io/namespace": "agents", "kubernetes.io/serviceaccount/name": "builder"}}}, token, false, -1},
		{"dotted path is not a path", []Allow{{Claims: map[string]string{"kubernetes.io.namespace": "agents"}}}, token, false, -1},
		{"path into a string", []Allow{{Claims: map[string]string{"sub/x": "y"}}}, token, false, -1},
		{"object never matches", []Allow{{Claims: map[string]string{"kubernetes.io/pod": "planner-0"}}}, token, false, -1},
		{"array element", []Allow{{Claims: map[string]string{"groups": "system:serviceaccounts:agents"}}}, token, true, 0},
		{"array without element", []Allow{{Claims: map[string]string{"groups": "system:masters"}}}, token, false, -1},
		{"aud via claims", []Allow{{Claims: map[string]string{"aud": "intransit"}}}, token, true, 0},
		{"escaped slash", []Allow{{Claims: map[string]string{"https:~1~1example.com~1roles": "deployer"}}}, token, true, 0},
		{"number as text", []Allow{{Claims: map[string]string{"tier": "3"}}}, token, true, 0},
		{"bool as text", []Allow{{Claims: map[string]string{"admin": "false"}}}, token, true, 0},
		{"missing claim", []Allow{{Claims: map[string]string{"team": "x"}}}, token, false, -1},
		{"token rule without token", []Allow{{Subject: "system:serviceaccount:agents:planner"}}, mtls, false, -1},
		{"peer CN", []Allow{{PeerSubject: "planner"}}, mtls, true, 0},
		{"peer DN", []Allow{{PeerSubject: "CN=planner,O=agents"}}, mtls, true, 0},
		{"peer DN differs", []Allow{{PeerSubject: "CN=planner,O=other"}}, mtls, false, -1},
		{"peer SAN URI", []Allow{{PeerSAN: "spiffe://cluster.local/ns/agents/sa/planner"}}, mtls, true, 0},
		{"peer SAN URI differs", []Allow{{PeerSAN: "spiffe://cluster.local/ns/agents/sa/builder"}}, mtls, false, -1},
		{"peer SAN DNS any case", []Allow{{PeerSAN: "Planner.Agents.SVC"}}, mtls, true, 0},
		{"peer SAN IPv4", []Allow{{PeerSAN: "10.1.2.3"}}, mtls, true, 0},
		{"peer SAN IPv6 other spelling", []Allow{{PeerSAN: "2001:0db8:0:0:0:0:0:1"}}, mtls, true, 0},
		{"peer rule without mTLS", []Allow{{PeerSAN: "10.1.2.3"}}, token, false, -1},
		{"token and peer both required", []Allow{{Subject: "system:serviceaccount:agents:planner", PeerSAN: "spiffe://cluster.local/ns/agents/sa/planner"}}, both, true, 0},
		{"token and peer, peer missing", []Allow{{Subject: "system:serviceaccount:agents:planner", PeerSAN: "spiffe://cluster.local/ns/agents/sa/planner"}}, token, false, -1},
		{"second entry matches", []Allow{{Subject: "nobody"}, {PeerSubject: "planner"}}, both, true, 1},
		{"no identity", []Allow{{Subject: "system:serviceaccount:agents:planner"}, {PeerSubject: "planner"}}, Identity{}, false, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, i := Allowed(tc.allow, tc.id)
			if ok != tc.ok || i != tc.match {
				t.Fatalf("Allowed = %v, %d; want %v, %d", ok, i, tc.ok, tc.match)
			}
		})
	}
}

func TestAllowValidate(t *testing.T) {
	tests := []struct {
		a    Allow
		want string // "" for valid
	}{
		{Allow{Subject: "x"}, ""},
		{Allow{PeerSAN: "spiffe://a/b"}, ""},
		{Allow{Claims: map[string]string{"kubernetes.io/namespace": "agents", "https:~1~1e.com~1r": "x"}}, ""},
		{Allow{}, "none of iss, sub, aud, claims, peerSubject, peerSAN"},
		{Allow{Claims: map[string]string{}}, "none of"},
		{Allow{Claims: map[string]string{"": "x"}}, `claims[""]: empty claim name`},
		{Allow{Claims: map[string]string{"a//b": "x"}}, `claims["a//b"]: empty name`},
		{Allow{Claims: map[string]string{"/a": "x"}}, `claims["/a"]`},
		{Allow{Claims: map[string]string{"a~2": "x"}}, `claims["a~2"]: "~" must be followed by 0 or 1`},
		{Allow{Claims: map[string]string{"team": ""}}, `claims["team"]: empty value`},
	}
	for _, tc := range tests {
		err := tc.a.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.a, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want %q", tc.a, err, tc.want)
		}
	}
}

func TestAllowJSONNames(t *testing.T) {
	var a Allow
	doc := `{"iss":"i","sub":"s","aud":"a","claims":{"kubernetes.io/namespace":"agents"},"peerSubject":"CN=x","peerSAN":"spiffe://x"}`
	dec := json.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		t.Fatal(err)
	}
	if a.Issuer != "i" || a.Subject != "s" || a.Audience != "a" || a.Claims["kubernetes.io/namespace"] != "agents" || a.PeerSubject != "CN=x" || a.PeerSAN != "spiffe://x" {
		t.Fatalf("decoded %+v", a)
	}
}
