package redact

import (
	"bytes"
	"math/bits"
)

// Bounds that keep every decision local, so that a Stream decides exactly
// as Bytes does on the whole input.
const (
	maxGap       = 64      // whitespace between a key and its separator, or before a value
	maxRun       = 32      // backslashes counted before a quote
	maxLevel     = 5       // deepest JSON-in-JSON escape level recognised
	maxSpaces    = 16      // spaces after "Bearer" / "Basic"
	maxJWTHeader = 8 << 10 // JWT header segment: longer is not a JWT
	maxPEMLabel  = 96      // "RSA PRIVATE KEY" and the like
	// A value holding a rule holding a rule...: past this depth a match
	// is no longer extended to cover what starts inside it.
	maxExtendDepth = 16
)

var privateKeyWordBytes = []byte(privateKeyWord)

// awsPrefixes start AWS access key IDs.
var awsPrefixes = [...]string{"AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA", "ABIA", "ACCA"}

// quoteMasks[L] replaces a JSON value at escape level L: a JSON string
// holding Mask, its quotes escaped for that level.
var quoteMasks = func() (m [maxLevel + 1]string) {
	for l := range m {
		q := string(bytes.Repeat([]byte{'\\'}, 1<<l-1)) + `"`
		m[l] = q + Mask + q
	}
	return m
}()

type cstatus uint8

const (
	stNone  cstatus = iota // no match here
	stMatch                // a match: replace [vs, me) with repl
	stMore                 // cannot tell before more input arrives
)

// candidate is the outcome of a rule fired at one byte.
type candidate struct {
	st   cstatus
	hold int    // stMore: the first byte that must be held back
	vs   int    // first replaced byte; input in [hold, vs) is kept
	me   int    // stMatch: end of the replaced bytes
	repl string // replacement for [vs, me)
	// stMore in a value (inVal): val has consumed the input up to its end
	// and can be fed the rest.
	val   valScan
	inVal bool
}

type scanner struct {
	r       *Redactor
	b       []byte
	atStart bool // b[0] is the first byte of the input
	final   bool // the input ends at len(b)
	content bool // b is the content of a JSON string (JSON escapes)
	depth   int  // nested extend calls
	c       candidate
}

// scan applies the rules to b[from:]; b[:from] is context only (already
// emitted). Triggers are taken in order; a match's replacement is appended
// to out with the bytes before it. Unless final, scanning stops at the first
// candidate that needs more input, and a tail that could be the start of a
// secret is held too: h is where the undecided input starts. When matched
// is false, out is untouched and the output for b[from:h] is b[from:h].
// *pend receives the open candidate (st == stMore) if any.
func (r *Redactor) scan(b []byte, from int, atStart, final, content bool, out []byte, pend *candidate) (_ []byte, h int, matched bool) {
	s := scanner{r: r, b: b, atStart: atStart, final: final, content: content}
	pend.st = stNone
	last := from // end of the last match: rules may not start before it
	h = len(b)
	for i := from; ; {
		i = r.next(b, i)
		if i >= len(b) {
			if !final {
				h = r.tailHold(b, last)
			}
			break
		}
		switch s.check(i, last) {
		case stMatch:
			c := &s.c
			out = append(out, b[last:c.vs]...)
			out = append(out, c.repl...)
			matched = true
			last = c.me
			i = max(c.me, i+1)
			continue
		case stMore:
			*pend = s.c
			h = s.c.hold
		default:
			i++
			continue
		}
		break
	}
	if matched {
		out = append(out, b[last:h]...)
	}
	return out, h, matched
}

