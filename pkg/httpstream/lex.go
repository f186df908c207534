package httpstream

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
)

// tchar is RFC 9110 token characters.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// ctl is the bytes not allowed in field values: controls other than HTAB.
var ctl = func() (t [256]bool) {
	for c := 0; c < ' '; c++ {
		t[c] = c != '\t'
	}
	t[0x7f] = true
	return t
}()

// invalidValueByte returns the index of the first ctl byte of v, or -1.
// Values are most of a head: eight bytes are checked at a time.
func invalidValueByte(v []byte) int {
	const lsb, msb = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(v); i += 8 {
		x := binary.LittleEndian.Uint64(v[i:])
		below := (x - 0x20*lsb) &^ x & msb // a byte < 0x20 (exact as a whole for n <= 0x80)
		d := x ^ 0x7f*lsb
		del := (d - lsb) &^ d & msb // a byte == 0x7f
		if below|del != 0 {
			break // HTAB, or an error: find it byte by byte
		}
	}
	for ; i < len(v); i++ {
		if ctl[v[i]] {
			return i
		}
	}
	return -1
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// parseUint parses 1*DIGIT, refusing signs, spaces, lists and overflow.
func parseUint(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// equalFold compares ASCII case-insensitively (no Unicode folding: header
// names are ASCII tokens, and K must not match the Kelvin sign).
func equalFold[T string | []byte](b T, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x != y && lower(x) != lower(y) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// forEachElement calls fn with each non-empty element of a comma-separated
// list, whitespace trimmed.
func forEachElement(v []byte, fn func([]byte)) {
	for len(v) > 0 {
		el := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			el, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		el = bytes.Trim(el, " \t")
		if len(el) > 0 {
			fn(el)
		}
	}
}

// quote quotes b for an error message, cut to a readable length.
func quote(b []byte) string {
	const max = 48
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}
