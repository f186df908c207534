package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/sync/singleflight"
)

// remoteKeys fetches the issuer's JWKS, found through OIDC discovery. Keys
// are fetched when first needed and again when a token names a key id we
// lack (the rotation strategy of OIDC Core 10.1), at most once per interval.
//
// go-oidc's RemoteKeySet does the same but cannot tell an unknown key id
// from a bad signature, which the audit trail needs; signatures are still
// checked by go-oidc.
type remoteKeys struct {
	issuer   string
	client   *http.Client
	interval time.Duration
	now      func() time.Time
	group    singleflight.Group

	mu      sync.Mutex
	jwksURL string // discovered; cleared when a fetch fails
	set     *keySet
	tried   time.Time // end of the last fetch attempt
	lastErr error     // of the last attempt
}

func newRemoteKeys(issuer string, client *http.Client, interval time.Duration, now func() time.Time) *remoteKeys {
	return &remoteKeys{issuer: issuer, client: client, interval: interval, now: now}
}

func (r *remoteKeys) current() *keySet {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.set
}

func (r *remoteKeys) refresh(ctx context.Context) (*keySet, error) {
	r.mu.Lock()
	if !r.tried.IsZero() && r.now().Sub(r.tried) < r.interval {
		set, err := r.set, r.lastErr
		r.mu.Unlock()
		return set, err
	}
	r.mu.Unlock()

	// Callers arriving while a fetch runs share it. The fetch outlives a
	// caller that gives up, so its result still lands in the cache.
	fctx := context.WithoutCancel(ctx)
	ch := r.group.DoChan("jwks", func() (any, error) { return r.fetch(fctx) })
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*keySet), nil
	}
}

func (r *remoteKeys) fetch(ctx context.Context) (*keySet, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	set, err := r.fetchOnce(ctx)

	r.mu.Lock()
	defer r.mu.Unlock()
	r.tried, r.lastErr = r.now(), err
	if err != nil {
		// The JWKS may have moved; discover again next time.
		r.jwksURL = ""
		return nil, err
	}
	r.set = r.set.next(set.keys, set.digest)
	return r.set, nil
}

func (r *remoteKeys) fetchOnce(ctx context.Context) (*keySet, error) {
	url, err := r.discover(ctx)
	if err != nil {
		return nil, err
	}
	doc, err := r.get(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks %s: %w", url, err)
	}
	keys, digest, err := parseJWKS(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return &keySet{keys: keys, digest: digest}, nil
}

// discover returns jwks_uri from the issuer's discovery document; go-oidc
// also checks that the document names the same issuer.
func (r *remoteKeys) discover(ctx context.Context) (string, error) {
	r.mu.Lock()
	url := r.jwksURL
	r.mu.Unlock()
	if url != "" {
		return url, nil
	}
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, r.client), r.issuer)
	if err != nil {
		return "", fmt.Errorf("oidc discovery for %s: %w", r.issuer, err)
	}
	var doc struct {
		JWKSURL string `json:"jwks_uri"`
	}
	if err := p.Claims(&doc); err != nil {
		return "", fmt.Errorf("oidc discovery for %s: %w", r.issuer, err)
	}
	if doc.JWKSURL == "" {
		return "", fmt.Errorf("oidc discovery for %s: no jwks_uri", r.issuer)
	}
	r.mu.Lock()
	r.jwksURL = doc.JWKSURL
	r.mu.Unlock()
	return doc.JWKSURL, nil
}

func (r *remoteKeys) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJWKSBytes {
		return nil, errors.New("jwks document too large")
	}
	return b, nil
}
