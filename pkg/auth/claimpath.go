package auth

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// Claim names in Allow.Claims are paths into nested objects with "/" between
// the names, because claim names themselves often contain dots
// ("kubernetes.io/serviceaccount/name" is claims["kubernetes.io"]
// ["serviceaccount"]["name"]). Within a name, "~1" stands for "/" and "~0"
// for "~", as in JSON Pointer (RFC 6901), so a URL-named claim is still
// reachable: "https:~1~1example.com~1groups".

// validClaimPath reports why p is not a usable claim path.
func validClaimPath(p string) error {
	if p == "" {
		return errors.New("empty claim name")
	}
	for name := range strings.SplitSeq(p, "/") {
		if name == "" {
			return errors.New("empty name between slashes")
		}
		for i := 0; i < len(name); i++ {
			if name[i] == '~' && (i+1 == len(name) || (name[i+1] != '0' && name[i+1] != '1')) {
				return errors.New(`"~" must be followed by 0 or 1`)
			}
		}
	}
	return nil
}

// lookupClaim follows path through nested JSON objects.
func lookupClaim(claims map[string]any, path string) (any, bool) {
	var cur any = claims
	for name := range strings.SplitSeq(path, "/") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if strings.Contains(name, "~") {
			name = strings.NewReplacer("~1", "/", "~0", "~").Replace(name)
		}
		if cur, ok = obj[name]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// claimMatches compares a claim with want as text; an array matches if any
// of its elements does. Objects and null never match.
func claimMatches(v any, want string) bool {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if scalarMatches(e, want) {
				return true
			}
		}
		return false
	case []string:
		for _, e := range x {
			if e == want {
				return true
			}
		}
		return false
	}
	return scalarMatches(v, want)
}

func scalarMatches(v any, want string) bool {
	switch x := v.(type) {
	case string:
		return x == want
	case json.Number:
		return x.String() == want
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64) == want
	case bool:
		return strconv.FormatBool(x) == want
	}
	return false
}
