package config

import (
	"strings"
	"testing"
)

// TestTunnelPooling: rules[].upstream.tunnel.pooling is a boolean, unset
// meaning true; Equal compares it by value.
func TestTunnelPooling(t *testing.T) {
	f := newTunnelFiles(t)
	tun := func(s string) string {
		return f.expand(`rules: [{name: t, ports: [9090], mode: enforce, upstream: {tunnel: {certFile: $CERT, keyFile: $KEY` + s + `}}}]`)
	}
	for _, tc := range []struct {
		yaml  string
		set   bool // Pooling non-nil
		pools bool
	}{
		{"", false, true},
		{", pooling: true", true, true},
		{", pooling: false", true, false},
	} {
		c, err := Parse([]byte(tun(tc.yaml)))
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		tn := c.Rules[0].Upstream.Tunnel
		if (tn.Pooling != nil) != tc.set || tn.Pools() != tc.pools {
			t.Errorf("%q: Pooling %v, Pools() %v; want set %v, pools %v", tc.yaml, tn.Pooling, tn.Pools(), tc.set, tc.pools)
		}
	}

	for _, bad := range []string{`, pooling: "false"`, `, pooling: 0`, `, pooling: [false]`} {
		_, err := Parse([]byte(tun(bad)))
		if err == nil || !strings.Contains(err.Error(), "rules[0].upstream.tunnel.pooling: want true or false") {
			t.Errorf("%q: %v, want a pooling type error", bad, err)
		}
	}
	if _, err := Parse([]byte(tun(", poolling: false"))); err == nil || !strings.Contains(err.Error(), `did you mean "pooling"`) {
		t.Errorf("misspelt key: %v", err)
	}

	yes, no := true, false
	for _, tc := range []struct {
		a, b *bool
		eq   bool
	}{
		{nil, nil, true}, {nil, &yes, true}, {&yes, new(bool(true)), true},
		{nil, &no, false}, {&yes, &no, false}, {&no, new(bool(false)), true},
	} {
		a, b := Tunnel{Port: 1, Pooling: tc.a}, Tunnel{Port: 1, Pooling: tc.b}
		if a.Equal(b) != tc.eq || b.Equal(a) != tc.eq {
			t.Errorf("Equal(%v, %v) = %v, want %v", tc.a, tc.b, a.Equal(b), tc.eq)
		}
	}
	if (Tunnel{Port: 1}).Equal(Tunnel{Port: 2}) {
		t.Error("Equal ignores Port")
	}

	// The example's commented key, uncommented, parses.
	y := strings.Replace(exampleWithTunnel(t, f, tokenFileMarker), "#pooling: true", "pooling: false", 1)
	c, err := Parse([]byte(y))
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if tn := c.RuleByName("legacy-executor").Upstream.Tunnel; tn.Pools() {
		t.Errorf("example with pooling: false: %+v", tn)
	}
}
