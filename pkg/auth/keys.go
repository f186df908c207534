package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// maxJWKSBytes bounds a JWKS document, fetched or read from a file.
const maxJWKSBytes = 1 << 20

// keySource supplies the issuer's public keys.
type keySource interface {
	// current returns the keys in hand without network I/O, nil if none
	// have been loaded yet.
	current() *keySet
	// refresh looks for new keys (rate limited) and returns the freshest
	// set. An error means the keys could not be obtained, so a missing key
	// id cannot be called unknown.
	refresh(ctx context.Context) (*keySet, error)
}

// keySet is an immutable set of verification keys. version changes whenever
// the content does, which invalidates cached verifications.
type keySet struct {
	keys    []jose.JSONWebKey
	digest  [32]byte
	version uint64
}

// next returns the set for a newly loaded document: s itself if nothing
// changed, otherwise a new set with the next version.
func (s *keySet) next(keys []jose.JSONWebKey, digest [32]byte) *keySet {
	if s == nil {
		return &keySet{keys: keys, digest: digest, version: 1}
	}
	if s.digest == digest {
		return s
	}
	return &keySet{keys: keys, digest: digest, version: s.version + 1}
}

// withKID returns the keys named kid, or all keys for a token without kid.
func (s *keySet) withKID(kid string) []jose.JSONWebKey {
	if s == nil {
		return nil
	}
	if kid == "" {
		return s.keys
	}
	var out []jose.JSONWebKey
	for _, k := range s.keys {
		if k.KeyID == kid {
			out = append(out, k)
		}
	}
	return out
}

// verificationKeys keeps the keys that can verify alg: a key that pins
// another alg, or whose type or curve does not fit, is skipped.
func verificationKeys(keys []jose.JSONWebKey, alg string) []crypto.PublicKey {
	var out []crypto.PublicKey
	for _, k := range keys {
		if k.Algorithm != "" && k.Algorithm != alg {
			continue
		}
		if keyFits(k.Key, alg) {
			out = append(out, k.Key)
		}
	}
	return out
}

func keyFits(key any, alg string) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		_, ok := key.(*rsa.PublicKey)
		return ok
	case "ES256":
		return curveIs(key, elliptic.P256())
	case "ES384":
		return curveIs(key, elliptic.P384())
	case "ES512":
		return curveIs(key, elliptic.P521())
	case "EdDSA":
		_, ok := key.(ed25519.PublicKey)
		return ok
	}
	return false
}

func curveIs(key any, c elliptic.Curve) bool {
	k, ok := key.(*ecdsa.PublicKey)
	return ok && k.Curve == c
}

// parseJWKS reads a JSON Web Key Set, keeping public signing keys. Keys of
// types go-jose does not know are skipped (RFC 7517 5); symmetric keys are
// dropped, and a private key is reduced to its public half.
func parseJWKS(doc []byte) ([]jose.JSONWebKey, [32]byte, error) {
	digest := sha256.Sum256(doc)
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, digest, fmt.Errorf("jwks: %w", err)
	}
	var keys []jose.JSONWebKey
	for i, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			if errors.Is(err, jose.ErrUnsupportedKeyType) {
				continue
			}
			return nil, digest, fmt.Errorf("jwks: key %d: %w", i, err)
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if k = k.Public(); !k.Valid() {
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, digest, errors.New("jwks: no usable signing keys")
	}
	return keys, digest, nil
}
