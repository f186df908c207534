package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
)

// Stages of Dial, kept in errors so Reason can tell a connect timeout from a
// handshake timeout.
const (
	stageDial      = "dial"
	stageHandshake = "handshake"
)

// alertProtocolVersion is the TLS protocol_version alert (RFC 8446 6.2).
const alertProtocolVersion = tls.AlertError(70)

// stageError wraps a Dial failure with the stage and destination, keeping the
// underlying net, x509 and tls error types reachable through errors.As.
type stageError struct {
	stage string
	addr  netip.AddrPort
	name  string // TLS server name, handshake stage only
	err   error
}

func (e *stageError) Error() string {
	if e.stage == stageHandshake {
		return fmt.Sprintf("tls handshake with upstream %s as %q: %v", e.addr, e.name, e.err)
	}
	return fmt.Sprintf("dial upstream %s: %v", e.addr, e.err)
}

func (e *stageError) Unwrap() error { return e.err }

// Reason maps a Dial error to a short stable label for metrics and audit
// records. It returns "" for a nil error.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	// The caller gave up (client went away): not the upstream's fault.
	if errors.Is(err, context.Canceled) {
		return "canceled"
	}
	var se *stageError
	if !errors.As(err, &se) || se.stage == stageDial {
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return "dial_refused"
		case isTimeout(err):
			return "dial_timeout"
		}
		return "dial_error"
	}

	// Certificate verification failures first: they are the ones an
	// operator must act on, and they may also carry alert errors.
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknownCA):
		return "cert_unknown_authority"
	case errors.As(err, &hostname):
		return "cert_name_mismatch"
	case errors.As(err, &invalid):
		if invalid.Reason == x509.Expired {
			return "cert_expired"
		}
		return "cert_invalid"
	case errors.As(err, &verify):
		return "cert_invalid"
	case isTimeout(err):
		return "handshake_timeout"
	}

	if code, ok := alertCode(err); ok {
		if code == alertProtocolVersion {
			return "tls_version"
		}
		return "tls_alert"
	}
	// Go reports a server that picked a version we do not allow as a plain
	// error; match its text since there is no type to match.
	if strings.Contains(err.Error(), "unsupported protocol version") {
		return "tls_version"
	}
	return "handshake_error"
}

// isTimeout reports deadline expiry from a socket deadline, a dial timeout
// or a context deadline.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// alertCode extracts a TLS alert from err. Alerts sent by the peer surface
// as a *net.OpError with Op "remote error" wrapping an unexported alert
// type whose text equals tls.AlertError's, so compare texts.
func alertCode(err error) (tls.AlertError, bool) {
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return ae, true
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "remote error" || oe.Err == nil {
		return 0, false
	}
	if oe.Err.Error() == alertProtocolVersion.Error() {
		return alertProtocolVersion, true
	}
	// Some other alert; its exact code is not needed for a label.
	return 0, true
}

// Reasons lists every value Reason returns, so metrics can pre-set them.
func Reasons() []string {
	return []string{
		"canceled", "dial_refused", "dial_timeout", "dial_error",
		"cert_unknown_authority", "cert_name_mismatch", "cert_expired", "cert_invalid",
		"handshake_timeout", "tls_version", "tls_alert", "handshake_error",
	}
}
