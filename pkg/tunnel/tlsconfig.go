package tunnel

import (
	"crypto/tls"
	"net/netip"
)

// sessionCacheSize holds tickets for this many server names; one per peer
// name is what resumption needs.
const sessionCacheSize = 1024

// clientTLS returns a copy of c for dialing peers: h2 only, TLS 1.3 only,
// with a session cache so reconnects to a peer resume.
func clientTLS(c *tls.Config) *tls.Config {
	if c == nil {
		c = &tls.Config{}
	}
	c = c.Clone()
	c.NextProtos = []string{"h2"}
	c.MinVersion = tls.VersionTLS13
	if c.ClientSessionCache == nil {
		c.ClientSessionCache = tls.NewLRUClientSessionCache(sessionCacheSize)
	}
	return c
}

// forPeer sets the name verified in the peer's certificate to its IP when
// the caller gave none, like pkg/upstream does for upstreams.
func forPeer(c *tls.Config, peer netip.AddrPort) *tls.Config {
	if c.ServerName != "" {
		return c
	}
	c = c.Clone()
	c.ServerName = peer.Addr().Unmap().String()
	return c
}

// serverTLS returns a copy of c that only negotiates h2 over TLS 1.3, also
// when a GetConfigForClient hook hands out other configs.
func serverTLS(c *tls.Config) *tls.Config {
	if c == nil {
		c = &tls.Config{}
	}
	c = c.Clone()
	forceServer(c)
	if get := c.GetConfigForClient; get != nil {
		c.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			cfg, err := get(hi)
			if err != nil || cfg == nil {
				return cfg, err
			}
			cfg = cfg.Clone()
			forceServer(cfg)
			return cfg, nil
		}
	}
	return c
}

func forceServer(c *tls.Config) {
	c.NextProtos = []string{"h2"}
	c.MinVersion = tls.VersionTLS13
}
