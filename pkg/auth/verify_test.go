package auth

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// newTestVerifier verifies tokens of is; refresh is not rate limited unless
// the test sets its own config.
func newTestVerifier(t *testing.T, is *testIssuer, mod func(*VerifierConfig)) *Verifier {
	t.Helper()
	c := VerifierConfig{
		Issuer:          is.URL(),
		Audience:        testAudience,
		HTTPClient:      is.client(),
		Logger:          slog.New(slog.DiscardHandler),
		refreshInterval: time.Nanosecond,
	}
	if mod != nil {
		mod(&c)
	}
	v, err := NewVerifier(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyValidTokens(t *testing.T) {
	is := newTestIssuer(t)
	is.addRSA("rsa1")
	is.addEC("ec1")
	v := newTestVerifier(t, is, nil)
	now := time.Now()

	for _, tc := range []struct {
		kid string
		alg jose.SignatureAlgorithm
	}{{"rsa1", jose.RS256}, {"ec1", jose.ES256}, {"rsa1", jose.PS256}, {"rsa1", jose.RS512}} {
		t.Run(string(tc.alg), func(t *testing.T) {
			cl := is.claims("system:serviceaccount:agents:planner", now)
			cl["aud"] = []string{"other", testAudience}
			cl["kubernetes.io"] = map[string]any{"namespace": "agents"}
			got, err := v.Verify(context.Background(), is.mint(tc.kid, tc.alg, cl))
			if err != nil {
				t.Fatal(err)
			}
			if got.Issuer != is.URL() || got.Subject != "system:serviceaccount:agents:planner" {
				t.Errorf("iss, sub = %q, %q", got.Issuer, got.Subject)
			}
			if !slices.Equal(got.Audience, []string{"other", testAudience}) {
				t.Errorf("aud = %q", got.Audience)
			}
			if got.Expiry.Unix() != now.Add(time.Hour).Unix() || got.NotBefore.Unix() != now.Unix() || got.IssuedAt.Unix() != now.Unix() {
				t.Errorf("exp, nbf, iat = %s, %s, %s", got.Expiry, got.NotBefore, got.IssuedAt)
			}
			if ns, _ := lookupClaim(got.Extra, "kubernetes.io/namespace"); ns != "agents" {
				t.Errorf("kubernetes.io/namespace = %v", ns)
			}
		})
	}
}

func TestVerifyReasons(t *testing.T) {
	is := newTestIssuer(t)
	rsaKey := is.addRSA("rsa1")
	is.addEC("ec1")
	v := newTestVerifier(t, is, nil)
	now := time.Now()
	valid := func() map[string]any { return is.claims("planner", now) }
	with := func(k string, val any) map[string]any {
		c := valid()
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return c
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: mustPKIX(t, &rsaKey.PublicKey)})

	tests := []struct {
		name   string
		token  string
		reason string
	}{
		{"empty", "", ReasonMissing},
		{"blank", "  ", ReasonMissing},
		{"20 KiB", is.mint("rsa1", jose.RS256, with("pad", strings.Repeat("a", 20<<10))), ReasonTooLarge},
		{"one part", "garbage", ReasonMalformed},
		{"two parts", "abc.def", ReasonMalformed},
		{"bad base64 header", "!!!.e30.sig", ReasonMalformed},
		{"header not json", b64([]byte("nope")) + ".e30.c2ln", ReasonMalformed},
		{"no alg", craftJWT(t, map[string]any{"kid": "rsa1"}, valid(), hs256([]byte("x"))), ReasonMalformed},
		{"json serialization", `{"payload":"e30","protected":"e30","signature":"c2ln"}`, ReasonMalformed},
		{"whitespace inside", "a b.c.d", ReasonMalformed},
		{"payload not json", signedPayload(t, rsaKey, "rsa1", []byte("not json")), ReasonMalformed},
		{"no exp", is.mint("rsa1", jose.RS256, with("exp", nil)), ReasonMalformed},
		{"exp not a number", is.mint("rsa1", jose.RS256, with("exp", "tomorrow")), ReasonMalformed},
		{"alg none", craftJWT(t, map[string]any{"alg": "none", "typ": "JWT"}, valid(), func([]byte) []byte { return nil }), ReasonUnsupportedAlg},
		{"alg None", craftJWT(t, map[string]any{"alg": "None"}, valid(), func([]byte) []byte { return nil }), ReasonUnsupportedAlg},
		{"HS256 keyed with the RSA public key", craftJWT(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": "rsa1"}, valid(), hs256(pubPEM)), ReasonUnsupportedAlg},
		{"HS256 keyed with the DER public key", craftJWT(t, map[string]any{"alg": "HS256", "kid": "rsa1"}, valid(), hs256(mustPKIX(t, &rsaKey.PublicKey))), ReasonUnsupportedAlg},
		{"unknown kid", signJWT(t, newRSAKey(t), "rsa9", jose.RS256, valid()), ReasonUnknownKID},
		{"forged RSA, same kid", signJWT(t, newRSAKey(t), "rsa1", jose.RS256, valid()), ReasonBadSignature},
		{"forged, no kid", signJWT(t, newRSAKey(t), "", jose.RS256, valid()), ReasonBadSignature},
		{"RSA alg on the EC key", signJWT(t, newRSAKey(t), "ec1", jose.RS256, valid()), ReasonBadSignature},
		{"tampered payload", tamper(is.mint("rsa1", jose.RS256, valid())), ReasonBadSignature},
		{"wrong iss", is.mint("rsa1", jose.RS256, with("iss", "https://evil.example")), ReasonWrongIssuer},
		{"no iss", is.mint("rsa1", jose.RS256, with("iss", nil)), ReasonWrongIssuer},
		{"wrong aud", is.mint("rsa1", jose.RS256, with("aud", "kubernetes")), ReasonWrongAudience},
		{"wrong aud array", is.mint("ec1", jose.ES256, with("aud", []string{"a", "b"})), ReasonWrongAudience},
		{"expired", is.mint("rsa1", jose.RS256, with("exp", now.Add(-time.Hour).Unix())), ReasonExpired},
		{"expired beyond skew", is.mint("ec1", jose.ES256, with("exp", now.Add(-time.Minute).Unix())), ReasonExpired},
		{"nbf in an hour", is.mint("rsa1", jose.RS256, with("nbf", now.Add(time.Hour).Unix())), ReasonNotYetValid},
		// go-oidc only refuses nbf beyond 5 minutes: ours is the check here.
		{"nbf in 2 minutes", is.mint("rsa1", jose.RS256, with("nbf", now.Add(2*time.Minute).Unix())), ReasonNotYetValid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tc.token)
			if got := ReasonOf(err); got != tc.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.reason)
			}
			var ae *Error
			if !errors.As(err, &ae) || !strings.HasPrefix(err.Error(), tc.reason) {
				t.Errorf("error %v is not an *Error starting with its reason", err)
			}
		})
	}
}

