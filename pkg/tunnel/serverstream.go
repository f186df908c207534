package tunnel

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// serverStream is one CONNECT stream as seen by the serving agent: reads
// come from the request body, writes go to the response, flushed each time
// so nothing waits in a buffer.
//
// w may only be used while ServeHTTP runs (x/net recycles it afterwards):
// Write and accept hold wmu and check live, and ServeHTTP takes wmu and
// clears live before returning.
type serverStream struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	body      io.ReadCloser
	local     net.Addr
	remote    net.Addr
	deadlines // SetDeadline, SetReadDeadline, SetWriteDeadline

	wmu sync.Mutex

	mu          sync.Mutex
	live        bool // ServeHTTP has not returned
	accepted    bool
	writeClosed bool
	readEOF     bool
	aborted     bool
	closed      bool
	cut         bool // the response ended while the request was still open

	finish     chan struct{} // closed when the write side is done
	finishOnce sync.Once
}

func newServerStream(w http.ResponseWriter, body io.ReadCloser, local, remote net.Addr) *serverStream {
	s := &serverStream{
		w:      w,
		rc:     http.NewResponseController(w),
		body:   body,
		local:  local,
		remote: remote,
		live:   true,
		finish: make(chan struct{}),
	}
	s.deadlines.expire = s.abort
	return s
}

var (
	errAccepted    = errors.New("tunnel: stream already accepted")
	errStreamEnded = errors.New("tunnel: stream already ended")
)

// accept sends the 200 and hands out the stream.
func (s *serverStream) accept() (net.Conn, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	var err error
	switch {
	case s.accepted:
		err = errAccepted
	case !s.live || s.aborted:
		err = errStreamEnded
	}
	s.accepted = err == nil
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s.w.Header()["Date"] = nil
	s.w.WriteHeader(http.StatusOK)
	if err := s.rc.Flush(); err != nil {
		s.abort()
		return nil, fmt.Errorf("tunnel: send 200: %w", err)
	}
	return s, nil
}

func (s *serverStream) Read(p []byte) (int, error) {
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

func (s *serverStream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	ok := s.live && !s.writeClosed && !s.aborted
	s.mu.Unlock()
	if !ok {
		return 0, s.opError("write", net.ErrClosed)
	}
	n, err := s.w.Write(p)
	if err == nil {
		err = s.rc.Flush()
	}
	if err != nil {
		return n, s.opError("write", err)
	}
	return n, nil
}

// CloseWrite ends the response with END_STREAM. If the client is still
// sending, that ends its upload too; see the package documentation.
func (s *serverStream) CloseWrite() error {
	s.wmu.Lock()
	s.mu.Lock()
	already := s.writeClosed || s.aborted
	s.writeClosed = true
	s.mu.Unlock()
	s.wmu.Unlock()
	if already {
		return nil
	}
	s.signalFinish()
	return nil
}

// Close ends the stream. After CloseWrite the response has ended cleanly
// and stays so: resetting now would discard bytes already written; whatever
// the client still sends is refused as with CloseWrite alone. Without
// CloseWrite it resets the stream (RST_STREAM) so the client sees a
// truncation, not an end.
func (s *serverStream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	wrote := s.writeClosed
	s.mu.Unlock()
	s.deadlines.stop()
	if !wrote {
		s.abort()
		return nil
	}
	s.signalFinish()
	_ = s.body.Close() // unblock a Read; the request body is not wanted any more
	return nil
}

// abort resets the stream. A write deadline in the past is how an x/net
// handler sends RST_STREAM without panicking with http.ErrAbortHandler; it
// also fails a Write blocked on flow control.
func (s *serverStream) abort() {
	s.mu.Lock()
	if s.aborted {
		s.mu.Unlock()
		return
	}
	s.aborted = true
	if s.live {
		_ = s.rc.SetWriteDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
	_ = s.body.Close()
	s.signalFinish()
}

func (s *serverStream) signalFinish() {
	s.finishOnce.Do(func() { close(s.finish) })
}

// end runs as ServeHTTP returns: it answers a Handler that returned without
// accepting, resets a stream whose Handler failed, and retires w. It reports
// whether the stream was accepted.
func (s *serverStream) end(returned bool, herr error, log *slog.Logger, target string) bool {
	s.wmu.Lock() // an abort has already unblocked a Write in progress
	defer s.wmu.Unlock()
	s.mu.Lock()
	accepted, aborted := s.accepted, s.aborted
	s.mu.Unlock()

	switch {
	case aborted:
	case !accepted:
		status, reason := refusal(herr, log, target)
		refuse(s.w, status, reason)
	case returned && herr != nil:
		log.Debug("tunnel stream failed", "target", target, "error", herr)
		s.abort()
	}

	s.mu.Lock()
	s.live = false
	s.cut = !s.readEOF
	s.mu.Unlock()
	return accepted
}

// refusal turns what a Handler returned without accepting into a status.
func refusal(herr error, log *slog.Logger, target string) (int, string) {
	var r *Refusal
	switch {
	case errors.As(herr, &r):
		if r.Status < 400 || r.Status > 599 {
			log.Error("tunnel handler refused with a non-error status; sending 500", "target", target, "status", r.Status)
			return http.StatusInternalServerError, r.Reason
		}
		return r.Status, r.Reason
	case herr == nil:
		log.Error("tunnel handler returned without accepting or refusing", "target", target)
		return http.StatusInternalServerError, "stream neither accepted nor refused"
	default:
		log.Warn("tunnel handler failed", "target", target, "error", herr)
		return http.StatusInternalServerError, "internal error"
	}
}

func (s *serverStream) opError(op string, err error) error {
	s.mu.Lock()
	closed, cut := s.closed, s.cut && !s.aborted
	s.mu.Unlock()
	switch {
	case s.deadlines.hasExpired():
		return timeoutError(op, s.local, s.remote)
	case closed:
		err = net.ErrClosed
	case op == "read" && cut:
		err = ErrServerHalfClose
	}
	return &net.OpError{Op: op, Net: "tunnel", Source: s.local, Addr: s.remote, Err: err}
}

func (s *serverStream) LocalAddr() net.Addr  { return s.local }
func (s *serverStream) RemoteAddr() net.Addr { return s.remote }