// next returns the index of the first byte at or after i at which a rule
// may fire, or len(b). Plain traffic spends its time here. For each 64
// bytes it builds a bit mask of the firing bytes with one table lookup per
// byte and no branch, then looks only at the set bits, applying cheap
// rejections for the common firing bytes (letters, JSON separators) that
// no rule would match. Each rejection only rules out what check would.
func (r *Redactor) next(b []byte, i int) int {
	t := &r.masks
	for ; i+64 <= len(b); i += 64 {
		w := b[i : i+64 : i+64]
		m := t.mask8(w[0:8]) | t.mask8(w[8:16])<<8 | t.mask8(w[16:24])<<16 | t.mask8(w[24:32])<<24 |
			t.mask8(w[32:40])<<32 | t.mask8(w[40:48])<<40 | t.mask8(w[48:56])<<48 | t.mask8(w[56:64])<<56
		for ; m != 0; m &= m - 1 {
			// reject, inlined by hand for the common cases.
			j := i + bits.TrailingZeros64(m)
			switch c := b[j]; c {
			case ':':
				if j > 2 {
					p := b[j-1]
					if !r.colonPrev[p] || p == '"' && (!r.quotePrev[b[j-2]] || b[j-2] != '\\' && !r.keyPairs.has(b[j-3], b[j-2])) {
						continue
					}
				}
			case 'b':
				if j+2 < len(b) {
					if w := uint16(b[j+1])<<8 | uint16(b[j+2]) | 0x2020; w != 'e'<<8|'a' && w != 'a'<<8|'s' {
						continue
					}
				}
			case '=':
				if j > 1 {
					if p := b[j-1]; !r.eqPrev[p] || alnum[p] && !r.keyPairs.has(b[j-2], p) {
						continue
					}
				}
			case 'A':
				if j+3 < len(b) && b[j+3] != 'A' {
					continue
				}
			default:
				if r.reject(b, j) {
					continue
				}
			}
			return j
		}
	}
	for ; i < len(b); i++ {
		if r.tab[b[i]] != 0 && !r.reject(b, i) {
			return i
		}
	}
	return len(b)
}

// maskTabs[k][c] is 1<<k if c fires a rule.
type maskTabs [8][256]uint8

// mask8 returns the mask of firing bytes in w[:8].
func (t *maskTabs) mask8(w []byte) uint64 {
	w = w[:8:8]
	return uint64(t[0][w[0]] | t[1][w[1]] | t[2][w[2]] | t[3][w[3]] | t[4][w[4]] | t[5][w[5]] | t[6][w[6]] | t[7][w[7]])
}

// reject reports whether the firing byte at b[i] certainly starts no match.
func (r *Redactor) reject(b []byte, i int) bool {
	switch c := b[i]; c {
	case ':':
		if i > 2 {
			p := b[i-1]
			return !r.colonPrev[p] || p == '"' && (!r.quotePrev[b[i-2]] || b[i-2] != '\\' && !r.keyPairs.has(b[i-3], b[i-2]))
		}
	case 'b', 'B':
		// "bearer", "basic"; and "-----BEGIN".
		if i+2 < len(b) {
			w := uint16(b[i+1])<<8 | uint16(b[i+2]) | 0x2020
			return w != 'e'<<8|'a' && w != 'a'<<8|'s' && (c != 'B' || i < 1 || b[i-1] != '-')
		}
	case '=':
		if i > 1 {
			p := b[i-1]
			return !r.eqPrev[p] || alnum[p] && !r.keyPairs.has(b[i-2], p)
		}
	case 'A':
		return i+3 < len(b) && b[i+3] != 'A' // every AWS prefix ends in 'A'
	case 'J':
		return i < 2 || b[i-1] != 'y' || b[i-2] != 'e'
	}
	return false
}

// tailHold returns where a possible secret starts in the tail of b whose
// firing byte has not arrived yet ("e"/"ey" of a JWT, the dashes of a PEM
// header); rules that fire at their first byte hold themselves.
func (r *Redactor) tailHold(b []byte, last int) int {
	n := len(b)
	h := n
	if r.pat&patJWT != 0 {
		switch {
		case n-1 >= last && b[n-1] == 'e':
			h = n - 1
		case n-2 >= last && b[n-2] == 'e' && b[n-1] == 'y':
			h = n - 2
		}
	}
	if r.pat&patPrivateKey != 0 {
		d := 0
		for d < 5 && n-1-d >= last && b[n-1-d] == '-' {
			d++
		}
		h = min(h, n-d)
	}
	return h
}

