package config

import (
	"fmt"
	"net/netip"
)

func (c *Config) checkTunnel(p *problems, key string, t *Tunnel) {
	if !validPort(t.Port) {
		p.add(key+".port", "%d is not in 1..65535 (unset means %d)", t.Port, DefaultTunnelPort)
	}
	checkClientTLS(p, key, t.ServerName, t.CAFile, t.CertFile, t.KeyFile)
	// A half-set pair is reported above; only say this when neither is set.
	if c.Identity.Token == nil && t.CertFile == "" && t.KeyFile == "" {
		p.add(key, "neither identity.token nor %[1]s.certFile/keyFile is set: the peer agent could not authenticate this host; set identity.token or a client certificate", key)
	}
}

// checkPeers parses peers[].destinations and peers[].address into Prefixes
// and AddrPort.
func (c *Config) checkPeers(p *problems) {
	type where struct{ peer, dest int }
	owners := map[netip.Prefix]where{}
	for i := range c.Peers {
		pr := &c.Peers[i]
		key := fmt.Sprintf("peers[%d]", i)
		if len(pr.Destinations) == 0 {
			p.add(key+".destinations", "at least one destination is required")
		}
		pr.Prefixes = checkDestinations(p, key, pr.Destinations)
		// The same prefix in two peers would leave the choice to list order.
		for k, d := range pr.Destinations {
			pfx, err := parseDestination(d)
			if err != nil {
				continue // reported by checkDestinations
			}
			w, taken := owners[pfx]
			switch {
			case !taken:
				owners[pfx] = where{i, k}
			case w.peer != i:
				p.add(fmt.Sprintf("%s.destinations[%d]", key, k), "%q is the same prefix as peers[%d].destinations[%d] (%s)", d, w.peer, w.dest, pfx)
			}
		}
		pr.AddrPort = checkPeerAddress(p, key+".address", pr.Address)
	}
}

func checkPeerAddress(p *problems, key, s string) netip.AddrPort {
	if s == "" {
		p.add(key, "required, IP:port of the peer agent (e.g. 192.0.2.10:%d)", DefaultTunnelPort)
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(s)
	switch {
	case err != nil:
		p.add(key, "%q is not IP:port (the host must be an IP literal, e.g. 192.0.2.10:%d or [2001:db8::1]:%d): %v", s, DefaultTunnelPort, DefaultTunnelPort, err)
	case ap.Addr().Zone() != "":
		p.add(key, "%q: zone %q not allowed", s, ap.Addr().Zone())
	case ap.Addr().IsUnspecified():
		p.add(key, "%q is the unspecified address, not a peer", s)
	case ap.Port() == 0:
		p.add(key, "%q: port 0 is not in 1..65535", s)
	default:
		return ap
	}
	return netip.AddrPort{}
}

// PeerFor returns the address of the agent that tunnels to dst go to, from
// the most specific peers[] prefix containing dst (an IPv4-mapped IPv6 dst
// also matches IPv4 prefixes). false means no peer matches: the tunnel goes to
// dst itself on upstream.tunnel.port. The config must be validated.
func (c *Config) PeerFor(dst netip.Addr) (netip.AddrPort, bool) {
	dst = dst.WithZone("")
	var best netip.AddrPort
	bits := -1
	for i := range c.Peers {
		for _, pfx := range c.Peers[i].Prefixes {
			if pfx.Bits() > bits && (pfx.Contains(dst) || pfx.Contains(dst.Unmap())) {
				best, bits = c.Peers[i].AddrPort, pfx.Bits()
			}
		}
	}
	return best, bits >= 0
}
