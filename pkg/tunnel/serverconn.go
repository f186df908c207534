package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"time"
)

// conn is the http.Handler of one accepted connection: it knows the
// connection's TLS state and peer, which x/net does not put on CONNECT
// requests (it sets Request.TLS only for the https scheme).
type conn struct {
	s          *Server
	tc         *tls.Conn
	state      tls.ConnectionState
	peerCerts  []*x509.Certificate
	remote     netip.AddrPort
	localAddr  net.Addr
	remoteAddr net.Addr
	resets     resetLimiter
}

func newConn(s *Server, tc *tls.Conn, st tls.ConnectionState) *conn {
	c := &conn{
		s:          s,
		tc:         tc,
		state:      st,
		localAddr:  tc.LocalAddr(),
		remoteAddr: tc.RemoteAddr(),
	}
	// Only a verified chain identifies the caller; with ClientAuth
	// RequestClientCert, PeerCertificates alone prove nothing.
	if len(st.VerifiedChains) > 0 {
		c.peerCerts = st.VerifiedChains[0]
	}
	if ap, err := netip.ParseAddrPort(c.remoteAddr.String()); err == nil {
		c.remote = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return c
}

// ServeHTTP serves one stream. The Handler runs on its own goroutine because
// x/net only sends END_STREAM when ServeHTTP returns: a CloseWrite must be
// able to end the response while the Handler is still busy with the other
// direction. ServeHTTP otherwise waits for the Handler, so x/net's bound on
// concurrent ServeHTTP calls per connection (the rapid-reset mitigation)
// also bounds Handlers.
func (c *conn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		w.Header().Set("Allow", http.MethodConnect)
		refuse(w, http.StatusMethodNotAllowed, "only CONNECT is served")
		return
	}
	// x/net already resets a CONNECT without :authority; this catches the
	// rest of what is not host:port.
	if _, _, err := net.SplitHostPort(r.Host); err != nil {
		refuse(w, http.StatusBadRequest, "CONNECT authority must be host:port")
		return
	}

	ctx := r.Context()
	st := newServerStream(w, r.Body, c.localAddr, c.remoteAddr)
	req := &Request{
		Target:     r.Host,
		Header:     r.Header,
		PeerCerts:  c.peerCerts,
		RemoteAddr: c.remote,
		TLS:        &c.state,
	}
	done := make(chan error, 1)
	c.s.handlerStarted()
	go c.runHandler(ctx, req, st, done)

	var herr error
	returned := false
	select {
	case herr = <-done:
		returned = true
	case <-st.finish:
	}
	accepted := st.end(returned, herr, c.s.log, r.Host)

	// A stream the client reset before it was answered (x/net only sends a
	// refusal once ServeHTTP returns) is the rapid-reset pattern; past the
	// budget the whole connection goes.
	if !accepted && ctx.Err() != nil && !c.resets.allow(time.Now()) {
		c.s.log.Warn("tunnel connection closed: too many streams reset before they were answered",
			"remote", c.remote, "burst", resetBurst, "rate_per_second", resetRate)
		_ = c.tc.NetConn().Close()
	}
}

// refuse answers a stream with status and reason and no body.
func refuse(w http.ResponseWriter, status int, reason string) {
	h := w.Header()
	h.Set(ReasonHeader, cleanReason(reason))
	h["Date"] = nil // not worth formatting the clock for
	w.WriteHeader(status)
}

// runHandler runs the Handler on its own goroutine. net/http would recover
// a panicking handler; off its goroutine that is up to us, so one bad stream
// resets itself instead of taking the agent down.
func (c *conn) runHandler(ctx context.Context, req *Request, st *serverStream, done chan<- error) {
	defer c.s.handlerDone()
	var err error
	defer func() {
		if p := recover(); p != nil {
			c.s.log.Error("tunnel handler panicked", "target", req.Target, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("tunnel: handler panicked: %v", p)
		}
		done <- err
	}()
	err = c.s.o.Handler(ctx, req, st.accept)
}
