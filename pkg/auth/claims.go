package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// Claims are the verified claims of a token. Values returned by Verify may
// be shared with the cache: treat them as read-only.
type Claims struct {
	Issuer    string
	Subject   string
	Audience  []string
	Expiry    time.Time
	NotBefore time.Time // zero if the token has no nbf
	IssuedAt  time.Time // zero if the token has no iat
	// Extra holds every claim, the registered ones included. Numbers are
	// json.Number so large integers keep their exact text.
	Extra map[string]any
}

// maxNumericDate is the end of year 9999; later dates are nonsense.
const maxNumericDate = 253402300799

// parseClaims reads a verified JWT payload.
func parseClaims(payload []byte) (*Claims, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var all map[string]any
	if err := dec.Decode(&all); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	if all == nil {
		return nil, errors.New("claims: not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("claims: data after the JSON object")
	}

	c := &Claims{Extra: all}
	var err error
	if c.Issuer, err = stringClaim(all, "iss"); err != nil {
		return nil, err
	}
	if c.Subject, err = stringClaim(all, "sub"); err != nil {
		return nil, err
	}
	if c.Audience, err = audienceClaim(all); err != nil {
		return nil, err
	}
	if c.Expiry, err = timeClaim(all, "exp"); err != nil {
		return nil, err
	}
	if c.NotBefore, err = timeClaim(all, "nbf"); err != nil {
		return nil, err
	}
	if c.IssuedAt, err = timeClaim(all, "iat"); err != nil {
		return nil, err
	}
	return c, nil
}

func stringClaim(all map[string]any, name string) (string, error) {
	v, ok := all[name]
	if !ok {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("claim %s is not a string", name)
	}
	return s, nil
}

// audienceClaim accepts aud as one string or an array of strings (RFC 7519
// 4.1.3).
func audienceClaim(all map[string]any) ([]string, error) {
	switch v := all["aud"].(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, errors.New("claim aud has a non-string element")
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, errors.New("claim aud is neither a string nor an array")
}

// timeClaim reads a NumericDate (seconds since the epoch, maybe fractional).
func timeClaim(all map[string]any, name string) (time.Time, error) {
	v, ok := all[name]
	if !ok {
		return time.Time{}, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, fmt.Errorf("claim %s is not a number", name)
	}
	f, err := n.Float64()
	if err != nil || f < 0 || f > maxNumericDate {
		return time.Time{}, fmt.Errorf("claim %s: %s is not a date", name, n)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}
