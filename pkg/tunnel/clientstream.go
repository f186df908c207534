package tunnel

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"
)

// closeGrace bounds how long a clean Close waits for x/net to send the last
// bytes and END_STREAM before it resets the stream instead.
const closeGrace = 5 * time.Second

// clientStream is one CONNECT stream as seen by the dialing agent: reads come
// from the response body, writes go through a pipe that x/net reads as the
// request body, so nothing is buffered beyond what http2 itself holds.
type clientStream struct {
	tlsState tls.ConnectionState

	body      io.ReadCloser // response body: bytes from the peer
	pw        *io.PipeWriter
	req       *requestBody
	cancel    context.CancelFunc // the request's context: cancelling resets the stream
	local     net.Addr
	remote    net.Addr
	deadlines // SetDeadline, SetReadDeadline, SetWriteDeadline

	releaseOnce sync.Once
	release     func() // gives the stream's slot back to the pool

	mu          sync.Mutex
	readEOF     bool
	writeClosed bool
	closed      bool
}

func newClientStream(body io.ReadCloser, pw *io.PipeWriter, req *requestBody, cancel context.CancelFunc, local, remote net.Addr, release func()) *clientStream {
	s := &clientStream{body: body, pw: pw, req: req, cancel: cancel, local: local, remote: remote, release: release}
	s.deadlines.expire = s.abort
	return s
}

func (s *clientStream) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	if err == io.EOF {
		s.mu.Lock()
		s.readEOF = true
		s.mu.Unlock()
		return n, io.EOF
	}
	if err != nil {
		return n, s.opError("read", err)
	}
	return n, nil
}

func (s *clientStream) Write(p []byte) (int, error) {
	n, err := s.pw.Write(p)
	if err != nil {
		return n, s.opError("write", err)
	}
	return n, nil
}

// CloseWrite sends END_STREAM once x/net has sent what was written before.
func (s *clientStream) CloseWrite() error {
	s.mu.Lock()
	s.writeClosed = true
	s.mu.Unlock()
	return s.pw.Close()
}

// Close releases the stream. After both directions ended cleanly it lets
// x/net finish sending END_STREAM; otherwise it resets the stream
// (RST_STREAM CANCEL) so the peer sees a truncation, not an end.
func (s *clientStream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	clean := s.readEOF && s.writeClosed
	s.mu.Unlock()

	s.deadlines.stop()
	if clean {
		// x/net closes the request body once END_STREAM is out and the
		// peer's END_STREAM was seen; closing the response body before that
		// would reset the stream.
		t := time.NewTimer(closeGrace)
		select {
		case <-s.req.done:
		case <-t.C:
		}
		t.Stop()
	} else {
		s.abort()
	}
	s.cancel()
	_ = s.body.Close()
	s.releaseOnce.Do(s.release)
	return nil
}

// abort resets the stream and unblocks pending reads and writes.
func (s *clientStream) abort() {
	// The pipe first, so a Read that saw the reset implies Write sees it too.
	// Cancelling before body.Close makes x/net send RST_STREAM and keeps
	// body.Close from waiting for the request goroutine.
	s.pw.CloseWithError(net.ErrClosed)
	s.cancel()
	_ = s.body.Close()
}

func (s *clientStream) opError(op string, err error) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if s.deadlines.hasExpired() {
		return timeoutError(op, s.local, s.remote)
	}
	if closed {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "tunnel", Source: s.local, Addr: s.remote, Err: err}
}

// ConnectionState is the TLS state of the pooled connection carrying the
// stream: who the peer agent proved to be, for the audit trail.
func (s *clientStream) ConnectionState() tls.ConnectionState { return s.tlsState }

func (s *clientStream) LocalAddr() net.Addr  { return s.local }
func (s *clientStream) RemoteAddr() net.Addr { return s.remote }

// requestBody is the request body x/net reads from: the read side of the
// stream's pipe, plus a signal for when x/net is done with it.
type requestBody struct {
	*io.PipeReader
	done chan struct{}
	once sync.Once
}

func newRequestBody(pr *io.PipeReader) *requestBody {
	return &requestBody{PipeReader: pr, done: make(chan struct{})}
}

// Close is called by x/net when the request ended, cleanly or not.
func (b *requestBody) Close() error {
	b.once.Do(func() { close(b.done) })
	return b.PipeReader.Close()
}
