// Package redact removes secrets from bytes before they are recorded.
//
// A Redactor applies a Policy: listed HTTP headers are masked whole, the
// values of listed JSON keys and form/query fields are masked, and built-in
// patterns (bearer and basic credentials, JWTs, AWS keys, PEM private keys)
// are masked wherever they appear. A Stream applies the same rules to data
// that arrives in pieces: it holds back the start of any secret that is not
// yet complete, so no byte of a secret is ever emitted.
//
// Rules applied by Bytes and Stream (JSON applies them inside strings):
//
//   - "key": value, for a listed key: the value (string, number, literal,
//     object or array) becomes "[REDACTED]". JSON embedded in JSON strings
//     (\"key\":\"value\") is recognised too, and masked with quotes
//     escaped to match.
//   - name=value, for a listed field at the start of the input or after one
//     of & ? ; # " ' or whitespace: the value, up to & ; a quote or
//     whitespace, becomes [REDACTED].
//   - Name: value, for a listed header at the start of a line (raw HTTP/1
//     heads): the rest of the line becomes [REDACTED].
//   - The patterns named by PatternNames.
//
// To keep every decision local (a Stream decides exactly as Bytes does on
// the whole input), rules look at most 64 bytes of whitespace around a
// separator and 32 backslashes before a quote, and a JWT header longer than
// 8 KiB is not a JWT.
//
// Names are compared ASCII case-insensitively. Every rule errs on the side
// of masking too much: a recording must never contain a secret.
package redact

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// Mask replaces every redacted value.
const Mask = "[REDACTED]"

// MaxHold is the most input a Stream holds back for one open candidate. A
// candidate still open past it is masked up to its end (over-redaction,
// never leakage) instead of being held further.
const MaxHold = 64 << 10

// Built-in pattern names.
const (
	PatternBearer       = "bearer"
	PatternJWT          = "jwt"
	PatternBasic        = "basic"
	PatternAWSAccessKey = "aws-access-key"
	PatternAWSSecretKey = "aws-secret-key"
	PatternPrivateKey   = "private-key"
)

// ErrUnknownPattern is wrapped by New for a pattern name it does not know.
var ErrUnknownPattern = errors.New("unknown pattern")

// ErrInvalidName is wrapped by New for an empty or unmatchable header or
// field name.
var ErrInvalidName = errors.New("invalid name")

// maxNameLen bounds header and field names: a Stream's look-back context
// grows with the longest one.
const maxNameLen = 256

type patBit uint8

const (
	patBearer patBit = 1 << iota
	patJWT
	patBasic
	patAWSAccess
	patAWSSecret
	patPrivateKey
)

var patterns = []struct {
	name string
	bit  patBit
}{
	{PatternBearer, patBearer},
	{PatternJWT, patJWT},
	{PatternBasic, patBasic},
	{PatternAWSAccessKey, patAWSAccess},
	{PatternAWSSecretKey, patAWSSecret},
	{PatternPrivateKey, patPrivateKey},
}

// Policy says what to redact. Names are matched ASCII case-insensitively.
type Policy struct {
	// Headers are HTTP header names whose whole value is replaced by Mask,
	// by Header and, for "Name: value" lines at a line start, by Bytes and
	// Stream (raw HTTP/1 heads).
	Headers []string
	// JSONFields are JSON object keys (at any depth) and form/query field
	// names whose value is replaced by Mask.
	JSONFields []string
	// Patterns are names of built-in patterns (see PatternNames).
	Patterns []string
}

// DefaultHeaders returns the headers masked by default.
func DefaultHeaders() []string {
	return []string{"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key"}
}

// DefaultJSONFields returns the JSON keys and form fields masked by default.
func DefaultJSONFields() []string {
	return []string{"password", "secret", "token", "api_key", "apiKey", "access_token", "refresh_token", "client_secret"}
}

// DefaultPatterns returns the patterns applied by default: all of them.
func DefaultPatterns() []string { return PatternNames() }

// PatternNames returns every known built-in pattern name.
func PatternNames() []string {
	names := make([]string, len(patterns))
	for i, p := range patterns {
		names[i] = p.name
	}
	return names
}

