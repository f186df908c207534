//lint:file-ignore SA1019 x/net marks its http2 API deprecated in favour of net/http (moving in Go 1.27); net/http has no way to run HTTP/2 over a connection we dialed ourselves.

package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"

	"github.com/intransit/intransit/pkg/sockmark"
)

// maxResponseHeaderBytes bounds a peer's CONNECT response headers; they are
// a status and a short reason.
const maxResponseHeaderBytes = 64 << 10

// Client opens CONNECT streams to peer agents over pooled connections.
type Client struct {
	o      ClientOptions
	tls    *tls.Config
	t2     *http2.Transport
	dialer net.Dialer
	log    *slog.Logger
	err    error // from setting up the transport; returned by Dial

	ctx    context.Context // cancelled by Close: aborts connection attempts
	cancel context.CancelFunc
	dials  sync.WaitGroup

	closed     atomic.Bool
	handshakes atomic.Uint64
	resumed    atomic.Uint64
	byCC       sync.Map // *http2.ClientConn -> *pconn, for GOAWAY notices

	mu    sync.Mutex
	pools map[netip.AddrPort]*pool
}

// NewClient returns a Client; it dials nothing until the first Dial.
func NewClient(o ClientOptions) *Client {
	o = o.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		o:      o,
		tls:    clientTLS(o.TLS),
		log:    o.Logger,
		ctx:    ctx,
		cancel: cancel,
		pools:  make(map[netip.AddrPort]*pool),
		dialer: net.Dialer{Timeout: o.DialTimeout},
	}
	if o.Mark != 0 {
		c.dialer.Control = sockmark.Control(o.Mark)
	}
	c.t2, c.err = newTransport(o, c)
	return c
}

// newTransport builds the x/net Transport. It is linked to a net/http
// Transport only because that is where x/net reads the receive windows from;
// its own fields cannot set them.
func newTransport(o ClientOptions, c *Client) (*http2.Transport, error) {
	t1 := &http.Transport{
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		IdleConnTimeout:        o.IdleTimeout,
		HTTP2: &http.HTTP2Config{
			MaxReadFrameSize:              maxFrameSize,
			MaxReceiveBufferPerConnection: connWindow,
			MaxReceiveBufferPerStream:     streamWindow,
			SendPingTimeout:               o.PingInterval,
			PingTimeout:                   o.PingTimeout,
			// A peer that takes no bytes for as long as a PING may go
			// unanswered is as dead as one that does not answer it.
			WriteByteTimeout: o.PingInterval + o.PingTimeout,
			CountError: func(errType string) {
				c.log.Debug("http2 protocol error", "type", errType)
			},
		},
	}
	t2, err := http2.ConfigureTransports(t1)
	if err != nil {
		return nil, fmt.Errorf("tunnel: configure http2 transport: %w", err)
	}
	t2.ConnPool = goAwayHook{c}
	return t2, nil
}

// Dial opens one CONNECT stream to the agent at peer for target, the
// original destination "ip:port" sent as the :authority; hdr carries
// Authorization and identity headers. The stream is ready once the peer
// answered 200; any other status returns a *StatusError. ctx bounds waiting
// for capacity, connecting and the CONNECT exchange, not the stream.
//
// The caller must Close the stream.
func (c *Client) Dial(ctx context.Context, peer netip.AddrPort, target string, hdr http.Header) (net.Conn, error) {
	if c.err != nil {
		return nil, c.err
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("tunnel: target %q: %w", target, err)
	}
	for attempt := 0; ; {
		p, err := c.pool(peer)
		if err != nil {
			return nil, err
		}
		pc, err := p.acquire(ctx)
		if errors.Is(err, errPoolGone) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("tunnel: dial %s via %s: %w", target, peer, err)
		}
		s, err := c.open(ctx, p, pc, target, hdr)
		if err == nil {
			return s, nil
		}
		var se *StatusError
		if errors.As(err, &se) {
			return nil, se
		}
		// A stream refused or lost with its connection before the peer
		// answered has carried no data, so trying another one is safe.
		if attempt++; attempt <= maxRetries && ctx.Err() == nil && retryable(pc, err) {
			continue
		}
		return nil, fmt.Errorf("tunnel: dial %s via %s: %w", target, peer, err)
	}
}

// maxRetries bounds how often Dial moves to another connection.
const maxRetries = 2

func retryable(pc *pconn, err error) bool {
	var se http2.StreamError
	if errors.As(err, &se) {
		return se.Code == http2.ErrCodeRefusedStream
	}
	var ga http2.GoAwayError
	if errors.As(err, &ga) {
		return true
	}
	if pc.single {
		// Released (so closed and retired) before this check: the pool's
		// view says nothing about the peer.
		return false
	}
	// x/net marks the connection unusable before failing its streams.
	return pc.p.unusable(pc) || !pc.cc.CanTakeNewRequest()
}

// pool returns the peer's pool, creating it.
func (c *Client) pool(peer netip.AddrPort) (*pool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return nil, ErrClientClosed
	}
	p := c.pools[peer]
	if p == nil {
		p = newPool(c, peer)
		c.pools[peer] = p
	}
	return p, nil
}

// maybeDropPool forgets a pool nothing uses, so talking to many peers over
// time does not accumulate them.
func (c *Client) maybeDropPool(p *pool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.gone && p.idleLocked() {
		p.gone = true
		delete(c.pools, p.peer)
	}
}

// Close closes every pooled connection, failing their streams, and makes
// Dial fail with ErrClientClosed. It waits for connection attempts to end.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed.Swap(true) {
		c.mu.Unlock()
		return nil
	}
	pools := make([]*pool, 0, len(c.pools))
	for _, p := range c.pools {
		pools = append(pools, p)
	}
	c.mu.Unlock()

	c.cancel()
	var conns []*pconn
	for _, p := range pools {
		p.mu.Lock()
		conns = append(conns, p.conns...)
		conns = append(conns, p.draining...)
		p.broadcastLocked()
		p.mu.Unlock()
	}
	for _, pc := range conns {
		_ = pc.cc.Close()
	}
	c.dials.Wait()
	return nil
}

// goAwayHook is the x/net ConnPool slot, used only for its MarkDead
// callback: x/net calls it when a connection receives GOAWAY.
type goAwayHook struct{ c *Client }

func (goAwayHook) GetClientConn(*http.Request, string) (*http2.ClientConn, error) {
	return nil, errors.New("tunnel: the transport dials nothing itself")
}

func (h goAwayHook) MarkDead(cc *http2.ClientConn) {
	if v, ok := h.c.byCC.Load(cc); ok {
		pc := v.(*pconn)
		pc.p.retire(pc)
	}
}
