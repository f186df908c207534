//lint:file-ignore SA1019 x/net marks its http2 API deprecated in favour of net/http (moving in Go 1.27); net/http has no way to run HTTP/2 over a connection we dialed ourselves.

package tunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
)

// connect dials a new pooled connection: TCP (with SO_MARK), TLS 1.3 with
// ALPN h2, then one PING round trip. The peer's SETTINGS precede its PING
// answer, so once connect returns its stream and header limits are known
// and a header list over its limit is refused locally instead of costing
// the connection.
func (c *Client) connect(ctx context.Context, p *pool) (*pconn, error) {
	raw, err := c.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, p.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	st := tc.ConnectionState()
	c.handshakes.Add(1)
	if st.DidResume {
		c.resumed.Add(1)
	}
	if st.NegotiatedProtocol != "h2" {
		_ = raw.Close()
		return nil, fmt.Errorf("peer did not negotiate h2 (ALPN %q)", st.NegotiatedProtocol)
	}

	pc := &pconn{p: p, tc: tc}
	cc, err := c.t2.NewClientConn(&trackedConn{Conn: tc, onClose: func() { p.connClosed(pc) }})
	if err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("http2 preface: %w", err)
	}
	p.mu.Lock()
	pc.cc = cc
	p.mu.Unlock()
	c.byCC.Store(cc, pc)
	if err := cc.Ping(ctx); err != nil {
		_ = cc.Close()
		return nil, fmt.Errorf("http2 settings exchange: %w", err)
	}
	return pc, nil
}

// open sends the CONNECT on pc, whose slot acquire reserved; on failure the
// slot is given back.
func (c *Client) open(ctx context.Context, p *pool, pc *pconn, target string, hdr http.Header) (net.Conn, error) {
	release := func() { p.release(pc) }
	pr, pw := io.Pipe()
	body := newRequestBody(pr)
	// The stream outlives ctx: x/net resets a stream whose request context
	// ends, so it gets its own, cancelled by Close.
	sctx, cancel := context.WithCancel(context.Background())
	if hdr == nil {
		hdr = http.Header{}
	}
	req := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Host: target},
		Host:          target,
		Header:        hdr,
		Body:          body,
		ContentLength: -1,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
	}).WithContext(sctx)

	stop := context.AfterFunc(ctx, cancel)
	resp, err := pc.cc.RoundTrip(req)
	if !stop() {
		// ctx ended during the exchange and cancel reset the stream.
		if err == nil {
			_ = resp.Body.Close()
		}
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		pw.CloseWithError(err)
		release()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		se := &StatusError{Code: resp.StatusCode, Reason: cleanReason(resp.Header.Get(ReasonHeader))}
		cancel()
		_ = resp.Body.Close()
		pw.CloseWithError(se)
		release()
		return nil, se
	}
	cs := newClientStream(resp.Body, pw, body, cancel, pc.tc.LocalAddr(), pc.tc.RemoteAddr(), release)
	cs.tlsState = pc.tc.ConnectionState()
	return cs, nil
}
