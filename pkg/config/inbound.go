package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// inboundListen parses inbound.listen into its host (invalid when empty,
// meaning every address) and port. The port is 0 without inbound.
func (c *Config) inboundListen() (netip.Addr, int, error) {
	if c.Inbound == nil {
		return netip.Addr{}, 0, nil
	}
	h, port, err := net.SplitHostPort(c.Inbound.Listen)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	n, err := strconv.Atoi(port)
	if err != nil || !validPort(n) {
		return netip.Addr{}, 0, fmt.Errorf("port %q is not a number in 1..65535", port)
	}
	if h == "" {
		return netip.Addr{}, n, nil
	}
	a, err := netip.ParseAddr(h)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("host %q is not empty or an IP address", h)
	}
	if a.Zone() != "" {
		return netip.Addr{}, 0, fmt.Errorf("zone %q not allowed", a.Zone())
	}
	return a, n, nil
}

func (c *Config) checkInbound(p *problems) {
	in := c.Inbound
	if in == nil {
		return
	}
	host, listenPort, err := c.inboundListen()
	if err != nil {
		p.add("inbound.listen", "%q is not host:port (host empty or an IP address): %v", in.Listen, err)
	} else {
		if listenPort == c.Proxy.Port {
			p.add("inbound.listen", "%q: port %d clashes with proxy.port: %d", in.Listen, listenPort, c.Proxy.Port)
		}
		if mp, _ := c.MetricsPort(); mp == listenPort && c.metricsOverlaps(host) {
			p.add("inbound.listen", "%q: port %d clashes with metrics.listen: %q", in.Listen, listenPort, c.Metrics.Listen)
		}
	}
	if in.Cgroup != "" && !filepath.IsAbs(in.Cgroup) {
		p.add("inbound.cgroup", "%q is not an absolute path", in.Cgroup)
	}

	t := in.TLS
	if t.CertFile == "" {
		p.add("inbound.tls.certFile", "required (the tunnel listener's PEM certificate)")
	}
	if t.KeyFile == "" {
		p.add("inbound.tls.keyFile", "required (the tunnel listener's PEM private key)")
	}
	if t.CertFile != "" && t.KeyFile != "" {
		checkKeyPair(p, "inbound.tls", t.CertFile, t.KeyFile)
	}
	checkCAFileKey(p, "inbound.tls.clientCAFile", t.ClientCAFile)

	if o := in.OIDC; o != nil {
		if o.Issuer == "" {
			p.add("inbound.oidc.issuer", "required (the issuer URL tokens must carry)")
		} else {
			checkIssuerURL(p, "inbound.oidc.issuer", o.Issuer)
		}
		if o.JWKSFile != "" {
			if err := checkJWKSFile(o.JWKSFile); err != nil {
				p.addErr(fmt.Errorf("inbound.oidc.jwksFile: %q: %w", o.JWKSFile, err))
			}
		}
	}

	if len(in.Services) == 0 {
		p.add("inbound.services", "at least one service is required")
	}
	names := map[string]int{}
	ports := map[int]int{}
	for i := range in.Services {
		s := &in.Services[i]
		key := fmt.Sprintf("inbound.services[%d]", i)
		switch {
		case s.Name == "":
			p.add(key+".name", "required")
		case !ruleNameRE.MatchString(s.Name):
			p.add(key+".name", "%q must match %s (it is a metrics label)", s.Name, ruleNamePattern)
		default:
			if j, dup := names[s.Name]; dup {
				p.add(key+".name", "%q is already used by inbound.services[%d]", s.Name, j)
			} else {
				names[s.Name] = i
			}
		}
		switch {
		case !validPort(s.Port):
			p.add(key+".port", "%d is not in 1..65535", s.Port)
		case s.Port == listenPort:
			p.add(key+".port", "%d clashes with inbound.listen: %q", s.Port, in.Listen)
		case s.Port == c.Proxy.Port:
			p.add(key+".port", "%d clashes with proxy.port: %d", s.Port, c.Proxy.Port)
		default:
			if j, dup := ports[s.Port]; dup {
				p.add(key+".port", "%d is already used by inbound.services[%d]", s.Port, j)
			} else {
				ports[s.Port] = i
			}
		}
		c.checkForward(p, key+".forward", s.Forward, listenPort)
		switch s.Mode {
		case ModeAudit, ModeEnforce:
		case ModeDeny:
			p.add(key+".mode", "%q is not valid for a service, one of audit, enforce (enforce drops off-host plaintext)", s.Mode)
		default:
			p.add(key+".mode", "%q is not one of audit, enforce", s.Mode)
		}
		if len(s.Allow) == 0 {
			p.add(key+".allow", "at least one entry is required (no entry would refuse every caller)")
		}
		for k := range s.Allow {
			checkAllow(p, fmt.Sprintf("%s.allow[%d]", key, k), &s.Allow[k], in)
		}
	}
}

