package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// errPoolGone makes Dial look the peer's pool up again: it was dropped for
// being empty between the lookup and the use.
var errPoolGone = errors.New("tunnel: pool dropped")

// pool holds the connections to one peer. Dials that find no capacity share
// one in-flight connection attempt (at most one per peer at a time), so a
// burst of streams to a new peer costs one handshake per MaxStreamsPerConn
// streams, not one each.
type pool struct {
	c    *Client
	peer netip.AddrPort
	addr string
	tls  *tls.Config

	mu       sync.Mutex
	conns    []*pconn // taking new streams
	draining []*pconn // retired by GOAWAY, still carrying streams
	dial     *dialCall
	waiters  int
	singles  int           // SingleUse connection attempts in flight
	changed  chan struct{} // closed and replaced when capacity may have appeared
	gone     bool          // dropped from the client's map
}

// dialCall is one connection attempt that waiting Dials share.
type dialCall struct {
	done chan struct{}
	err  error // set before done is closed
}

func newPool(c *Client, peer netip.AddrPort) *pool {
	return &pool{
		c:       c,
		peer:    peer,
		addr:    peer.String(),
		tls:     forPeer(c.tls, peer),
		changed: make(chan struct{}),
	}
}

// acquire returns a connection with a stream slot reserved for the caller,
// dialing one if needed, or waiting for a slot when MaxConnsPerPeer
// connections are all full.
func (p *pool) acquire(ctx context.Context) (*pconn, error) {
	o := &p.c.o
	if o.SingleUse {
		return p.acquireSingle(ctx)
	}
	p.mu.Lock()
	for {
		if p.gone {
			p.mu.Unlock()
			return nil, errPoolGone
		}
		if p.c.closed.Load() {
			p.mu.Unlock()
			return nil, ErrClientClosed
		}
		if pc := p.reserveLocked(); pc != nil {
			p.mu.Unlock()
			return pc, nil
		}
		call := p.dial
		if call == nil && len(p.conns) < o.MaxConnsPerPeer {
			call = p.startDialLocked()
		}
		changed := p.changed
		p.waiters++
		p.mu.Unlock()

		var dialed <-chan struct{} // nil when waiting for a stream to end
		if call != nil {
			dialed = call.done
		}
		select {
		case <-changed:
		case <-dialed:
		case <-ctx.Done():
		}

		p.mu.Lock()
		p.waiters--
		if err := ctx.Err(); err != nil {
			p.mu.Unlock()
			if call == nil {
				return nil, fmt.Errorf("%w: %d connections at %d streams: %w", ErrPoolFull, o.MaxConnsPerPeer, o.MaxStreamsPerConn, err)
			}
			return nil, err
		}
		if call != nil && call.finished() && call.err != nil {
			p.mu.Unlock()
			return nil, call.err
		}
	}
}

// acquireSingle dials a connection for the caller alone (SingleUse), with
// its one stream slot reserved. It is listed in conns, so Stats and Close see
// it, but reserveLocked never hands it to anyone else; release closes it.
func (p *pool) acquireSingle(ctx context.Context) (*pconn, error) {
	p.mu.Lock()
	if p.gone {
		p.mu.Unlock()
		return nil, errPoolGone
	}
	if p.c.closed.Load() {
		p.mu.Unlock()
		return nil, ErrClientClosed
	}
	// Under p.mu with closed false: Close has not yet passed this pool, so
	// it waits for this attempt (as for startDialLocked's).
	p.singles++
	p.c.dials.Add(1)
	p.mu.Unlock()

	dctx, cancel := context.WithTimeout(ctx, p.c.o.DialTimeout)
	stop := context.AfterFunc(p.c.ctx, cancel) // Close aborts the attempt
	pc, err := p.c.connect(dctx, p)
	stop()
	cancel()

	var discard *pconn
	p.mu.Lock()
	p.singles--
	switch {
	case err != nil:
		err = fmt.Errorf("connect to peer %s: %w", p.peer, err)
	case p.c.closed.Load():
		err, discard = ErrClientClosed, pc
	case pc.dead:
		err = fmt.Errorf("connect to peer %s: connection closed right after setup", p.peer)
	case !pc.cc.ReserveNewRequest():
		err, discard = fmt.Errorf("connect to peer %s: new connection takes no stream", p.peer), pc
	default:
		pc.single = true
		pc.streams = 1
		p.conns = append(p.conns, pc)
	}
	p.mu.Unlock()
	p.c.dials.Done()

	if discard != nil {
		_ = discard.cc.Close()
	}
	if err != nil {
		p.c.log.Debug("tunnel connection failed", "peer", p.peer, "error", err)
		p.c.maybeDropPool(p)
		return nil, err
	}
	return pc, nil
}

