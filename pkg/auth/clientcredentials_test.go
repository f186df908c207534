package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// tokenEndpoint answers client-credentials grants for one client, counting
// them, and records the last request's form.
type tokenEndpoint struct {
	secret    atomic.Value // string
	expiresIn int
	requests  atomic.Int64
	fail      atomic.Bool

	mu   sync.Mutex
	last map[string]string
}

func (e *tokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := e.requests.Add(1)
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	e.mu.Lock()
	e.last = map[string]string{"grant_type": r.PostForm.Get("grant_type"), "scope": r.PostForm.Get("scope"),
		"audience": r.PostForm.Get("audience"), "client_id": id}
	e.mu.Unlock()
	if e.fail.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if id != "agent" || secret != e.secret.Load().(string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	writeJSON(w, map[string]any{
		"access_token": fmt.Sprintf("access-%d", n),
		"id_token":     "not-this-one",
		"token_type":   "Bearer",
		"expires_in":   e.expiresIn,
	})
}

func (e *tokenEndpoint) lastForm() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last
}

func newTokenEndpoint(t *testing.T, is *testIssuer, secret string, expiresIn int) *tokenEndpoint {
	e := &tokenEndpoint{expiresIn: expiresIn}
	e.secret.Store(secret)
	is.mu.Lock()
	is.token = e.ServeHTTP
	is.mu.Unlock()
	return e
}

func TestClientCredentialsReusesToken(t *testing.T) {
	is := newTestIssuer(t)
	ep := newTokenEndpoint(t, is, "s3cret", 3600)
	src, err := NewClientCredentialsSource(context.Background(), ClientCredentials{
		TokenURL: is.URL() + "/token", ClientID: "agent", ClientSecret: "s3cret",
		Scopes: []string{"tunnel"}, Audience: "intransit", HTTPClient: is.client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if got := token(t, src); got != "access-1" {
				t.Errorf("token %q", got)
			}
		})
	}
	wg.Wait()
	if n := ep.requests.Load(); n != 1 {
		t.Fatalf("%d token requests for 50 calls, want 1", n)
	}
	form := ep.lastForm()
	if form["grant_type"] != "client_credentials" || form["scope"] != "tunnel" || form["audience"] != "intransit" || form["client_id"] != "agent" {
		t.Errorf("request form %v", form)
	}
	if is.discoveryHits.Load() != 0 {
		t.Error("discovery with an explicit token URL")
	}
}

func TestClientCredentialsRefreshesBeforeExpiry(t *testing.T) {
	is := newTestIssuer(t)
	ep := newTokenEndpoint(t, is, "s3cret", 2)
	src, err := NewClientCredentialsSource(context.Background(), ClientCredentials{
		TokenURL: is.URL() + "/token", ClientID: "agent", ClientSecret: "s3cret", HTTPClient: is.client(),
		earlyExpiry: time.Second, // a 2s token is reused for about 1s
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := token(t, src); got != "access-1" {
		t.Fatalf("token %q", got)
	}
	if got := token(t, src); got != "access-1" {
		t.Fatalf("token %q right after the first", got)
	}
	time.Sleep(1200 * time.Millisecond)
	if got := token(t, src); got != "access-2" {
		t.Fatalf("token %q past the early-expiry margin", got)
	}
	if n := ep.requests.Load(); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
}

func TestClientCredentialsDiscoveryAndSecretFile(t *testing.T) {
	is := newTestIssuer(t)
	ep := newTokenEndpoint(t, is, "from-file", 2)
	secretFile := filepath.Join(t.TempDir(), "secret")
	writeAtomic(t, secretFile, []byte("from-file\n"))
	src, err := NewClientCredentialsSource(context.Background(), ClientCredentials{
		Issuer: is.URL(), ClientID: "agent", ClientSecretFile: secretFile, HTTPClient: is.client(),
		earlyExpiry: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if is.discoveryHits.Load() != 0 {
		t.Error("discovery before the first token was asked for")
	}
	if got := token(t, src); got != "access-1" {
		t.Fatalf("token %q", got)
	}
	if is.discoveryHits.Load() != 1 {
		t.Errorf("%d discovery requests, want 1", is.discoveryHits.Load())
	}

	// A rotated secret is read at the next fetch; discovery is not redone.
	ep.secret.Store("rotated")
	writeAtomic(t, secretFile, []byte("rotated"))
	time.Sleep(1200 * time.Millisecond)
	if got := token(t, src); got != "access-2" {
		t.Fatalf("token %q after rotation", got)
	}
	if is.discoveryHits.Load() != 1 {
		t.Errorf("%d discovery requests, want 1", is.discoveryHits.Load())
	}
}

func TestClientCredentialsFailures(t *testing.T) {
	is := newTestIssuer(t)
	ep := newTokenEndpoint(t, is, "s3cret", 3600)
	ep.fail.Store(true)
	src, err := NewClientCredentialsSource(context.Background(), ClientCredentials{
		TokenURL: is.URL() + "/token", ClientID: "agent", ClientSecret: "s3cret", HTTPClient: is.client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Token(context.Background()); err == nil {
		t.Fatal("token from a failing endpoint")
	}
	// oauth2 may try a second client authentication style on failure.
	first := ep.requests.Load()
	for range 5 {
		if _, err := src.Token(context.Background()); err == nil {
			t.Fatal("token from a failing endpoint")
		}
	}
	if n := ep.requests.Load(); n != first {
		t.Errorf("%d more requests to a failing endpoint within a second, want 0", n-first)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := src.Token(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: %v", err)
	}
}

func TestNewClientCredentialsSourceRefusesBadConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		c    ClientCredentials
		want string
	}{
		{ClientCredentials{ClientID: "a", ClientSecret: "s"}, "issuer and tokenURL"},
		{ClientCredentials{Issuer: "https://i", TokenURL: "https://i/t", ClientID: "a", ClientSecret: "s"}, "issuer and tokenURL"},
		{ClientCredentials{TokenURL: "https://i/t", ClientSecret: "s"}, "clientID is required"},
		{ClientCredentials{TokenURL: "https://i/t", ClientID: "a"}, "clientSecret and clientSecretFile"},
		{ClientCredentials{TokenURL: "https://i/t", ClientID: "a", ClientSecretFile: missing}, missing},
	} {
		_, err := NewClientCredentialsSource(context.Background(), tc.c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.c, err, tc.want)
		}
	}
}

func TestStretchShortLived(t *testing.T) {
	now := time.Now()
	long := &oauth2.Token{Expiry: now.Add(time.Hour)}
	if got := stretchShortLived(long, time.Minute, now); !got.Expiry.Equal(now.Add(time.Hour)) {
		t.Errorf("an hour-long token was changed: %s", got.Expiry)
	}
	// 30s token, 1m margin: reused for 15s, not renewed on every call.
	short := &oauth2.Token{Expiry: now.Add(30 * time.Second)}
	if got := stretchShortLived(short, time.Minute, now); !got.Expiry.Add(-time.Minute).Equal(now.Add(15 * time.Second)) {
		t.Errorf("30s token reused until %s", got.Expiry.Add(-time.Minute).Sub(now))
	}
}