// more reports that the rule needs input past the end, holding from hold;
// at the end of the input it is no match.
func (s *scanner) more(hold int) cstatus {
	if s.final {
		return stNone
	}
	s.c = candidate{st: stMore, hold: hold}
	return stMore
}

// value runs v over the input from from for the rule fired at t: the value
// replaced by repl starts at vs, and the rule's bytes from hold are kept.
func (s *scanner) value(t, hold, vs, from int, repl string, v valScan) cstatus {
	end, st := v.feed(s.b[from:])
	switch st {
	case vDone:
		if v.kind == vkString || v.kind == vkCompound || s.depth >= maxExtendDepth {
			// JSON strings and containers end where their syntax says:
			// nothing inside runs past them.
			s.c = candidate{st: stMatch, vs: vs, me: from + end, repl: repl}
			return stMatch
		}
		return s.extend(t, hold, vs, from+end, repl)
	case vFail:
		return stNone
	}
	if s.final {
		if v.finish() {
			s.c = candidate{st: stMatch, vs: vs, me: len(s.b), repl: repl}
			return stMatch
		}
		return stNone
	}
	s.c = candidate{st: stMore, hold: hold, vs: vs, repl: repl, val: v, inVal: true}
	return stMore
}

// extend completes the match of [vs, me): a rule firing inside it may run
// past its end (a PEM block or "Bearer x" after "token=", "Cookie: x"
// after a bare JSON value, a JWT after an AWS secret's characters), and its
// tail must not be left in the clear, so the match grows to cover it.
func (s *scanner) extend(fired, hold, vs, me int, repl string) cstatus {
	s.depth++
	defer func() { s.depth-- }()
	for t := max(vs, fired+1); ; {
		t = s.r.next(s.b[:me], t)
		if t >= me {
			break
		}
		switch s.check(t, vs) {
		case stMatch:
			me = max(me, s.c.me)
			t = max(t+1, s.c.me)
			continue
		case stMore:
			// Open past the end of the input: the whole match waits
			// (and, if it outgrows MaxHold, masks until the inner
			// pattern ends).
			s.c.hold, s.c.vs, s.c.repl = hold, vs, repl
			return stMore
		}
		t++
	}
	s.c = candidate{st: stMatch, vs: vs, me: me, repl: repl}
	return stMatch
}

func (s *scanner) check(t, last int) cstatus {
	switch s.b[t] {
	case 'b':
		return s.bearerBasic(t)
	case 'B':
		if s.r.pat&patPrivateKey != 0 && t-5 >= last && string(s.b[t-5:t]) == "-----" {
			return s.privateKey(t)
		}
		return s.bearerBasic(t)
	case 'J':
		return s.jwt(t, last)
	case 'A':
		return s.awsAccessKey(t)
	case ':':
		return s.colon(t)
	case '=':
		return s.equals(t)
	}
	return stNone
}

// boundary reports whether no letter or digit precedes b[t].
func (s *scanner) boundary(t int) bool { return t == 0 || !alnum[s.b[t-1]] }

