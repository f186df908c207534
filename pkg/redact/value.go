package redact

import (
	"bytes"
	"math/bits"
)

// A valScan finds where a secret value ends. It is resumable: feeding a
// value in pieces gives the same answer as feeding it whole, which lets a
// Stream carry an open value across writes (and keep masking one that
// outgrew MaxHold) without rescanning it.
type valScan struct {
	kind  vkind
	set   *[256]bool // vkRun: the value's bytes
	min   int        // vkRun: fewer bytes than this is no match
	pad   byte       // vkRun: optional padding run after the value ('=')
	esc   bool       // vkRun: decode JSON escapes (inside a JSON string)
	level int        // vkString, vkCompound: JSON escape level
	phase uint8
	count int
	depth int
	inStr bool
	run   int // backslashes just before the current byte
	k     int // vkPrivKey: progress through "END" or "PRIVATE KEY"
	found bool
}

type vkind uint8

const (
	vkRun      vkind = iota + 1 // a run of bytes from a class
	vkString                    // a JSON string, opening quote consumed
	vkCompound                  // a JSON object or array, from its bracket
	vkJWT                       // JWT payload (after "eyJ") and signature
	vkPrivKey                   // PEM body through "-----END ...PRIVATE KEY-----"
)

type vstatus uint8

const (
	vMore vstatus = iota // consumed everything; the value goes on
	vDone                // the value ends at the returned offset
	vFail                // not a value after all
)

// feed consumes b and reports where the value ends, relative to b. For a
// JSON value cut short by an outer string's end, the offset can be negative:
// the escape run before that quote may lie in an earlier piece.
func (v *valScan) feed(b []byte) (int, vstatus) {
	switch v.kind {
	case vkRun:
		return v.feedRun(b)
	case vkString:
		return v.feedString(b)
	case vkCompound:
		return v.feedCompound(b)
	case vkJWT:
		return v.feedJWT(b)
	case vkPrivKey:
		return v.feedPrivKey(b)
	}
	return 0, vFail
}

// finish reports whether a value still open at the end of the input is a
// match: the end of input terminates it.
func (v *valScan) finish() bool {
	switch v.kind {
	case vkRun:
		return v.phase == 1 || v.count >= v.min
	case vkJWT:
		return v.phase == 1
	}
	// An unterminated string, object or key block: mask to the end.
	return true
}

func (v *valScan) feedRun(b []byte) (int, vstatus) {
	i := 0
	if v.phase == 0 {
		set := v.set
		for i < len(b) {
			c := b[i]
			if c == '\\' && v.esc {
				d, w := decodeEscape(b[i:])
				if w == 0 || !set[d] {
					break
				}
				i += w
				v.count++
				continue
			}
			if !set[c] {
				break
			}
			i++
			v.count++
		}
		if i == len(b) {
			return i, vMore
		}
		if v.count < v.min {
			return i, vFail
		}
		if v.pad == 0 {
			return i, vDone
		}
		v.phase = 1
	}
	for i < len(b) && b[i] == v.pad {
		i++
	}
	if i == len(b) {
		return i, vMore
	}
	return i, vDone
}

// decodeEscape decodes the JSON escape at b[0] ('\\'). It returns the byte
// it stands for (0x80 for any non-ASCII rune) and its width, 0 if b does not
// hold a whole escape.
func decodeEscape(b []byte) (byte, int) {
	if len(b) < 2 {
		return 0, 0
	}
	switch b[1] {
	case '"', '\\', '/':
		return b[1], 2
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		if len(b) < 6 {
			return 0, 0
		}
		r := 0
		for _, c := range b[2:6] {
			switch {
			case '0' <= c && c <= '9':
				r = r<<4 | int(c-'0')
			case 'a' <= c && c <= 'f':
				r = r<<4 | int(c-'a'+10)
			case 'A' <= c && c <= 'F':
				r = r<<4 | int(c-'A'+10)
			default:
				return 0, 0
			}
		}
		if r >= 0x80 {
			return 0x80, 6
		}
		return byte(r), 6
	}
	return 0, 0
}

