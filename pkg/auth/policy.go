package auth

import (
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
)

// Allow is one allow entry: every non-empty field must match.
type Allow struct {
	// Issuer, Subject: the token's iss and sub, exactly.
	Issuer  string `json:"iss,omitempty"`
	Subject string `json:"sub,omitempty"`
	// Audience: one of the token's aud.
	Audience string `json:"aud,omitempty"`
	// Claims maps claim paths to values. A path names nested claims with "/"
	// between names ("kubernetes.io/namespace"); "~1" escapes a "/" inside
	// a name and "~0" a "~". Values are compared as text (numbers as written
	// in the token, booleans as true/false); an array claim matches if any
	// element does.
	Claims map[string]string `json:"claims,omitempty"`
	// PeerSubject: the mTLS peer certificate's subject common name, or its
	// whole subject DN as Go prints it ("CN=planner,O=agents").
	PeerSubject string `json:"peerSubject,omitempty"`
	// PeerSAN: one of the peer certificate's SANs: a DNS name (any case), a
	// URI such as spiffe://cluster/ns/agents/sa/planner, or an IP address.
	PeerSAN string `json:"peerSAN,omitempty"`
}

// Identity is what is known about a caller.
type Identity struct {
	Claims *Claims           // nil if no token was presented
	Peer   *x509.Certificate // nil without mTLS
}

// Allowed reports whether any entry matches id, and the index of the first
// one that does (-1 if none). An empty list allows nothing.
func Allowed(allow []Allow, id Identity) (ok bool, matched int) {
	for i, a := range allow {
		if a.matches(id) {
			return true, i
		}
	}
	return false, -1
}

// Validate reports an entry that would match everyone (no field set) or
// that has an unusable claim path or value, naming the field.
func (a Allow) Validate() error {
	if a.empty() {
		return errors.New("allow entry sets none of iss, sub, aud, claims, peerSubject, peerSAN")
	}
	var errs []error
	for _, p := range slices.Sorted(maps.Keys(a.Claims)) {
		if err := validClaimPath(p); err != nil {
			errs = append(errs, fmt.Errorf("claims[%q]: %w", p, err))
		}
		if a.Claims[p] == "" {
			errs = append(errs, fmt.Errorf("claims[%q]: empty value", p))
		}
	}
	return errors.Join(errs...)
}

func (a Allow) matches(id Identity) bool {
	if a.empty() {
		return false // an unvalidated empty entry must not allow everyone
	}
	if a.needsToken() && !a.tokenMatches(id.Claims) {
		return false
	}
	if a.PeerSubject != "" && !peerSubjectMatches(id.Peer, a.PeerSubject) {
		return false
	}
	if a.PeerSAN != "" && !peerSANMatches(id.Peer, a.PeerSAN) {
		return false
	}
	return true
}

func (a Allow) empty() bool {
	return !a.needsToken() && a.PeerSubject == "" && a.PeerSAN == ""
}

func (a Allow) needsToken() bool {
	return a.Issuer != "" || a.Subject != "" || a.Audience != "" || len(a.Claims) > 0
}

func (a Allow) tokenMatches(c *Claims) bool {
	if c == nil {
		return false
	}
	if a.Issuer != "" && c.Issuer != a.Issuer {
		return false
	}
	if a.Subject != "" && c.Subject != a.Subject {
		return false
	}
	if a.Audience != "" && !slices.Contains(c.Audience, a.Audience) {
		return false
	}
	for p, want := range a.Claims {
		if want == "" || validClaimPath(p) != nil {
			return false
		}
		v, ok := lookupClaim(c.Extra, p)
		if !ok || !claimMatches(v, want) {
			return false
		}
	}
	return true
}

func peerSubjectMatches(cert *x509.Certificate, want string) bool {
	return cert != nil && (cert.Subject.CommonName == want || cert.Subject.String() == want)
}

func peerSANMatches(cert *x509.Certificate, want string) bool {
	if cert == nil {
		return false
	}
	for _, d := range cert.DNSNames {
		if strings.EqualFold(d, want) {
			return true
		}
	}
	for _, u := range cert.URIs {
		if u.String() == want {
			return true
		}
	}
	if ip := net.ParseIP(want); ip != nil {
		for _, cip := range cert.IPAddresses {
			if cip.Equal(ip) {
				return true
			}
		}
	}
	return false
}