// DefaultPolicy returns the default headers, fields and patterns.
func DefaultPolicy() Policy {
	return Policy{Headers: DefaultHeaders(), JSONFields: DefaultJSONFields(), Patterns: DefaultPatterns()}
}

// Redactor applies a Policy. It is immutable and safe for concurrent use.
type Redactor struct {
	headers nameSet
	fields  nameSet
	pat     patBit
	// tab marks the bytes at which a rule can fire: the hot loop looks
	// for nothing else.
	tab   [256]uint8
	masks maskTabs // tab as bit masks, for next
	// colonPrev, eqPrev: bytes that may precede a ':' or '=' that fires a
	// rule; quotePrev: bytes that may precede a key's closing quote.
	colonPrev, eqPrev, quotePrev [256]bool
	// keyPairs: the last two bytes (folded) of JSON keys and form names
	// that fire a rule.
	keyPairs pairSet
	// ctx is how far back any rule looks from the byte that fires it; a
	// Stream keeps that much already emitted input as context.
	ctx int
}

// New compiles a Policy. It fails on an unknown pattern name and on an
// empty header or field name (or one that could never match).
func New(p Policy) (*Redactor, error) {
	r := &Redactor{}
	for i, h := range p.Headers {
		if err := checkName(h, tchar); err != nil {
			return nil, fmt.Errorf("Policy.Headers[%d] %q: %w", i, h, err)
		}
	}
	for i, f := range p.JSONFields {
		if err := checkName(f, fieldNameSet); err != nil {
			return nil, fmt.Errorf("Policy.JSONFields[%d] %q: %w", i, f, err)
		}
	}
	for _, name := range p.Patterns {
		bit := patBit(0)
		for _, q := range patterns {
			if strings.EqualFold(name, q.name) {
				bit = q.bit
			}
		}
		if bit == 0 {
			return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownPattern, name, strings.Join(PatternNames(), ", "))
		}
		r.pat |= bit
	}
	r.headers = newNameSet(p.Headers)
	r.fields = newNameSet(p.JSONFields)

	if r.pat&(patBearer|patBasic) != 0 {
		r.tab['b'], r.tab['B'] = 1, 1
	}
	if r.pat&patPrivateKey != 0 {
		r.tab['B'] = 1
	}
	if r.pat&patJWT != 0 {
		r.tab['J'] = 1
	}
	if r.pat&patAWSAccess != 0 {
		r.tab['A'] = 1
	}
	if r.fields.n > 0 || r.headers.n > 0 || r.pat&patAWSSecret != 0 {
		r.tab[':'] = 1
	}
	if r.fields.n > 0 || r.pat&patAWSSecret != 0 {
		r.tab['='] = 1
	}
	for c, v := range r.tab {
		for k := range r.masks {
			r.masks[k][c] = v << k
		}
	}
	// Bytes that may stand just before a ':' or '=' that fires a rule, or
	// before the closing quote of a key: the scan loop's cheap rejections.
	if r.fields.n > 0 {
		r.colonPrev['"'] = true
		for c := range 256 {
			r.colonPrev[c] = r.colonPrev[c] || wsSet[c]
			r.quotePrev[c] = r.fields.last[c]
			r.eqPrev[c] = r.fields.last[c]
		}
		r.quotePrev['\\'] = true
	}
	for c := range 256 {
		r.colonPrev[c] = r.colonPrev[c] || r.headers.last[c]
	}
	if r.pat&patAWSSecret != 0 {
		for _, c := range []byte("yY\"' \t") {
			r.colonPrev[c], r.quotePrev[c], r.eqPrev[c] = true, true, true
		}
		r.quotePrev['\\'] = true
		r.keyPairs.add('e', 'y')
	}
	for _, f := range p.JSONFields {
		if len(f) == 1 {
			for c := range 256 {
				r.keyPairs.add(byte(c), f[0])
			}
		} else {
			r.keyPairs.add(f[len(f)-2], f[len(f)-1])
		}
	}
	// The longest look-back: JSON key (gap, quote, escape runs, name) or
	// the AWS secret key name; with a generous margin.
	r.ctx = max(r.fields.max, r.headers.max, len("aws_secret_access_key")) + 2*maxRun + maxGap + 64
	return r, nil
}

