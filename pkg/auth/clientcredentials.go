package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Client-credentials timing.
const (
	// earlyExpiry renews a token this long before it expires, so a token is
	// never presented in its last moments.
	earlyExpiry = time.Minute
	// retryAfter holds back a failed fetch so that a down issuer is not
	// hit once per outbound connection.
	retryAfter = time.Second
)

// ClientCredentials configures an OAuth2 client-credentials grant.
type ClientCredentials struct {
	// Issuer is discovered (Issuer/.well-known/openid-configuration) for its
	// token_endpoint; alternatively set TokenURL. Exactly one is required.
	Issuer   string
	TokenURL string
	ClientID string
	// ClientSecret, or ClientSecretFile which is re-read at every fetch so
	// a rotated secret is picked up. Exactly one is required.
	ClientSecret     string
	ClientSecretFile string
	Scopes           []string
	// Audience is sent as the "audience" parameter when set.
	Audience   string
	HTTPClient *http.Client

	earlyExpiry time.Duration // test hook
}

// NewClientCredentialsSource returns a TokenSource that fetches access
// tokens with the client-credentials grant and reuses each until shortly
// before it expires. It returns the access_token, also when the response
// carries an id_token: the access token is what an issuer mints for a
// machine client, with the requested audience.
//
// Discovery and fetches happen at Token time, so the issuer need not be up
// at construction; a missing secret file is reported now. ctx supplies
// values (not cancellation) for those later requests, as in oauth2.
func NewClientCredentialsSource(ctx context.Context, c ClientCredentials) (TokenSource, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.ClientSecretFile != "" {
		if _, err := readSecret(c.ClientSecretFile); err != nil {
			return nil, err
		}
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.earlyExpiry == 0 {
		c.earlyExpiry = earlyExpiry
	}
	f := &ccFetcher{
		c:        c,
		ctx:      context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient, c.HTTPClient),
		tokenURL: c.TokenURL,
	}
	return &ccSource{ts: oauth2.ReuseTokenSourceWithExpiry(nil, f, c.earlyExpiry)}, nil
}

func (c ClientCredentials) validate() error {
	var errs []error
	if (c.Issuer == "") == (c.TokenURL == "") {
		errs = append(errs, errors.New("set exactly one of issuer and tokenURL"))
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("clientID is required"))
	}
	if (c.ClientSecret == "") == (c.ClientSecretFile == "") {
		errs = append(errs, errors.New("set exactly one of clientSecret and clientSecretFile"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("client credentials: %w", err)
	}
	return nil
}

// ccSource adapts the context-free oauth2.TokenSource: a caller that gives
// up returns at once while the fetch completes for the next one.
type ccSource struct {
	ts oauth2.TokenSource
}

func (s *ccSource) Token(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	type result struct {
		tok *oauth2.Token
		err error
	}
	ch := make(chan result, 1)
	go func() {
		t, err := s.ts.Token()
		ch <- result{t, err}
	}()
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case r := <-ch:
		if r.err != nil {
			return "", r.err
		}
		return r.tok.AccessToken, nil
	}
}

// ccFetcher fetches a new token each time it is asked; the reuse wrapper
// asks only when the last one is about to expire, one caller at a time.
type ccFetcher struct {
	c   ClientCredentials
	ctx context.Context

	mu       sync.Mutex
	tokenURL string
	failedAt time.Time
	lastErr  error
}

func (f *ccFetcher) Token() (*oauth2.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lastErr != nil && time.Since(f.failedAt) < retryAfter {
		return nil, f.lastErr
	}
	tok, err := f.fetch()
	if err != nil {
		f.failedAt, f.lastErr = time.Now(), err
		return nil, err
	}
	f.lastErr = nil
	return tok, nil
}

func (f *ccFetcher) fetch() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(f.ctx, fetchTimeout)
	defer cancel()
	if f.tokenURL == "" {
		u, err := discoverTokenURL(ctx, f.c.HTTPClient, f.c.Issuer)
		if err != nil {
			return nil, err
		}
		f.tokenURL = u
	}
	secret := f.c.ClientSecret
	if f.c.ClientSecretFile != "" {
		var err error
		if secret, err = readSecret(f.c.ClientSecretFile); err != nil {
			return nil, err
		}
	}
	cfg := clientcredentials.Config{
		ClientID:     f.c.ClientID,
		ClientSecret: secret,
		TokenURL:     f.tokenURL,
		Scopes:       f.c.Scopes,
	}
	if f.c.Audience != "" {
		cfg.EndpointParams = url.Values{"audience": {f.c.Audience}}
	}
	tok, err := cfg.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("client credentials grant at %s: %w", f.tokenURL, err)
	}
	return stretchShortLived(tok, f.c.earlyExpiry, time.Now()), nil
}

// stretchShortLived handles tokens living less than twice the early-expiry
// margin, which the reuse wrapper would otherwise renew on every call: such
// a token is reused for half its lifetime instead.
func stretchShortLived(tok *oauth2.Token, margin time.Duration, now time.Time) *oauth2.Token {
	if tok.Expiry.IsZero() {
		return tok
	}
	life := tok.Expiry.Sub(now)
	if life >= 2*margin {
		return tok
	}
	tok.Expiry = now.Add(life/2 + margin)
	return tok
}

func discoverTokenURL(ctx context.Context, client *http.Client, issuer string) (string, error) {
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, client), issuer)
	if err != nil {
		return "", fmt.Errorf("oidc discovery for %s: %w", issuer, err)
	}
	u := p.Endpoint().TokenURL
	if u == "" {
		return "", fmt.Errorf("oidc discovery for %s: no token_endpoint", issuer)
	}
	return u, nil
}

func readSecret(path string) (string, error) {
	b, err := readSmall(path, maxTokenFileBytes)
	if err != nil {
		return "", fmt.Errorf("client secret file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("client secret file %s is empty", path)
	}
	return s, nil
}
