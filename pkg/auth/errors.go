package auth

import (
	"errors"
	"fmt"
)

// Reasons a token is refused. They are stable labels for audit events and
// metrics; the wrapped error carries the detail.
const (
	ReasonMissing           = "missing"
	ReasonTooLarge          = "too_large"
	ReasonMalformed         = "malformed"
	ReasonUnsupportedAlg    = "unsupported_alg"
	ReasonUnknownKID        = "unknown_kid"
	ReasonBadSignature      = "bad_signature"
	ReasonWrongIssuer       = "wrong_issuer"
	ReasonWrongAudience     = "wrong_audience"
	ReasonExpired           = "expired"
	ReasonNotYetValid       = "not_yet_valid"
	ReasonIssuerUnreachable = "issuer_unreachable"
)

// reasonOther labels an error that did not come from this package.
const reasonOther = "other"

// Error is a refused token: Reason says why, Err says what exactly.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// refuse builds an *Error with a formatted detail (%w wraps as usual).
func refuse(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the Reason of the *Error in err's chain, "" for nil and
// "other" for an error that carries none.
func ReasonOf(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return reasonOther
}

// Reasons lists every value ReasonOf returns for a non-nil error, so
// metrics can pre-set them.
func Reasons() []string {
	return []string{
		ReasonMissing, ReasonTooLarge, ReasonMalformed, ReasonUnsupportedAlg,
		ReasonUnknownKID, ReasonBadSignature, ReasonWrongIssuer, ReasonWrongAudience,
		ReasonExpired, ReasonNotYetValid, ReasonIssuerUnreachable, reasonOther,
	}
}
