package tunnel

import "net/netip"

// PoolStats is a snapshot of a Client's pool.
type PoolStats struct {
	Peers      map[netip.AddrPort]PeerStats // peers with a connection or a stream
	Conns      int                          // open connections, draining included
	Streams    int                          // open streams
	Handshakes uint64                       // TLS handshakes completed since NewClient
	Resumed    uint64                       // of which resumed a session
}

// PeerStats describes the connections to one peer.
type PeerStats struct {
	Conns    int // taking new streams
	Draining int // received GOAWAY, finishing their streams
	Streams  int
}

// Stats returns a snapshot of the pool.
func (c *Client) Stats() PoolStats {
	c.mu.Lock()
	pools := make([]*pool, 0, len(c.pools))
	for _, p := range c.pools {
		pools = append(pools, p)
	}
	c.mu.Unlock()

	st := PoolStats{
		Peers:      make(map[netip.AddrPort]PeerStats),
		Handshakes: c.handshakes.Load(),
		Resumed:    c.resumed.Load(),
	}
	for _, p := range pools {
		p.mu.Lock()
		ps := PeerStats{Conns: len(p.conns), Draining: len(p.draining)}
		for _, pc := range p.conns {
			ps.Streams += pc.streams
		}
		for _, pc := range p.draining {
			ps.Streams += pc.streams
		}
		p.mu.Unlock()
		if ps.Conns+ps.Draining+ps.Streams == 0 {
			continue
		}
		st.Peers[p.peer] = ps
		st.Conns += ps.Conns + ps.Draining
		st.Streams += ps.Streams
	}
	return st
}
