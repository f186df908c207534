package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Defaults of VerifierConfig.
const (
	DefaultMaxTokenBytes = 16 << 10
	DefaultClockSkew     = 30 * time.Second
	DefaultCacheSize     = 10000

	// maxClockSkew keeps our leeway below the fixed 5-minute nbf leeway that
	// go-oidc applies to the clock we hand it (shifted back by the skew), so
	// our own nbf check is always the one that decides.
	maxClockSkew = 2 * time.Minute
	// defaultRefreshInterval bounds JWKS fetches: tokens with made-up key
	// ids must not turn into one request to the issuer each.
	defaultRefreshInterval = 10 * time.Second
	// defaultStatInterval bounds how often watched files are stat'ed.
	defaultStatInterval = time.Second
	// fetchTimeout bounds discovery and JWKS requests when the HTTP client
	// has no timeout of its own.
	fetchTimeout = 30 * time.Second
)

// VerifierConfig configures a Verifier. Issuer and Audience are required.
type VerifierConfig struct {
	// Issuer must equal the tokens' iss. Keys are discovered from
	// Issuer/.well-known/openid-configuration unless JWKSFile is set.
	Issuer string
	// Audience must be one of the tokens' aud.
	Audience string
	// JWKSFile is a static JSON Web Key Set (air-gapped clusters), reloaded
	// when the file changes. No network access is made when it is set.
	JWKSFile string
	// Algorithms accepted in the JOSE header; default RS256 RS384 RS512
	// ES256 ES384 ES512 PS256 PS384 PS512. EdDSA may be added; none and
	// HMAC algorithms are refused.
	Algorithms []string
	// MaxTokenBytes refuses longer tokens before parsing; default 16 KiB.
	MaxTokenBytes int
	// ClockSkew is the leeway for exp and nbf; default 30s, at most 2m.
	ClockSkew time.Duration
	// HTTPClient fetches discovery and JWKS documents; default a client with
	// a 10s timeout.
	HTTPClient *http.Client
	// CacheSize bounds the verified-token cache; default 10000, negative
	// disables caching.
	CacheSize int
	// Logger reports key reload problems; default slog.Default().
	Logger *slog.Logger

	// Test hooks.
	now             func() time.Time
	refreshInterval time.Duration
	statInterval    time.Duration
}

func defaultAlgorithms() []string {
	return []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}
}

// signingAlg reports whether alg is an asymmetric JWS algorithm we can
// verify. HMAC and none are never accepted: with a public JWKS, an HMAC
// "signature" proves nothing.
func signingAlg(alg string) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA":
		return true
	}
	return false
}

// withDefaults validates c and fills in defaults.
func (c VerifierConfig) withDefaults() (VerifierConfig, error) {
	var errs []error
	if c.Issuer == "" {
		errs = append(errs, errors.New("issuer is required"))
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("audience is required"))
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = defaultAlgorithms()
	}
	for _, alg := range c.Algorithms {
		if !signingAlg(alg) {
			errs = append(errs, fmt.Errorf("algorithms: %q is not accepted (RS*, ES*, PS* or EdDSA only)", alg))
		}
	}
	switch {
	case c.MaxTokenBytes == 0:
		c.MaxTokenBytes = DefaultMaxTokenBytes
	case c.MaxTokenBytes < 0:
		errs = append(errs, fmt.Errorf("maxTokenBytes: %d is negative", c.MaxTokenBytes))
	}
	switch {
	case c.ClockSkew == 0:
		c.ClockSkew = DefaultClockSkew
	case c.ClockSkew < 0 || c.ClockSkew > maxClockSkew:
		errs = append(errs, fmt.Errorf("clockSkew: %s is not within 0..%s", c.ClockSkew, maxClockSkew))
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.refreshInterval == 0 {
		c.refreshInterval = defaultRefreshInterval
	}
	if c.statInterval == 0 {
		c.statInterval = defaultStatInterval
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("oidc verifier: %w", err)
	}
	return c, nil
}
