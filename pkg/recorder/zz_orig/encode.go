package recorder

import (
	"strconv"
	"unicode/utf8"

	"github.com/intransit/intransit/pkg/recording"
)

// The JSON payloads of HTTPHead, HTTPEnd and Note chunks, appended to a
// buffer without reflection or allocation. The output is byte for byte what
// encoding/json.Marshal produces for the same values (field order, omitempty,
// escaping: HTML characters, U+2028/U+2029, invalid UTF-8 as U+FFFD), which
// encode_test.go checks, including that every field of those types is
// covered.

// appendHead appends h as JSON.
func appendHead(b []byte, h *recording.HTTPHead) []byte {
	b = append(b, `{"request":`...)
	b = strconv.AppendBool(b, h.Request)
	if h.Method != "" {
		b = append(b, `,"method":`...)
		b = appendString(b, h.Method)
	}
	if h.Target != "" {
		b = append(b, `,"target":`...)
		b = appendString(b, h.Target)
	}
	b = append(b, `,"proto":`...)
	b = appendString(b, h.Proto)
	if h.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(h.Status), 10)
	}
	if h.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendString(b, h.Reason)
	}
	b = append(b, `,"headers":`...)
	b = appendHeaders(b, h.Headers)
	if h.Chunked {
		b = append(b, `,"chunked":true`...)
	}
	return append(b, '}')
}

// appendEnd appends e as JSON.
func appendEnd(b []byte, e *recording.HTTPEnd) []byte {
	b = append(b, `{"body_size":`...)
	b = strconv.AppendInt(b, e.BodySize, 10)
	if len(e.Trailers) > 0 {
		b = append(b, `,"trailers":`...)
		b = appendHeaders(b, e.Trailers)
	}
	return append(b, '}')
}

// appendNote appends n as JSON.
func appendNote(b []byte, n *recording.Note) []byte {
	b = append(b, `{"code":`...)
	b = appendString(b, n.Code)
	b = append(b, `,"message":`...)
	b = appendString(b, n.Message)
	return append(b, '}')
}

func appendHeaders(b []byte, hs []recording.Header) []byte {
	if hs == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i := range hs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, hs[i].Name)
		b = append(b, `,"value":`...)
		b = appendString(b, hs[i].Value)
		b = append(b, '}')
	}
	return append(b, ']')
}

const hexDigits = "0123456789abcdef"

// jsonSafe marks the ASCII bytes encoding/json writes as they are (with
// HTML escaping on, its default).
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = true
	}
	for _, c := range `"\<>&` {
		t[c] = false
	}
	return t
}()

// appendString appends s as a JSON string, escaped as encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
