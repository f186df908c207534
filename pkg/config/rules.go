package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Rule names become metrics labels, hence the conservative alphabet.
const ruleNamePattern = `[a-zA-Z0-9_.-]{1,63}`

var ruleNameRE = regexp.MustCompile(`^` + ruleNamePattern + `$`)

// A rule without destinations matches every address of both families.
var anyDestinations = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// IPv4 and IPv6 loopback, for the metrics listener clash check.
var loopbacks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// selector is what the kernel matches a connect on.
type selector struct {
	port      int
	prefix    netip.Prefix
	workloads string // the rule's workload selectors, canonical; "" for all
}

func (c *Config) checkRules(p *problems) {
	if len(c.Rules) == 0 {
		// An executor-only host protects its services and needs no rule.
		if c.Inbound == nil {
			p.add("rules", "at least one rule is required (or an inbound section, for a host that only serves tunnels)")
		}
		return
	}
	metricsPort, _ := c.MetricsPort()                // 0 when off or invalid (reported already)
	inboundHost, inboundPort, _ := c.inboundListen() // 0 without inbound or invalid (reported by checkInbound)
	names := map[string]int{}
	owners := map[selector]int{}
	reported := map[[2]int]bool{}
	for i := range c.Rules {
		r := &c.Rules[i]
		key := fmt.Sprintf("rules[%d]", i)
		switch {
		case r.Name == "":
			p.add(key+".name", "required")
		case !ruleNameRE.MatchString(r.Name):
			p.add(key+".name", "%q must match %s (it is a metrics label)", r.Name, ruleNamePattern)
		default:
			if j, dup := names[r.Name]; dup {
				p.add(key+".name", "%q is already used by rules[%d]", r.Name, j)
			} else {
				names[r.Name] = i
			}
		}
		r.Prefixes = checkDestinations(p, key, r.Destinations) // before checkPorts, which reads it
		ports := c.checkPorts(p, key, r, metricsPort, inboundPort, inboundHost)
		c.checkModeUpstream(p, key, r)
		checkRecordInject(p, key, r)
		wl := c.checkWorkloads(p, key, r)

		// The same (port, prefix) in two rules leaves the kernel to pick one.
		sels := r.Prefixes
		if len(r.Destinations) == 0 {
			sels = anyDestinations
		}
		for _, port := range ports {
			for _, pfx := range sels {
				s := selector{port, pfx, wl}
				j, taken := owners[s]
				if !taken {
					owners[s] = i
					continue
				}
				if !reported[[2]int{j, i}] {
					reported[[2]int{j, i}] = true
					p.add(key, "port %d to %s is selected by both rules[%d] (%q) and rules[%d] (%q)%s",
						port, pfx, j, c.Rules[j].Name, i, r.Name, anyNote(r, &c.Rules[j]))
				}
			}
		}
	}
}

func anyNote(a, b *Rule) string {
	if len(a.Destinations) == 0 || len(b.Destinations) == 0 {
		return " (a rule without destinations covers every address)"
	}
	return ""
}

// checkPorts returns the valid, distinct ports of r.
func (c *Config) checkPorts(p *problems, key string, r *Rule, metricsPort, inboundPort int, inboundHost netip.Addr) []int {
	if len(r.Ports) == 0 {
		p.add(key+".ports", "at least one port is required")
		return nil
	}
	var ports []int
	seen := map[int]int{}
	for k, port := range r.Ports {
		pkey := fmt.Sprintf("%s.ports[%d]", key, k)
		if !validPort(port) {
			p.add(pkey, "%d is not in 1..65535", port)
			continue
		}
		if j, dup := seen[port]; dup {
			p.add(pkey, "%d is listed twice (also %s.ports[%d])", port, key, j)
			continue
		}
		seen[port] = k
		ports = append(ports, port)
		// The proxy's own listener must never be a redirect target.
		if port == c.Proxy.Port {
			p.add(pkey, "%d clashes with proxy.port: %d", port, c.Proxy.Port)
		}
		if port == metricsPort && coversLoopback(r) {
			p.add(pkey, "%d clashes with metrics.listen: %q (the rule covers loopback destinations)", port, c.Metrics.Listen)
		}
		// Redirecting connects to the local tunnel listener would loop.
		if port == inboundPort {
			switch {
			case coversLoopback(r):
				p.add(pkey, "%d clashes with inbound.listen: %q (the rule covers loopback destinations)", port, c.Inbound.Listen)
			case inboundHost.IsValid() && !inboundHost.IsUnspecified() && covers(r, inboundHost):
				p.add(pkey, "%d clashes with inbound.listen: %q (the rule covers %s)", port, c.Inbound.Listen, inboundHost)
			}
		}
	}
	return ports
}

func coversLoopback(r *Rule) bool {
	if len(r.Destinations) == 0 {
		return true
	}
	for _, pfx := range r.Prefixes {
		for _, lo := range loopbacks {
			if pfx.Overlaps(lo) {
				return true
			}
		}
	}
	return false
}

func covers(r *Rule, a netip.Addr) bool {
	if len(r.Destinations) == 0 {
		return true
	}
	for _, pfx := range r.Prefixes {
		if pfx.Contains(a) || pfx.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// checkDestinations parses CIDRs and bare IPs into masked prefixes.
func checkDestinations(p *problems, key string, dests []string) []netip.Prefix {
	var out []netip.Prefix
	seen := map[netip.Prefix]int{}
	for k, d := range dests {
		dkey := fmt.Sprintf("%s.destinations[%d]", key, k)
		pfx, err := parseDestination(d)
		if err != nil {
			p.add(dkey, "%q is not an IP prefix or address: %v", d, err)
			continue
		}
		if j, dup := seen[pfx]; dup {
			p.add(dkey, "%q is the same prefix as %s.destinations[%d] (%s)", d, key, j, pfx)
			continue
		}
		seen[pfx] = k
		out = append(out, pfx)
	}
	return out
}

func parseDestination(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return pfx.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("zone %q not allowed", a.Zone())
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (c *Config) checkModeUpstream(p *problems, key string, r *Rule) {
	tls, tunnel := r.Upstream.TLS, r.Upstream.Tunnel
	switch r.Mode {
	case ModeEnforce:
		switch {
		case tls == nil && tunnel == nil:
			p.add(key+".upstream.tls", "required when mode is enforce, or %s.upstream.tunnel instead (exactly one of the two)", key)
		case tls != nil && tunnel != nil:
			p.add(key+".upstream", "both %[1]s.upstream.tls and %[1]s.upstream.tunnel are set; set exactly one of the two", key)
		}
	case ModeAudit, ModeDeny:
		// Refused rather than ignored: a stray upstream suggests a wrong mode.
		if tls != nil {
			p.add(key+".upstream.tls", "not allowed when mode is %s (only enforce rules dial upstream)", r.Mode)
		}
		if tunnel != nil {
			p.add(key+".upstream.tunnel", "not allowed when mode is %s (only enforce rules dial upstream)", r.Mode)
		}
		return
	case "":
		p.add(key+".mode", "required, one of audit, enforce, deny")
	default:
		p.add(key+".mode", "%q is not one of audit, enforce, deny", r.Mode)
	}
	if tls != nil {
		checkTLS(p, key+".upstream.tls", tls)
	}
	if tunnel != nil {
		c.checkTunnel(p, key+".upstream.tunnel", tunnel)
	}
}