func checkName(name string, allowed *[256]bool) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidName, maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		if !allowed[name[i]] {
			return fmt.Errorf("%w: byte %q can never match", ErrInvalidName, name[i])
		}
	}
	return nil
}

// HeaderListed reports whether the header's whole value is masked.
func (r *Redactor) HeaderListed(name string) bool { return r.headers.hasString(name) }

// Header returns the value to record for a header: Mask if the header is
// listed, else the value with patterns and field rules applied.
func (r *Redactor) Header(name, value string) string {
	if r.HeaderListed(name) {
		return Mask
	}
	if r.nextString(value) == len(value) {
		return value
	}
	// Bytes only reads its input and returns it unchanged when nothing
	// matched, so the string's bytes can be scanned without a copy.
	in := unsafe.Slice(unsafe.StringData(value), len(value))
	out := r.Bytes(in)
	if len(out) == len(in) && len(out) > 0 && &out[0] == &in[0] {
		return value
	}
	return string(out)
}

func (r *Redactor) nextString(s string) int {
	for i := 0; i < len(s); i++ {
		if r.tab[s[i]] != 0 {
			return i
		}
	}
	return len(s)
}

// Bytes redacts a complete buffer: patterns, JSON key, form field and header
// line rules. It returns p itself, without allocating, when nothing matched.
func (r *Redactor) Bytes(p []byte) []byte {
	var c candidate
	out, _, matched := r.scan(p, 0, true, true, false, nil, &c)
	if !matched {
		return p
	}
	return out
}

// pairSet is a set of byte pairs, ASCII case-insensitive.
type pairSet [256 * 256 / 64]uint64

func (p *pairSet) add(a, b byte) {
	for _, a := range [2]byte{toLower(a), upper(a)} {
		for _, b := range [2]byte{toLower(b), upper(b)} {
			i := int(a)<<8 | int(b)
			p[i>>6] |= 1 << (i & 63)
		}
	}
}

func (p *pairSet) has(a, b byte) bool {
	i := int(a)<<8 | int(b)
	return p[i>>6]&(1<<(i&63)) != 0
}

// nameSet is a set of ASCII case-insensitive names.
type nameSet struct {
	byLen [][]string // lower-cased names by length
	lens  []int      // distinct lengths, ascending
	last  [256]bool  // last bytes of the names, both cases
	max   int
	n     int
}

func newNameSet(names []string) nameSet {
	var s nameSet
	for _, name := range names {
		l := lowerASCII(name)
		if s.hasString(l) {
			continue
		}
		if len(l) >= len(s.byLen) {
			s.byLen = append(s.byLen, make([][]string, len(l)+1-len(s.byLen))...)
		}
		if len(s.byLen[len(l)]) == 0 {
			s.lens = append(s.lens, len(l))
		}
		s.byLen[len(l)] = append(s.byLen[len(l)], l)
		c := l[len(l)-1]
		s.last[c] = true
		s.last[upper(c)] = true
		s.max = max(s.max, len(l))
		s.n++
	}
	for i := 1; i < len(s.lens); i++ { // insertion sort: few lengths
		for j := i; j > 0 && s.lens[j] < s.lens[j-1]; j-- {
			s.lens[j], s.lens[j-1] = s.lens[j-1], s.lens[j]
		}
	}
	return s
}

func (s *nameSet) has(b []byte) bool {
	if len(b) >= len(s.byLen) {
		return false
	}
	for _, name := range s.byLen[len(b)] {
		if equalFold(b, name) {
			return true
		}
	}
	return false
}

func (s *nameSet) hasString(b string) bool {
	if len(b) >= len(s.byLen) {
		return false
	}
	for _, name := range s.byLen[len(b)] {
		if equalFoldString(b, name) {
			return true
		}
	}
	return false
}

// equalFold compares b with a lower-case name, folding ASCII only.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if toLower(b[i]) != lower[i] {
			return false
		}
	}
	return true
}

func equalFoldString(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if toLower(s[i]) != lower[i] {
			return false
		}
	}
	return true
}

func toLower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = toLower(b[j])
			}
			return string(b)
		}
	}
	return s
}
