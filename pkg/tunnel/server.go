//lint:file-ignore SA1019 x/net marks its http2 API deprecated in favour of net/http (moving in Go 1.27); net/http cannot serve HTTP/2 on connections we accept and vet ourselves.

package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Request describes one CONNECT stream for the Handler.
type Request struct {
	Target     string              // :authority of the CONNECT, "host:port"
	Header     http.Header         // Authorization, identity headers, ...
	PeerCerts  []*x509.Certificate // verified mTLS chain, leaf first; nil without client certificate
	RemoteAddr netip.AddrPort      // the calling agent
	TLS        *tls.ConnectionState
}

// Handler decides and serves one stream. To refuse, return a *Refusal
// without calling accept. To accept, call accept, which sends 200 and
// returns the stream, serve it (for example relay it to the local executor)
// and return nil; when the Handler returns the stream ends (an error after
// accept resets it). ctx ends when the client resets the stream, the
// connection goes away or the stream is over; a Handler must return soon
// after, as it holds one of the connection's MaxConcurrentStreams slots.
type Handler func(ctx context.Context, r *Request, accept func() (net.Conn, error)) error

// Server accepts TLS connections from peer agents and serves their CONNECT
// streams with golang.org/x/net/http2.
type Server struct {
	o   ServerOptions
	tls *tls.Config
	h2  *http2.Server
	hs  *http.Server // settings x/net reads (MaxHeaderBytes) and its GOAWAY-on-shutdown hook
	log *slog.Logger
	err error // from setup; returned by Serve

	ctx      context.Context // parent of every stream's context; cancelled by Close
	cancel   context.CancelFunc
	stopping context.Context // cancelled when closing starts: aborts TLS handshakes
	stop     context.CancelFunc

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	// active counts connections and running Handlers. Not a WaitGroup:
	// x/net may start a ServeHTTP after its connection's ServeConn returned,
	// so a Handler can begin when the count is already zero.
	active int
	idle   chan struct{} // closed when active drops to zero
}

// NewServer returns a Server; call Serve to start it.
func NewServer(o ServerOptions) *Server {
	o = o.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	stopping, stop := context.WithCancel(ctx)
	s := &Server{
		o:         o,
		tls:       serverTLS(o.TLS),
		log:       o.Logger,
		ctx:       ctx,
		cancel:    cancel,
		stopping:  stopping,
		stop:      stop,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]struct{}),
	}
	s.h2 = &http2.Server{
		MaxConcurrentStreams:         o.MaxConcurrentStreams,
		MaxReadFrameSize:             maxFrameSize,
		MaxUploadBufferPerConnection: connWindow,
		MaxUploadBufferPerStream:     streamWindow,
		IdleTimeout:                  o.IdleTimeout,
		ReadIdleTimeout:              o.PingInterval,
		PingTimeout:                  o.PingTimeout,
		WriteByteTimeout:             o.PingInterval + o.PingTimeout,
		CountError: func(errType string) {
			s.log.Debug("http2 protocol error", "type", errType)
		},
	}
	s.hs = &http.Server{
		MaxHeaderBytes: o.MaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if o.Handler == nil {
		s.err = errors.New("tunnel: ServerOptions.Handler is nil")
	} else if err := http2.ConfigureServer(s.hs, s.h2); err != nil {
		s.err = fmt.Errorf("tunnel: configure http2 server: %w", err)
	}
	return s
}

// Serve accepts connections on ln until Shutdown or Close, then returns
// ErrServerClosed. Each connection gets a TLS handshake bounded by
// HandshakeTimeout and must negotiate h2.
func (s *Server) Serve(ln net.Listener) error {
	if s.err != nil {
		return s.err
	}
	if !s.addListener(ln) {
		return ErrServerClosed
	}
	defer s.removeListener(ln)

	var delay time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("tunnel: accept: %w", err)
			}
			// Out of file descriptors and the like: back off like net/http
			// rather than spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("tunnel accept failed; retrying", "error", err, "delay", delay)
			select {
			case <-time.After(delay):
			case <-s.stopping.Done():
			}
			continue
		}
		delay = 0
		if !s.addConn(raw) {
			_ = raw.Close()
			continue
		}
		go s.serveConn(raw)
	}
}

// serveConn runs one connection; addConn counted it.
func (s *Server) serveConn(raw net.Conn) {
	defer s.removeConn(raw)

	tc := tls.Server(raw, s.tls)
	ctx, cancel := context.WithTimeout(s.stopping, s.o.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.log.Debug("tunnel tls handshake failed", "remote", raw.RemoteAddr(), "error", err)
		_ = raw.Close()
		return
	}
	st := tc.ConnectionState()
	if st.NegotiatedProtocol != "h2" {
		s.log.Debug("tunnel client did not negotiate h2", "remote", raw.RemoteAddr(), "alpn", st.NegotiatedProtocol)
		_ = raw.Close()
		return
	}
	c := newConn(s, tc, st)
	s.h2.ServeConn(&trackedConn{Conn: tc}, &http2.ServeConnOpts{
		Context:    s.ctx,
		BaseConfig: s.hs,
		Handler:    c,
	})
}

// Shutdown stops accepting, sends GOAWAY on every connection and waits for
// their streams to finish, or for ctx, after which it closes what is left
// and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.startClosing()
	done := s.idleChan()
	// GOAWAY again now and then: a connection that finished its handshake as
	// shutdown began may have registered with x/net after the first round.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		_ = s.hs.Shutdown(context.Background())
		select {
		case <-done:
			return nil
		case <-tick.C:
		case <-ctx.Done():
			_ = s.Close()
			return ctx.Err()
		}
	}
}

// Close closes the listeners and every connection at once; their streams
// fail. It does not wait for Handlers to return.
func (s *Server) Close() error {
	s.startClosing()
	s.cancel()
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	return nil
}

func (s *Server) startClosing() {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for ln := range s.listeners {
		_ = ln.Close()
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) addListener(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.listeners[ln] = struct{}{}
	return true
}

func (s *Server) removeListener(ln net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.listeners, ln)
}

// addConn registers a connection unless the server is closing.
func (s *Server) addConn(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	s.active++
	return true
}

func (s *Server) removeConn(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	s.doneLocked()
}

func (s *Server) handlerStarted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active++
}

func (s *Server) handlerDone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.doneLocked()
}

func (s *Server) doneLocked() {
	if s.active--; s.active == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// idleChan is closed once no connection or Handler is left.
func (s *Server) idleChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	if s.active == 0 {
		close(ch)
		return ch
	}
	if s.idle == nil {
		s.idle = ch
	}
	return s.idle
}
