package tunnel

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// ReasonHeader carries a refusal's reason in the CONNECT response.
const ReasonHeader = "Intransit-Reason"

// maxReasonLen bounds the reason both when sending and when receiving it.
const maxReasonLen = 256

var (
	// ErrClientClosed is returned by Dial after Client.Close.
	ErrClientClosed = errors.New("tunnel: client closed")
	// ErrServerClosed is returned by Serve after Shutdown or Close.
	ErrServerClosed = errors.New("tunnel: server closed")
	// ErrPoolFull is wrapped by Dial's error when every connection to the
	// peer was at its stream limit until the context ended.
	ErrPoolFull = errors.New("tunnel: no stream capacity to the peer")
	// ErrServerHalfClose is returned by a server stream's Read after its
	// CloseWrite ended the stream while the client was still sending (see the
	// package documentation).
	ErrServerHalfClose = errors.New("tunnel: stream ended by the server's CloseWrite before the client finished sending")
)

// StatusError is returned by Dial when the peer answered the CONNECT with a
// status other than 200.
type StatusError struct {
	Code   int
	Reason string // the peer's Intransit-Reason header, if any
}

func (e *StatusError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("tunnel: peer refused the stream: %d %s", e.Code, http.StatusText(e.Code))
	}
	return fmt.Sprintf("tunnel: peer refused the stream: %d %s: %s", e.Code, http.StatusText(e.Code), e.Reason)
}

// Refusal is returned by a Handler to refuse a stream before accepting it.
// Status should be a 4xx or 5xx code; anything else is sent as 500.
type Refusal struct {
	Status int
	Reason string // sent in the Intransit-Reason header
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("tunnel: refused with %d: %s", r.Status, r.Reason)
}

// cleanReason makes s safe as a header value and for logs: printable ASCII
// only (the reason may echo workload-controlled input), bounded length.
func cleanReason(s string) string {
	if len(s) > maxReasonLen {
		s = s[:maxReasonLen]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}
