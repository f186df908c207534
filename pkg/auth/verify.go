package auth

import (
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Verifier checks workload tokens (JWTs) against one OIDC issuer and
// audience. It is safe for concurrent use.
type Verifier struct {
	issuer   string
	audience string
	algs     []string
	maxBytes int
	skew     time.Duration
	now      func() time.Time
	keys     keySource
	cache    *verifiedCache
	oidc     *oidc.Config
}

// NewVerifier validates c and loads the keys. With JWKSFile, an unreadable
// or invalid file is an error. With discovery, the issuer is tried once with
// ctx but need not be reachable yet: until it is, Verify refuses tokens with
// ReasonIssuerUnreachable, so the inbound side keeps running and auditing,
// and recovers by itself.
func NewVerifier(ctx context.Context, c VerifierConfig) (*Verifier, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	v := &Verifier{
		issuer:   c.Issuer,
		audience: c.Audience,
		algs:     slices.Clone(c.Algorithms),
		maxBytes: c.MaxTokenBytes,
		skew:     c.ClockSkew,
		now:      c.now,
		cache:    newVerifiedCache(c.CacheSize),
	}
	// go-oidc checks iss, aud, alg and exp again; its clock runs behind by
	// the skew so that exp gets the same leeway as in our own check.
	v.oidc = &oidc.Config{
		ClientID:             c.Audience,
		SupportedSigningAlgs: v.algs,
		Now:                  func() time.Time { return v.now().Add(-v.skew) },
	}
	if c.JWKSFile != "" {
		if v.keys, err = newFileKeys(c.JWKSFile, c.statInterval, c.now, c.Logger); err != nil {
			return nil, err
		}
		return v, nil
	}
	remote := newRemoteKeys(c.Issuer, c.HTTPClient, c.refreshInterval, c.now)
	if _, err := remote.refresh(ctx); err != nil {
		c.Logger.Warn("oidc issuer not reachable yet; tokens are refused until it is", "issuer", c.Issuer, "err", err)
	}
	v.keys = remote
	return v, nil
}

// Verify checks raw (the bearer token, without "Bearer ") and returns its
// claims. Every failure is an *Error; see Reasons.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	if len(raw) > v.maxBytes {
		return nil, refuse(ReasonTooLarge, "%d bytes, limit %d", len(raw), v.maxBytes)
	}
	if strings.TrimSpace(raw) == "" {
		return nil, &Error{Reason: ReasonMissing, Err: errors.New("no token")}
	}
	key := sha256.Sum256([]byte(raw))
	set := v.keys.current()
	if set != nil {
		if c := v.cache.get(key, set.version); c != nil {
			if err := v.checkTimes(c, v.now()); err != nil {
				v.cache.remove(key)
				return nil, err
			}
			return c, nil
		}
	}

	h, rerr := parseHeader(raw, v.algs)
	if rerr != nil {
		return nil, rerr
	}
	candidates := set.withKID(h.kid)
	if len(candidates) == 0 {
		var err error
		if set, err = v.keys.refresh(ctx); err != nil {
			return nil, refuse(ReasonIssuerUnreachable, "%w", err)
		}
		if candidates = set.withKID(h.kid); len(candidates) == 0 {
			return nil, refuse(ReasonUnknownKID, "no key with kid %q", h.kid)
		}
	}
	pubs := verificationKeys(candidates, h.alg)
	if len(pubs) == 0 {
		return nil, refuse(ReasonBadSignature, "no key with kid %q fits alg %s", h.kid, h.alg)
	}

	claims, rerr := v.verifyWith(ctx, raw, pubs)
	if rerr != nil {
		return nil, rerr
	}
	v.cache.put(key, set.version, claims)
	return claims, nil
}

// verifyWith runs go-oidc's verification with the chosen keys, then our own
// claim checks, which also name the reason when go-oidc refuses: its errors
// are mostly plain strings.
func (v *Verifier) verifyWith(ctx context.Context, raw string, pubs []crypto.PublicKey) (*Claims, *Error) {
	sig := &sigCheck{keys: oidc.StaticKeySet{PublicKeys: pubs}}
	_, oerr := oidc.NewVerifier(v.issuer, sig, v.oidc).Verify(ctx, raw)
	switch {
	case !sig.called:
		return nil, refuse(ReasonMalformed, "%w", oerr)
	case sig.err != nil:
		return nil, refuse(ReasonBadSignature, "%w", sig.err)
	}
	// The signature is good: the payload can be trusted to say what is
	// wrong with it.
	claims, err := parseClaims(sig.payload)
	if err != nil {
		return nil, refuse(ReasonMalformed, "%w", err)
	}
	if rerr := v.checkClaims(claims, v.now()); rerr != nil {
		return nil, rerr
	}
	if oerr != nil {
		var expired *oidc.TokenExpiredError
		if errors.As(oerr, &expired) {
			return nil, refuse(ReasonExpired, "%w", oerr)
		}
		return nil, refuse(ReasonMalformed, "%w", oerr)
	}
	return claims, nil
}

func (v *Verifier) checkClaims(c *Claims, now time.Time) *Error {
	if c.Issuer != v.issuer {
		return refuse(ReasonWrongIssuer, "iss %q, want %q", c.Issuer, v.issuer)
	}
	if !slices.Contains(c.Audience, v.audience) {
		return refuse(ReasonWrongAudience, "aud %q does not include %q", c.Audience, v.audience)
	}
	if c.Expiry.IsZero() {
		return refuse(ReasonMalformed, "no exp claim")
	}
	return v.checkTimes(c, now)
}

// checkTimes applies exp and nbf with the configured leeway; go-oidc
// checks nbf only with a fixed 5-minute leeway.
func (v *Verifier) checkTimes(c *Claims, now time.Time) *Error {
	if now.After(c.Expiry.Add(v.skew)) {
		return refuse(ReasonExpired, "expired at %s", c.Expiry.Format(time.RFC3339))
	}
	if !c.NotBefore.IsZero() && c.NotBefore.After(now.Add(v.skew)) {
		return refuse(ReasonNotYetValid, "not valid before %s", c.NotBefore.Format(time.RFC3339))
	}
	return nil
}

// sigCheck is the key set handed to go-oidc for one verification. It
// records the signature outcome so a signature failure can be told from a
// claims failure without matching error text.
type sigCheck struct {
	keys    oidc.StaticKeySet
	called  bool
	payload []byte
	err     error
}

func (s *sigCheck) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	s.called = true
	s.payload, s.err = s.keys.VerifySignature(ctx, jwt)
	return s.payload, s.err
}