func TestVerifyClockSkew(t *testing.T) {
	is := newTestIssuer(t)
	is.addRSA("rsa1")
	v := newTestVerifier(t, is, func(c *VerifierConfig) { c.CacheSize = -1 })
	now := time.Now()
	c := is.claims("planner", now)
	c["exp"] = now.Add(-10 * time.Second).Unix()
	c["nbf"] = now.Add(10 * time.Second).Unix()
	if _, err := v.Verify(context.Background(), is.mint("rsa1", jose.RS256, c)); err != nil {
		t.Fatalf("within the 30s skew: %v", err)
	}
}

func TestVerifyAlgorithmNotInList(t *testing.T) {
	is := newTestIssuer(t)
	is.addRSA("rsa1")
	is.addEC("ec1")
	v := newTestVerifier(t, is, func(c *VerifierConfig) { c.Algorithms = []string{"ES256"} })
	hits := is.jwksHits.Load()
	_, err := v.Verify(context.Background(), is.mint("rsa1", jose.RS256, is.claims("planner", time.Now())))
	if ReasonOf(err) != ReasonUnsupportedAlg {
		t.Fatalf("RS256 with only ES256 allowed: %v", err)
	}
	if is.jwksHits.Load() != hits {
		t.Error("an unsupported alg reached the key set")
	}
	if _, err := v.Verify(context.Background(), is.mint("ec1", jose.ES256, is.claims("planner", time.Now()))); err != nil {
		t.Fatal(err)
	}
}

func TestNewVerifierRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		c    VerifierConfig
		want string
	}{
		{VerifierConfig{Audience: "a"}, "issuer is required"},
		{VerifierConfig{Issuer: "https://i"}, "audience is required"},
		{VerifierConfig{Issuer: "https://i", Audience: "a", Algorithms: []string{"RS256", "HS256"}}, `"HS256" is not accepted`},
		{VerifierConfig{Issuer: "https://i", Audience: "a", Algorithms: []string{"none"}}, `"none" is not accepted`},
		{VerifierConfig{Issuer: "https://i", Audience: "a", ClockSkew: time.Hour}, "clockSkew"},
		{VerifierConfig{Issuer: "https://i", Audience: "a", MaxTokenBytes: -1}, "maxTokenBytes"},
		{VerifierConfig{Issuer: "https://i", Audience: "a", JWKSFile: "/nonexistent/jwks.json"}, "/nonexistent/jwks.json"},
	} {
		_, err := NewVerifier(context.Background(), tc.c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want it to mention %q", tc.c, err, tc.want)
		}
	}
}

func TestVerifyIssuerUnreachable(t *testing.T) {
	t.Run("down at start, recovers", func(t *testing.T) {
		is := newTestIssuer(t)
		is.addRSA("rsa1")
		is.jwksFail.Store(true)
		v := newTestVerifier(t, is, nil) // must not fail: the issuer may come up later
		tok := is.mint("rsa1", jose.RS256, is.claims("planner", time.Now()))
		if _, err := v.Verify(context.Background(), tok); ReasonOf(err) != ReasonIssuerUnreachable {
			t.Fatalf("got %v", err)
		}
		is.jwksFail.Store(false)
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	})
	t.Run("no server", func(t *testing.T) {
		is := newTestIssuer(t)
		is.addRSA("rsa1")
		tok := is.mint("rsa1", jose.RS256, is.claims("planner", time.Now()))
		is.srv.Close()
		v := newTestVerifier(t, is, nil)
		if _, err := v.Verify(context.Background(), tok); ReasonOf(err) != ReasonIssuerUnreachable {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("refresh fails for a new kid", func(t *testing.T) {
		is := newTestIssuer(t)
		is.addRSA("rsa1")
		v := newTestVerifier(t, is, nil)
		is.jwksFail.Store(true)
		tok := signJWT(t, newRSAKey(t), "rsa2", jose.RS256, is.claims("planner", time.Now()))
		if _, err := v.Verify(context.Background(), tok); ReasonOf(err) != ReasonIssuerUnreachable {
			t.Fatalf("got %v", err)
		}
	})
}

func TestVerifyRemoteKeyRotation(t *testing.T) {
	is := newTestIssuer(t)
	is.addRSA("old")
	clock := newFakeClock()
	v := newTestVerifier(t, is, func(c *VerifierConfig) { c.now = clock.Now; c.refreshInterval = 10 * time.Second })
	if got := is.jwksHits.Load(); got != 1 {
		t.Fatalf("%d JWKS fetches at start, want 1", got)
	}
	ctx := context.Background()
	oldTok := is.mint("old", jose.RS256, is.claims("planner", clock.Now()))
	if _, err := v.Verify(ctx, oldTok); err != nil {
		t.Fatal(err)
	}

	// A kid nobody published: refused, but it may not make us hammer the
	// issuer.
	clock.Advance(11 * time.Second)
	bogus := signJWT(t, newRSAKey(t), "bogus", jose.RS256, is.claims("planner", clock.Now()))
	for range 5 {
		if _, err := v.Verify(ctx, bogus); ReasonOf(err) != ReasonUnknownKID {
			t.Fatalf("got %v", err)
		}
	}
	if got := is.jwksHits.Load(); got != 2 {
		t.Fatalf("%d JWKS fetches after 5 unknown kids, want 2 (one refresh)", got)
	}

	// Rotation: a new key is published and the old one withdrawn.
	clock.Advance(11 * time.Second)
	is.addRSA("new")
	is.unpublish("old")
	if _, err := v.Verify(ctx, is.mint("new", jose.RS256, is.claims("planner", clock.Now()))); err != nil {
		t.Fatalf("token with the new key: %v", err)
	}
	// The cached verification of the old token went with its key.
	if _, err := v.Verify(ctx, oldTok); ReasonOf(err) != ReasonUnknownKID {
		t.Fatalf("token with the withdrawn key: %v", err)
	}
}

func TestVerifyCache(t *testing.T) {
	is := newTestIssuer(t)
	is.addRSA("rsa1")
	clock := newFakeClock()
	v := newTestVerifier(t, is, func(c *VerifierConfig) { c.now = clock.Now })
	ctx := context.Background()
	c := is.claims("planner", clock.Now())
	c["exp"] = clock.Now().Add(time.Minute).Unix()
	tok := is.mint("rsa1", jose.RS256, c)

	first, err := v.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	hits := is.jwksHits.Load() + is.discoveryHits.Load()
	for range 100 {
		got, err := v.Verify(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		if got != first {
			t.Fatal("a cached token was verified again")
		}
	}
	if now := is.jwksHits.Load() + is.discoveryHits.Load(); now != hits {
		t.Errorf("%d issuer requests while serving from the cache", now-hits)
	}

	clock.Advance(time.Minute + DefaultClockSkew - time.Second)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("within the skew: %v", err)
	}
	clock.Advance(2 * time.Second)
	if _, err := v.Verify(ctx, tok); ReasonOf(err) != ReasonExpired {
		t.Fatalf("after expiry: %v", err)
	}
	if v.cache.len() != 0 {
		t.Error("the expired token is still cached")
	}
}

func TestVerifyCacheBounded(t *testing.T) {
	is := newTestIssuer(t)
	is.addEC("ec1")
	v := newTestVerifier(t, is, func(c *VerifierConfig) { c.CacheSize = 3 })
	for i := range 10 {
		c := is.claims("planner", time.Now())
		c["n"] = i
		if _, err := v.Verify(context.Background(), is.mint("ec1", jose.ES256, c)); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.cache.len(); n != 3 {
		t.Fatalf("cache holds %d entries, want 3", n)
	}
}

// offlineClient fails the test if anything tries the network.
func offlineClient(t *testing.T) *http.Client {
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		t.Errorf("network access in JWKS-file mode: %s", r.URL)
		return nil, errors.New("offline")
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// writeAtomic replaces path the way careful writers (and kubelet) do.
func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func jwksOf(t *testing.T, is *testIssuer, kids ...string) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, kid := range kids {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: is.key(kid).Public(), KeyID: kid, Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyJWKSFile(t *testing.T) {
	is := newTestIssuer(t) // only its keys are used; nothing is fetched
	is.addRSA("k1")
	is.addEC("k2")
	is.addRSA("k3")
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeAtomic(t, path, jwksOf(t, is, "k1"))
	v := newTestVerifier(t, is, func(c *VerifierConfig) {
		c.JWKSFile = path
		c.HTTPClient = offlineClient(t)
		c.now = clock.Now
	})
	ctx := context.Background()
	tok1 := is.mint("k1", jose.RS256, is.claims("planner", clock.Now()))
	if _, err := v.Verify(ctx, tok1); err != nil {
		t.Fatal(err)
	}

	// Rotation to k2: the first token naming k2 makes us look at the file.
	writeAtomic(t, path, jwksOf(t, is, "k2"))
	if _, err := v.Verify(ctx, is.mint("k2", jose.ES256, is.claims("planner", clock.Now()))); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if _, err := v.Verify(ctx, tok1); ReasonOf(err) != ReasonUnknownKID {
		t.Fatalf("k1 token after k1 left the file: %v", err)
	}

	// A broken rewrite keeps the keys we had.
	writeAtomic(t, path, []byte(`{"keys": [`))
	clock.Advance(time.Second)
	if _, err := v.Verify(ctx, is.mint("k2", jose.ES256, is.claims("planner", clock.Now()))); err != nil {
		t.Fatalf("after a broken rewrite: %v", err)
	}

	// Removing a key is noticed within the stat interval, even for a token
	// that is cached.
	tok2 := is.mint("k2", jose.ES256, is.claims("planner", clock.Now()))
	if _, err := v.Verify(ctx, tok2); err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, path, jwksOf(t, is, "k3"))
	clock.Advance(time.Second)
	if _, err := v.Verify(ctx, tok2); ReasonOf(err) != ReasonUnknownKID {
		t.Fatalf("cached k2 token after k2 left the file: %v", err)
	}
}

func TestParseJWKSSkipsUnusableKeys(t *testing.T) {
	is := newTestIssuer(t)
	rsaKey := is.addRSA("rsa1")
	doc, err := json.Marshal(map[string]any{"keys": []any{
		map[string]any{"kty": "oct", "k": b64([]byte("0123456789abcdef0123456789abcdef")), "kid": "hmac"},
		map[string]any{"kty": "OKP", "crv": "X448", "x": b64(make([]byte, 56)), "kid": "x448"},
		json.RawMessage(mustJSON(t, jose.JSONWebKey{Key: &rsaKey.PublicKey, KeyID: "enc", Use: "enc"})),
		json.RawMessage(mustJSON(t, jose.JSONWebKey{Key: rsaKey, KeyID: "private"})),
	}})
	if err != nil {
		t.Fatal(err)
	}
	keys, _, err := parseJWKS(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].KeyID != "private" || !keys[0].IsPublic() {
		t.Fatalf("kept %+v, want only the public half of the private key", keys)
	}
	if _, _, err := parseJWKS([]byte(`{"keys":[]}`)); err == nil {
		t.Error("an empty key set was accepted")
	}
}

func TestErrorAndReasonOf(t *testing.T) {
	if ReasonOf(nil) != "" {
		t.Error("ReasonOf(nil) is not empty")
	}
	inner := errors.New("detail")
	err := error(&Error{Reason: ReasonExpired, Err: inner})
	if err.Error() != "expired: detail" || !errors.Is(err, inner) {
		t.Errorf("Error() = %q, Is = %v", err.Error(), errors.Is(err, inner))
	}
	if ReasonOf(errors.Join(errors.New("x"), err)) != ReasonExpired {
		t.Error("ReasonOf does not look through wrapping")
	}
	if ReasonOf(errors.New("plain")) != reasonOther {
		t.Error("ReasonOf of a foreign error")
	}
	if !slices.Contains(Reasons(), ReasonIssuerUnreachable) || len(Reasons()) != 12 {
		t.Errorf("Reasons() = %q", Reasons())
	}
}

func FuzzVerify(f *testing.F) {
	is := newTestIssuer(f)
	is.addRSA("k1")
	path := filepath.Join(f.TempDir(), "jwks.json")
	if err := os.WriteFile(path, is.jwks(), 0o600); err != nil {
		f.Fatal(err)
	}
	v, err := NewVerifier(context.Background(), VerifierConfig{Issuer: is.URL(), Audience: testAudience, JWKSFile: path})
	if err != nil {
		f.Fatal(err)
	}
	valid := is.mint("k1", jose.RS256, is.claims("planner", time.Now()))
	for _, s := range []string{
		valid, tamper(valid), valid[:len(valid)/2], "", ".", "..", "...", "a.b.c",
		"eyJhbGciOiJub25lIn0.e30.", "eyJhbGciOiJSUzI1NiJ9.e30.AAAA",
		`{"payload":"e30"}`, strings.Repeat("A", 100),
	} {
		f.Add(s)
	}
	known := Reasons()
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := v.Verify(context.Background(), raw)
		if err == nil {
			if c == nil || c.Issuer != is.URL() {
				t.Fatalf("accepted %q with claims %+v", raw, c)
			}
			return
		}
		var ae *Error
		if !errors.As(err, &ae) || !slices.Contains(known, ae.Reason) || ae.Reason == reasonOther {
			t.Fatalf("error %v has no known reason", err)
		}
	})
}

// tamper flips the first character of the payload: the signature no longer
// covers it.
func tamper(tok string) string {
	parts := strings.SplitN(tok, ".", 3)
	p := []byte(parts[1])
	if p[0] == 'e' {
		p[0] = 'f'
	} else {
		p[0] = 'e'
	}
	return parts[0] + "." + string(p) + "." + parts[2]
}

// signedPayload signs an arbitrary payload (not necessarily JSON).
func signedPayload(t *testing.T, key *rsa.PrivateKey, kid string, payload []byte) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
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

func mustPKIX(t *testing.T, pub any) []byte {
	t.Helper()
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
