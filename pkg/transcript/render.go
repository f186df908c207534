package transcript

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Recorded bytes are attacker-controlled: nothing from a recording reaches
// a terminal without going through escape, hexDump or a fixed format.

// escape renders b safely: printable runes as they are; control bytes
// (ESC included), invalid UTF-8 and non-printable runes (bidi overrides,
// zero-width characters...) escaped the way strconv.Quote would. With
// multiline, '\n' stays a line break and '\t' a tab.
func escape(b []byte, multiline bool) string {
	var sb strings.Builder
	sb.Grow(len(b))
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&sb, `\x%02x`, b[0])
		case multiline && (r == '\n' || r == '\t'):
			sb.WriteRune(r)
		case strconv.IsPrint(r):
			sb.WriteRune(r)
		default:
			sb.WriteString(quoteRune(r))
		}
		b = b[size:]
	}
	return sb.String()
}

// escapeString is escape for single-line strings (header values, meta).
func escapeString(s string) string { return escape([]byte(s), false) }

// quoteRune is strconv's escape for one non-printable rune.
func quoteRune(r rune) string {
	switch r {
	case '\a':
		return `\a`
	case '\b':
		return `\b`
	case '\f':
		return `\f`
	case '\n':
		return `\n`
	case '\r':
		return `\r`
	case '\t':
		return `\t`
	case '\v':
		return `\v`
	}
	switch {
	case r < 0x80:
		return fmt.Sprintf(`\x%02x`, r)
	case r < 0x10000:
		return fmt.Sprintf(`\u%04x`, r)
	}
	return fmt.Sprintf(`\U%08x`, r)
}

// isText says whether b reads as text: valid UTF-8, no NUL, and few
// control characters. Text is shown escaped, the rest as a hex dump or a
// size.
func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	runes, ctl := 0, 0
	for _, r := range string(b) {
		runes++
		switch {
		case r == 0:
			return false
		case r == '\n' || r == '\r' || r == '\t':
		case r < 0x20 || r == 0x7f:
			ctl++
		}
	}
	return ctl*10 <= runes*3
}

// encodeBody returns the body as a string for JSON exports: the text
// itself when it is valid UTF-8, else base64 and encoding "base64".
func encodeBody(b []byte) (text, encoding string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return base64.StdEncoding.EncodeToString(b), "base64"
}

// runeStart moves i forward to the start of a rune in the valid UTF-8 b,
// so that pieces of a body split between chunks render whole runes.
func runeStart(b []byte, i int) int {
	for i > 0 && i < len(b) && !utf8.RuneStart(b[i]) {
		i++
	}
	return i
}