// bearerBasic: "Bearer <token>" and "Basic <base64>", case-insensitive.
func (s *scanner) bearerBasic(t int) cstatus {
	b, pat := s.b, s.r.pat
	if pat&(patBearer|patBasic) == 0 || !s.boundary(t) {
		return stNone
	}
	if t+1 == len(b) {
		return s.more(t)
	}
	var word string
	var v valScan
	switch b[t+1] | 0x20 {
	case 'e':
		if pat&patBearer == 0 {
			return stNone
		}
		word, v = "bearer", valScan{kind: vkRun, set: bearerSet, min: 1, pad: '='}
	case 'a':
		if pat&patBasic == 0 {
			return stNone
		}
		word, v = "basic", valScan{kind: vkRun, set: b64Set, min: 8, pad: '='}
	default:
		return stNone
	}
	j := t + 2
	for k := 2; k < len(word); k++ {
		if j == len(b) {
			return s.more(t)
		}
		if b[j]|0x20 != word[k] {
			return stNone
		}
		j++
	}
	sp := j
	for j < len(b) && (b[j] == ' ' || b[j] == '\t') {
		if j-sp == maxSpaces {
			return stNone
		}
		j++
	}
	if j == len(b) {
		return s.more(t)
	}
	if j == sp {
		return stNone
	}
	return s.value(t, t, j, j, Mask, v)
}

// jwt: eyJ<b64url>+.eyJ<b64url>+.<b64url>*, fired at the first 'J'.
func (s *scanner) jwt(t, last int) cstatus {
	b := s.b
	if s.r.pat&patJWT == 0 || t-2 < last || b[t-1] != 'y' || b[t-2] != 'e' {
		return stNone
	}
	start := t - 2
	j := t + 1
	for j < len(b) && b64urlSet[b[j]] {
		if j-t > maxJWTHeader {
			return stNone
		}
		j++
	}
	if j == len(b) {
		return s.more(start)
	}
	if b[j] != '.' || j == t+1 {
		return stNone
	}
	j++
	for k := 0; k < 3; k++ {
		if j+k == len(b) {
			return s.more(start)
		}
		if b[j+k] != "eyJ"[k] {
			return stNone
		}
	}
	return s.value(t, start, start, j+3, Mask, valScan{kind: vkJWT})
}

// awsAccessKey: a known 4-letter prefix and 16 [A-Z0-9], not inside a word.
func (s *scanner) awsAccessKey(t int) cstatus {
	b := s.b
	if s.r.pat&patAWSAccess == 0 || !s.boundary(t) {
		return stNone
	}
	avail := min(len(b)-t, 4)
	if avail == 4 && b[t+3] != 'A' { // every prefix ends in 'A'
		return stNone
	}
	ok := false
	for _, p := range awsPrefixes {
		if string(b[t:t+avail]) == p[:avail] {
			ok = true
			break
		}
	}
	if !ok {
		return stNone
	}
	for j := t + avail; j < t+20; j++ {
		if j == len(b) {
			return s.more(t)
		}
		if !awsIDSet[b[j]] {
			return stNone
		}
	}
	if t+20 == len(b) {
		if !s.final {
			return s.more(t)
		}
	} else if alnum[b[t+20]] {
		return stNone
	}
	s.c = candidate{st: stMatch, vs: t, me: t + 20, repl: Mask}
	return stMatch
}

// privateKey: "-----BEGIN <label holding PRIVATE KEY>-----" through the
// matching END line, fired at the 'B'. The whole block is masked.
func (s *scanner) privateKey(t int) cstatus {
	b := s.b
	start := t - 5
	for k := 0; k < 5; k++ {
		if t+k == len(b) {
			return s.more(start)
		}
		if b[t+k] != "BEGIN"[k] {
			return stNone
		}
	}
	j := t + 5
	ls := j
	for j < len(b) && upperSpace[b[j]] {
		if j-ls == maxPEMLabel {
			return stNone
		}
		j++
	}
	if j == len(b) {
		return s.more(start)
	}
	if j == ls || b[ls] != ' ' || !bytes.Contains(b[ls:j], privateKeyWordBytes) {
		return stNone
	}
	for k := 0; k < 5; k++ {
		if j+k == len(b) {
			return s.more(start)
		}
		if b[j+k] != '-' {
			return stNone
		}
	}
	return s.value(t, start, start, j+5, Mask, valScan{kind: vkPrivKey})
}