// metricsOverlaps reports whether the metrics listener could take the same
// port on the same address as an inbound listener on host.
func (c *Config) metricsOverlaps(host netip.Addr) bool {
	if !host.IsValid() || host.IsUnspecified() {
		return true
	}
	mh, _, err := net.SplitHostPort(c.Metrics.Listen)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(mh)
	if err != nil {
		return true // empty or a name: assume the worst
	}
	return a.IsUnspecified() || a.Unmap() == host.Unmap()
}

// checkForward keeps the inbound side from forwarding anywhere but a local
// executor, and from forwarding into intransit's own listeners.
func (c *Config) checkForward(p *problems, key, s string, listenPort int) {
	if s == "" {
		p.add(key, "required, the loopback IP:port of the plaintext executor (e.g. 127.0.0.1:8080)")
		return
	}
	ap, err := netip.ParseAddrPort(s)
	switch {
	case err != nil:
		p.add(key, "%q is not a loopback IP:port such as 127.0.0.1:8080 or [::1]:8080: %v", s, err)
	case ap.Addr().Zone() != "":
		p.add(key, "%q: zone %q not allowed", s, ap.Addr().Zone())
	case !ap.Addr().Unmap().IsLoopback():
		p.add(key, "%q is not a loopback address: the inbound side forwards only to 127.0.0.0/8 or ::1", s)
	case ap.Port() == 0:
		p.add(key, "%q: port 0 is not in 1..65535", s)
	case int(ap.Port()) == listenPort:
		p.add(key, "%q points at inbound.listen's port %d: the tunnel would loop into itself", s, listenPort)
	case int(ap.Port()) == c.Proxy.Port:
		p.add(key, "%q points at proxy.port %d: the connection would loop into the proxy", s, c.Proxy.Port)
	}
}

func checkAllow(p *problems, key string, a *Allow, in *Inbound) {
	if !a.HasTokenFields() && !a.HasPeerFields() {
		p.add(key, "empty entry would allow every caller; set at least one of iss, sub, aud, claims, peerSubject, peerSAN")
		return
	}
	type field struct{ name, value string }
	if in.OIDC == nil {
		for _, f := range []field{{"iss", a.Issuer}, {"sub", a.Subject}, {"aud", a.Audience}} {
			if f.value != "" {
				p.add(key+"."+f.name, "%q needs inbound.oidc: without it callers' tokens are not verified", f.value)
			}
		}
		if len(a.Claims) > 0 {
			p.add(key+".claims", "needs inbound.oidc: without it callers' tokens are not verified")
		}
	} else if a.Issuer != "" && in.OIDC.Issuer != "" && a.Issuer != in.OIDC.Issuer {
		p.add(key+".iss", "%q can never match: tokens are verified against inbound.oidc.issuer %q", a.Issuer, in.OIDC.Issuer)
	}
	if in.TLS.ClientCAFile == "" {
		for _, f := range []field{{"peerSubject", a.PeerSubject}, {"peerSAN", a.PeerSAN}} {
			if f.value != "" {
				p.add(key+"."+f.name, "%q needs inbound.tls.clientCAFile: without mTLS callers present no certificate", f.value)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(a.Claims)) {
		ckey := fmt.Sprintf("%s.claims[%q]", key, name)
		switch {
		case name == "":
			p.add(ckey, "empty claim name")
		case slices.Contains(strings.Split(name, "/"), ""):
			p.add(ckey, "%q has an empty path segment (a claim name is a \"/\"-separated path into nested objects)", name)
		}
		if a.Claims[name] == "" {
			p.add(ckey, "empty value (claims compare as strings; give the value to match)")
		}
	}
}

// checkJWKSFile wants a JSON Web Key Set: an object whose "keys" array holds
// at least one key, each with a "kty".
func checkJWKSFile(path string) error {
	data, err := readSmall(path)
	if err != nil {
		return err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	raw, ok := doc["keys"]
	if !ok {
		return errors.New(`no "keys" array`)
	}
	var keys []map[string]any
	if err := json.Unmarshal(raw, &keys); err != nil {
		return errors.New(`"keys" is not an array of objects`)
	}
	if len(keys) == 0 {
		return errors.New(`"keys" is empty`)
	}
	for i, k := range keys {
		if kty, _ := k["kty"].(string); kty == "" {
			return fmt.Errorf(`keys[%d] has no "kty"`, i)
		}
	}
	return nil
}
