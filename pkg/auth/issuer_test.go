package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const testAudience = "intransit"

// testIssuer is a local OIDC issuer: discovery, JWKS and (optionally) a
// token endpoint, served over TLS, with real keys that sign real JWTs.
type testIssuer struct {
	t   testing.TB
	srv *httptest.Server

	discoveryHits atomic.Int64
	jwksHits      atomic.Int64
	jwksFail      atomic.Bool // answer the JWKS endpoint with 500

	mu        sync.Mutex
	published []jose.JSONWebKey
	private   map[string]crypto.Signer
	token     http.HandlerFunc
}

func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	is := &testIssuer{t: t, private: make(map[string]crypto.Signer)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		is.discoveryHits.Add(1)
		writeJSON(w, map[string]any{
			"issuer":                                is.URL(),
			"jwks_uri":                              is.URL() + "/jwks",
			"token_endpoint":                        is.URL() + "/token",
			"id_token_signing_alg_values_supported": defaultAlgorithms(),
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		is.jwksHits.Add(1)
		if is.jwksFail.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(is.jwks())
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		h := is.token
		is.mu.Unlock()
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	})
	is.srv = httptest.NewTLSServer(mux)
	t.Cleanup(is.srv.Close)
	return is
}

func (is *testIssuer) URL() string          { return is.srv.URL }
func (is *testIssuer) client() *http.Client { return is.srv.Client() }

// jwks returns the published key set document.
func (is *testIssuer) jwks() []byte {
	is.mu.Lock()
	defer is.mu.Unlock()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: is.published})
	if err != nil {
		is.t.Fatal(err)
	}
	return b
}

// addRSA creates an RSA key, publishes it under kid and returns it.
func (is *testIssuer) addRSA(kid string) *rsa.PrivateKey {
	k := newRSAKey(is.t)
	is.publish(kid, k, "")
	return k
}

// addEC creates a P-256 key, publishes it under kid and returns it.
func (is *testIssuer) addEC(kid string) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		is.t.Fatal(err)
	}
	is.publish(kid, k, "")
	return k
}

func (is *testIssuer) publish(kid string, k crypto.Signer, alg string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.published = append(is.published, jose.JSONWebKey{Key: k.Public(), KeyID: kid, Algorithm: alg, Use: "sig"})
	is.private[kid] = k
}

// unpublish removes kid from the JWKS (the private key stays usable).
func (is *testIssuer) unpublish(kid string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	var keep []jose.JSONWebKey
	for _, k := range is.published {
		if k.KeyID != kid {
			keep = append(keep, k)
		}
	}
	is.published = keep
}

func (is *testIssuer) key(kid string) crypto.Signer {
	is.mu.Lock()
	defer is.mu.Unlock()
	k, ok := is.private[kid]
	if !ok {
		is.t.Fatalf("no key %q", kid)
	}
	return k
}

// claims returns valid claims for sub, relative to now.
func (is *testIssuer) claims(sub string, now time.Time) map[string]any {
	return map[string]any{
		"iss": is.URL(),
		"sub": sub,
		"aud": testAudience,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
}

// mint signs claims with the issuer's key kid.
func (is *testIssuer) mint(kid string, alg jose.SignatureAlgorithm, claims map[string]any) string {
	return signJWT(is.t, is.key(kid), kid, alg, claims)
}

// signJWT signs claims with any key, naming kid in the header.
func signJWT(t testing.TB, key crypto.Signer, kid string, alg jose.SignatureAlgorithm, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// craftJWT builds a token by hand, for headers no honest library emits.
// sign gets the signing input and returns the signature bytes.
func craftJWT(t *testing.T, header, claims map[string]any, sign func([]byte) []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := b64(h) + "." + b64(c)
	return input + "." + b64(sign([]byte(input)))
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func hs256(secret []byte) func([]byte) []byte {
	return func(in []byte) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write(in)
		return m.Sum(nil)
	}
}

func newRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// fakeClock is a settable clock for expiry tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
