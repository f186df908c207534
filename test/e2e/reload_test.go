package e2e

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/intransit/intransit/pkg/config"
)

// TestReloadKeepsServingOnBadConfig (threat T16): a reload with a bad file is
// refused with a message naming the problem; the running rules keep working.
// A good reload switches a rule from enforce to deny without a gap.
func TestReloadKeepsServingOnBadConfig(t *testing.T) {
	p := newPKI(t)
	srv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)
	port := freePort(t)
	r := startAgent(t, agentOpts{enter: true, rules: enforceRule("exec", port, srv.port, ", caFile: "+p.ca.File)})
	dst := fmt.Sprintf("127.0.0.1:%d", port)
	check := func(stage string) {
		t.Helper()
		c, err := net.Dial("tcp4", dst)
		if err != nil {
			t.Fatalf("%s: dial: %v", stage, err)
		}
		defer c.Close()
		if got, err := roundTrip(c, "still here"); err != nil || got != "still here" {
			t.Fatalf("%s: echo %q, %v", stage, got, err)
		}
	}
	check("before reload")

	// A config whose CA file vanished is refused at load; one that changes
	// the proxy port is refused at reload.
	bad := *r.cfg
	bad.Proxy.Port++
	err := r.agent.Reload(&bad)
	if err == nil || !strings.Contains(err.Error(), "proxy.port") {
		t.Fatalf("reload with a new proxy.port: %v, want a refusal naming proxy.port", err)
	}
	_, err = config.Parse([]byte(strings.Replace(configYAML(r.cfg), p.ca.File, "/nonexistent/ca.pem", 1)))
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/ca.pem") {
		t.Fatalf("bad caFile: %v", err)
	}
	check("after refused reloads")

	good := *r.cfg
	good.Rules = append([]config.Rule(nil), r.cfg.Rules...)
	good.Rules[0].Mode = config.ModeDeny
	good.Rules[0].Upstream = config.Upstream{}
	if err := r.agent.Reload(&good); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp4", dst); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("after switching to deny: %v, want EPERM", err)
	}
}

func configYAML(c *config.Config) string {
	r := c.Rules[0]
	return fmt.Sprintf(`rules:
  - name: %s
    ports: [%d]
    mode: enforce
    upstream: {tls: {caFile: %s}}
`, r.Name, r.Ports[0], r.Upstream.TLS.CAFile)
}
