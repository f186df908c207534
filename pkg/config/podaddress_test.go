package config

import (
	"strings"
	"testing"
)

func TestProxyPodAddress(t *testing.T) {
	base := "rules:\n  - {name: r, ports: [8080], mode: deny}\n"
	c, err := Parse([]byte("proxy: {podAddress: 10.0.0.5}\n" + base))
	if err != nil || c.Proxy.PodAddress != "10.0.0.5" {
		t.Fatalf("valid podAddress: %v", err)
	}
	for _, bad := range []string{"127.0.0.1", "0.0.0.0", "fd00::1", "node-ip"} {
		_, err := Parse([]byte("proxy: {podAddress: " + bad + "}\n" + base))
		if err == nil || !strings.Contains(err.Error(), "proxy.podAddress") || !strings.Contains(err.Error(), bad) {
			t.Errorf("podAddress %s: %v, want an error naming the key and value", bad, err)
		}
	}
}
