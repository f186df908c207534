package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// header is the part of the JOSE header needed to pick a key.
type header struct {
	alg string
	kid string
}

// parseHeader checks the token's shape and algorithm before any key is
// touched, so an HS256 token can never be "verified" with a public key used
// as an HMAC secret, and alg none never reaches a verifier.
func parseHeader(raw string, algs []string) (header, *Error) {
	// Compact serialization only: go-jose would also accept JSON
	// serialization and strip whitespace, and we want exactly one reading
	// of the token.
	for i := 0; i < len(raw); i++ {
		if !base64URLByte(raw[i]) && raw[i] != '.' {
			return header{}, refuse(ReasonMalformed, "unexpected byte %#x at offset %d", raw[i], i)
		}
	}
	if strings.Count(raw, ".") != 2 {
		return header{}, refuse(ReasonMalformed, "not a compact JWS (want 3 dot-separated parts)")
	}
	alg, err := rawAlg(raw[:strings.IndexByte(raw, '.')])
	if err != nil {
		return header{}, refuse(ReasonMalformed, "header: %w", err)
	}
	if !slices.Contains(algs, alg) {
		return header{}, refuse(ReasonUnsupportedAlg, "alg %q is not accepted", alg)
	}

	// go-jose's reading is the one go-oidc will act on; use it for the key
	// id and make sure it agrees with ours on the algorithm.
	jws, err := jose.ParseSignedCompact(raw, joseAlgs(algs))
	if err != nil {
		var unexpected *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &unexpected) {
			return header{}, refuse(ReasonUnsupportedAlg, "alg %q is not accepted", unexpected.Got)
		}
		return header{}, refuse(ReasonMalformed, "%w", err)
	}
	if len(jws.Signatures) != 1 {
		return header{}, refuse(ReasonMalformed, "%d signatures, want 1", len(jws.Signatures))
	}
	h := jws.Signatures[0].Header
	if h.Algorithm != alg {
		return header{}, refuse(ReasonMalformed, "ambiguous alg: %q or %q", alg, h.Algorithm)
	}
	return header{alg: alg, kid: h.KeyID}, nil
}

// rawAlg reads "alg" from a base64url header with exact (case-sensitive)
// member names.
func rawAlg(segment string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(segment)
	if err != nil {
		return "", err
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(b, &members); err != nil {
		return "", err
	}
	a, ok := members["alg"]
	if !ok {
		return "", errors.New("no alg")
	}
	var alg string
	if err := json.Unmarshal(a, &alg); err != nil {
		return "", errors.New("alg is not a string")
	}
	return alg, nil
}

func base64URLByte(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

func joseAlgs(algs []string) []jose.SignatureAlgorithm {
	out := make([]jose.SignatureAlgorithm, len(algs))
	for i, a := range algs {
		out[i] = jose.SignatureAlgorithm(a)
	}
	return out
}