// level is the JSON escape level of a quote preceded by r backslashes: 0 for
// a plain quote, 1 for a quote of JSON embedded in a JSON string (\"), 2 one
// level deeper (\\\"), and so on. It is r's count of trailing one bits: at
// each level an odd run is an escaped quote whose inner run is (r-1)/2.
func level(r int) int { return bits.TrailingZeros(^uint(r)) }

func (v *valScan) feedString(b []byte) (int, vstatus) {
	i := 0
	for {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			break
		}
		q += i
		r := 0
		for r < q && b[q-1-r] == '\\' {
			r++
		}
		if r == q {
			r += v.run
		}
		switch lv := level(r); {
		case lv == v.level:
			return q + 1, vDone
		case lv < v.level:
			// An outer string ended first: stop before its escape run.
			return q - r, vDone
		}
		i = q + 1
	}
	k := len(b)
	for k > 0 && b[k-1] == '\\' {
		k--
	}
	if k == 0 {
		v.run += len(b)
	} else {
		v.run = len(b) - k
	}
	return len(b), vMore
}

func (v *valScan) feedCompound(b []byte) (int, vstatus) {
	for i, c := range b {
		switch c {
		case '\\':
			v.run++
			continue
		case '"':
			switch lv := level(v.run); {
			case lv == v.level:
				v.inStr = !v.inStr
			case lv < v.level:
				return i - v.run, vDone
			}
		case '{', '[':
			if !v.inStr {
				v.depth++
			}
		case '}', ']':
			if !v.inStr {
				v.depth--
				if v.depth <= 0 {
					return i + 1, vDone
				}
			}
		}
		v.run = 0
	}
	return len(b), vMore
}

func (v *valScan) feedJWT(b []byte) (int, vstatus) {
	i := 0
	if v.phase == 0 {
		for i < len(b) && b64urlSet[b[i]] {
			i++
			v.count++
		}
		if i == len(b) {
			return i, vMore
		}
		if b[i] != '.' || v.count == 0 {
			return i, vFail
		}
		i++
		v.phase = 1
	}
	for i < len(b) && b64urlSet[b[i]] {
		i++
	}
	if i == len(b) {
		return i, vMore
	}
	return i, vDone
}

const privateKeyWord = "PRIVATE KEY"

// feedPrivKey looks for "-----END" + " [A-Z ]*" holding "PRIVATE KEY" +
// "-----". Phase 0 seeks the dashes and END (v.count counts dashes, v.k
// letters of END), phase 1 reads the label, phase 2 the closing dashes.
func (v *valScan) feedPrivKey(b []byte) (int, vstatus) {
	i := 0
	for i < len(b) {
		c := b[i]
		switch v.phase {
		case 0:
			if v.count == 0 && v.k == 0 && c != '-' {
				j := bytes.IndexByte(b[i:], '-')
				if j < 0 {
					return len(b), vMore
				}
				i += j
				continue
			}
			if v.k > 0 {
				if c == "END"[v.k] {
					i++
					if v.k++; v.k == 3 {
						v.phase, v.k, v.count, v.found = 1, 0, 0, false
					}
					continue
				}
				v.k, v.count = 0, 0
			}
			switch {
			case c == '-':
				v.count++
			case c == 'E' && v.count >= 5:
				v.k, v.count = 1, 0
			default:
				v.count = 0
			}
			i++
		case 1:
			if upperSpace[c] && (v.count > 0 || c == ' ') && v.count < 96 {
				v.count++
				if !v.found {
					switch {
					case c == privateKeyWord[v.k]:
						if v.k++; v.k == len(privateKeyWord) {
							v.found = true
						}
					case c == 'P':
						v.k = 1
					default:
						v.k = 0
					}
				}
				i++
				continue
			}
			if c == '-' && v.found {
				v.phase, v.count = 2, 1
				i++
				continue
			}
			v.phase, v.k, v.count = 0, 0, 0 // look at c again
		case 2:
			if c == '-' {
				i++
				if v.count++; v.count == 5 {
					return i, vDone
				}
				continue
			}
			v.phase, v.k, v.count = 0, 0, 0
		}
	}
	return len(b), vMore
}