// colon: a listed JSON key, a listed header line, or an AWS secret key
// name before the ':'.
func (s *scanner) colon(t int) cstatus {
	r := s.r
	if r.fields.n > 0 {
		if lv, ok := s.jsonKeyBefore(t); ok {
			if st := s.jsonValue(t, lv); st != stNone {
				return st
			}
		}
	}
	if r.headers.n > 0 && s.headerNameBefore(t) {
		if st := s.headerValue(t); st != stNone {
			return st
		}
	}
	if r.pat&patAWSSecret != 0 && s.awsSecretKeyBefore(t) {
		return s.awsSecretValue(t)
	}
	return stNone
}

// equals: a listed form/query field or an AWS secret key name before '='.
func (s *scanner) equals(t int) cstatus {
	r := s.r
	if r.fields.n > 0 && s.formNameBefore(t) {
		if t+1 == len(s.b) {
			return s.more(t)
		}
		v := valScan{kind: vkRun, set: formValSet, min: 1, esc: s.content}
		if st := s.value(t, t, t+1, t+1, Mask, v); st != stNone {
			return st
		}
	}
	if r.pat&patAWSSecret != 0 && s.awsSecretKeyBefore(t) {
		return s.awsSecretValue(t)
	}
	return stNone
}

// runBefore counts the backslashes just before b[i], up to maxRun.
func runBefore(b []byte, i int) int {
	r := 0
	for r < maxRun && i-r > 0 && b[i-r-1] == '\\' {
		r++
	}
	return r
}

// jsonKeyBefore reports whether a listed key, as a JSON string, ends just
// before the ':' at t (whitespace allowed), and its escape level: 0 for
// "key", 1 for \"key\" (JSON embedded in a JSON string), and so on.
func (s *scanner) jsonKeyBefore(t int) (int, bool) {
	b, f := s.b, &s.r.fields
	k := t
	for k > 0 && wsSet[b[k-1]] {
		if t-k == maxGap {
			return 0, false
		}
		k--
	}
	if k == 0 || b[k-1] != '"' {
		return 0, false
	}
	q := k - 1
	r := runBefore(b, q)
	lv := level(r)
	if lv > maxLevel || r != 1<<lv-1 { // the key would end in a backslash
		return 0, false
	}
	ne := q - r
	if ne == 0 || !f.last[b[ne-1]] {
		return 0, false
	}
	for _, ln := range f.lens {
		oq := ne - ln - 1
		if oq < r {
			break
		}
		if b[oq] != '"' || runBefore(b, oq) != r {
			continue
		}
		if f.has(b[oq+1 : ne]) {
			return lv, true
		}
	}
	return 0, false
}

// jsonValue matches the JSON value after the ':' at t, at escape level lv.
func (s *scanner) jsonValue(t, lv int) cstatus {
	b := s.b
	j := t + 1
	for j < len(b) && wsSet[b[j]] {
		if j-t-1 == maxGap {
			return stNone
		}
		j++
	}
	if j == len(b) {
		return s.more(t)
	}
	repl := quoteMasks[lv]
	switch c := b[j]; {
	case c == '"' && lv == 0:
		return s.value(t, t, j, j+1, repl, valScan{kind: vkString})
	case c == '\\' && lv > 0:
		k := j
		for k < len(b) && b[k] == '\\' {
			if k-j == maxRun {
				return stNone
			}
			k++
		}
		if k == len(b) {
			return s.more(t)
		}
		if b[k] != '"' || k-j != 1<<lv-1 {
			return stNone
		}
		return s.value(t, t, j, k+1, repl, valScan{kind: vkString, level: lv})
	case c == '{' || c == '[':
		return s.value(t, t, j, j, repl, valScan{kind: vkCompound, level: lv})
	case bareSet[c]:
		return s.value(t, t, j, j, repl, valScan{kind: vkRun, set: bareSet, min: 1})
	}
	return stNone
}