// reserveLocked takes a stream slot on the first connection with room. The
// peer's SETTINGS_MAX_CONCURRENT_STREAMS and GOAWAY are checked by
// ReserveNewRequest; the reservation is consumed by the next RoundTrip.
func (p *pool) reserveLocked() *pconn {
	for _, pc := range p.conns {
		if pc.single || pc.streams >= p.c.o.MaxStreamsPerConn || !pc.cc.ReserveNewRequest() {
			continue
		}
		pc.streams++
		return pc
	}
	return nil
}

func (p *pool) startDialLocked() *dialCall {
	call := &dialCall{done: make(chan struct{})}
	p.dial = call
	p.c.dials.Add(1)
	go p.runDial(call)
	return call
}

func (p *pool) runDial(call *dialCall) {
	defer p.c.dials.Done()
	ctx, cancel := context.WithTimeout(p.c.ctx, p.c.o.DialTimeout)
	pc, err := p.c.connect(ctx, p)
	cancel()

	var discard *pconn
	p.mu.Lock()
	p.dial = nil
	switch {
	case err != nil:
		err = fmt.Errorf("connect to peer %s: %w", p.peer, err)
	case p.c.closed.Load():
		err, discard = ErrClientClosed, pc
	case pc.dead:
		err = fmt.Errorf("connect to peer %s: connection closed right after setup", p.peer)
	default:
		p.conns = append(p.conns, pc)
	}
	call.err = err
	close(call.done)
	p.broadcastLocked()
	p.mu.Unlock()

	if discard != nil {
		_ = discard.cc.Close()
	}
	if err != nil {
		p.c.log.Debug("tunnel connection failed", "peer", p.peer, "error", err)
		p.c.maybeDropPool(p)
	}
}

// release gives back a stream's slot; a SingleUse connection is closed.
func (p *pool) release(pc *pconn) {
	p.mu.Lock()
	pc.streams--
	drained := pc.retired && pc.streams == 0 && !pc.dead
	if drained {
		p.draining = remove(p.draining, pc)
	}
	if pc.single && pc.streams == 0 && !pc.dead {
		// Forgotten at once so Stats is exact; connClosed finishes the job.
		pc.retired, drained = true, true
		p.conns = remove(p.conns, pc)
		p.draining = remove(p.draining, pc)
	}
	p.broadcastLocked()
	p.mu.Unlock()
	if drained {
		_ = pc.cc.Close()
	}
}

// retire stops new streams on pc (the peer sent GOAWAY); its open streams
// finish on it.
func (p *pool) retire(pc *pconn) {
	p.mu.Lock()
	if pc.dead || pc.retired {
		p.mu.Unlock()
		return
	}
	pc.retired = true
	p.conns = remove(p.conns, pc)
	idle := pc.streams == 0
	if !idle {
		p.draining = append(p.draining, pc)
	}
	p.broadcastLocked()
	p.mu.Unlock()
	p.c.log.Debug("tunnel connection draining after GOAWAY", "peer", p.peer)
	if idle {
		_ = pc.cc.Close()
	}
}

// connClosed forgets pc the moment its connection closes; its streams fail
// on their own (x/net aborts them), new ones go to other connections.
func (p *pool) connClosed(pc *pconn) {
	p.mu.Lock()
	if pc.dead {
		p.mu.Unlock()
		return
	}
	pc.dead = true
	p.conns = remove(p.conns, pc)
	p.draining = remove(p.draining, pc)
	streams, cc := pc.streams, pc.cc
	p.broadcastLocked()
	p.mu.Unlock()

	if cc != nil {
		p.c.byCC.Delete(cc)
	}
	if streams > 0 && !p.c.closed.Load() {
		p.c.log.Warn("tunnel connection lost; its streams fail", "peer", p.peer, "streams", streams)
	} else {
		p.c.log.Debug("tunnel connection closed", "peer", p.peer)
	}
	p.c.maybeDropPool(p)
}

// unusable reports whether pc closed or stopped taking streams.
func (p *pool) unusable(pc *pconn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return pc.dead || pc.retired
}

// broadcastLocked wakes the Dials waiting for capacity.
func (p *pool) broadcastLocked() {
	if p.waiters == 0 {
		return
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// idleLocked reports whether nothing uses the pool any more.
func (p *pool) idleLocked() bool {
	return len(p.conns) == 0 && len(p.draining) == 0 && p.dial == nil && p.waiters == 0 && p.singles == 0
}

func (d *dialCall) finished() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func remove(conns []*pconn, pc *pconn) []*pconn {
	if i := slices.Index(conns, pc); i >= 0 {
		conns = slices.Delete(conns, i, i+1)
	}
	return conns
}