// headerNameBefore reports whether a listed header name starts a line and
// ends at the ':' at t.
func (s *scanner) headerNameBefore(t int) bool {
	b, h := s.b, &s.r.headers
	if t == 0 || !h.last[b[t-1]] {
		return false
	}
	ns := t
	for ns > 0 && tchar[b[ns-1]] {
		if t-ns == h.max {
			return false
		}
		ns--
	}
	switch {
	case ns == 0:
		if !s.atStart {
			return false
		}
	case b[ns-1] == '\n':
	case s.content && b[ns] == 'n' && runBefore(b, ns)%2 == 1:
		ns++ // after an escaped newline inside a JSON string
	default:
		return false
	}
	return h.has(b[ns:t])
}

// headerValue masks the rest of the line after the ':' at t.
func (s *scanner) headerValue(t int) cstatus {
	b := s.b
	j := t + 1
	for j < len(b) && (b[j] == ' ' || b[j] == '\t') {
		if j-t-1 == maxGap {
			return stNone
		}
		j++
	}
	if j == len(b) {
		return s.more(t)
	}
	return s.value(t, t, j, j, Mask, valScan{kind: vkRun, set: headerValSet, min: 1, esc: s.content})
}

// formNameBefore reports whether a listed field name ends at the '=' at t
// and starts the input or follows a separator.
func (s *scanner) formNameBefore(t int) bool {
	b, f := s.b, &s.r.fields
	if t == 0 || !f.last[b[t-1]] {
		return false
	}
	for _, ln := range f.lens {
		ns := t - ln
		if ns < 0 {
			break
		}
		if ns == 0 {
			if !s.atStart {
				continue
			}
		} else if !formBoundary[b[ns-1]] {
			continue
		}
		if f.has(b[ns:t]) {
			return true
		}
	}
	return false
}

// awsSecretKeyBefore reports whether an AWS secret key name
// (secret[_-]?access[_-]?key, any case, so also aws_secret_access_key and
// SecretAccessKey) ends before the separator at t, allowing spaces and a
// quote (possibly escaped) in between.
func (s *scanner) awsSecretKeyBefore(t int) bool {
	b := s.b
	k := t
	for k > 0 && (b[k-1] == ' ' || b[k-1] == '\t') {
		if t-k == maxGap {
			return false
		}
		k--
	}
	if k > 0 && (b[k-1] == '"' || b[k-1] == '\'') {
		k--
		k -= runBefore(b, k)
	}
	if k == 0 || b[k-1]|0x20 != 'y' {
		return false
	}
	var ok bool
	if k, ok = suffixFold(b, k, "key"); !ok {
		return false
	}
	if k > 0 && (b[k-1] == '_' || b[k-1] == '-') {
		k--
	}
	if k, ok = suffixFold(b, k, "access"); !ok {
		return false
	}
	if k > 0 && (b[k-1] == '_' || b[k-1] == '-') {
		k--
	}
	_, ok = suffixFold(b, k, "secret")
	return ok
}

// suffixFold reports whether b[:k] ends with word (lower case), folding
// ASCII case, and where the match starts.
func suffixFold(b []byte, k int, word string) (int, bool) {
	if k < len(word) || !equalFold(b[k-len(word):k], word) {
		return k, false
	}
	return k - len(word), true
}

// awsSecretValue masks the 40+ character secret after the separator at t.
func (s *scanner) awsSecretValue(t int) cstatus {
	b := s.b
	j := t + 1
	for j < len(b) && (b[j] == ' ' || b[j] == '\t') {
		if j-t-1 == maxGap {
			return stNone
		}
		j++
	}
	q := j
	for j < len(b) && b[j] == '\\' && j-q < maxRun {
		j++
	}
	if j < len(b) && (b[j] == '"' || b[j] == '\'') {
		j++
	} else if j > q { // backslashes but no quote
		if j == len(b) {
			return s.more(t)
		}
		return stNone
	}
	if j == len(b) {
		return s.more(t)
	}
	return s.value(t, t, j, j, Mask, valScan{kind: vkRun, set: awsSecretSet, min: 40})
}
