package redact

import "encoding/json"

// jsonMask replaces the value of a listed key.
const jsonMask = `"` + Mask + `"`

// maxJSONDepth is encoding/json's nesting limit: JSON accepts exactly what
// json.Valid accepts.
const maxJSONDepth = 10000

// JSON redacts a complete JSON document: the value of every listed key, at
// any depth and of any type, becomes "[REDACTED]", and patterns and field
// rules are applied inside every string (keys included, so also to JSON
// embedded in strings). Everything else, key order and formatting included,
// is kept byte for byte. ok is false if body is not valid JSON (callers fall
// back to Bytes). When nothing matched, body itself is returned.
func (r *Redactor) JSON(body []byte) (out []byte, ok bool) {
	w := jsonWalker{r: r, b: body}
	if !w.document() {
		return nil, false
	}
	if w.out == nil {
		return body, true
	}
	if w.broken {
		// Not expected: every replacement keeps strings whole. Let the
		// caller fall back to Bytes rather than record broken JSON.
		return nil, false
	}
	return append(w.out, body[w.cur:]...), true
}

// jsonWalker validates a JSON document as encoding/json does and, when r is
// set, writes the redacted document to out (lazily: out stays nil while
// nothing changed; body[cur:] is still to be copied).
type jsonWalker struct {
	r       *Redactor
	b       []byte
	i       int
	out     []byte
	cur     int
	scratch []byte
	pend    candidate
	quiet   int  // inside a listed key's value: validate only
	broken  bool // a rewritten string is not a valid JSON string
	escaped bool // the last string parsed holds an escape
}

func (w *jsonWalker) document() bool {
	w.ws()
	if !w.value(0) {
		return false
	}
	w.ws()
	return w.i == len(w.b)
}

func (w *jsonWalker) ws() {
	for w.i < len(w.b) && wsSet[w.b[w.i]] {
		w.i++
	}
}

// value parses one value at w.i.
func (w *jsonWalker) value(depth int) bool {
	if w.i >= len(w.b) {
		return false
	}
	switch c := w.b[w.i]; {
	case c == '"':
		_, ok := w.str()
		return ok
	case c == '{':
		return w.object(depth + 1)
	case c == '[':
		return w.array(depth + 1)
	case c == '-' || '0' <= c && c <= '9':
		return w.number()
	case c == 't':
		return w.literal("true")
	case c == 'f':
		return w.literal("false")
	case c == 'n':
		return w.literal("null")
	}
	return false
}

func (w *jsonWalker) object(depth int) bool {
	if depth > maxJSONDepth {
		return false
	}
	w.i++ // {
	w.ws()
	if w.i < len(w.b) && w.b[w.i] == '}' {
		w.i++
		return true
	}
	for {
		if w.i >= len(w.b) || w.b[w.i] != '"' {
			return false
		}
		listed, ok := w.str()
		if !ok {
			return false
		}
		w.ws()
		if w.i >= len(w.b) || w.b[w.i] != ':' {
			return false
		}
		w.i++
		w.ws()
		vs := w.i
		if listed {
			// The value goes whole: only validate it.
			w.quiet++
		}
		if !w.value(depth) {
			return false
		}
		if listed {
			w.quiet--
			w.replace(vs, w.i, jsonMask)
		}
		w.ws()
		if w.i >= len(w.b) {
			return false
		}
		switch w.b[w.i] {
		case ',':
			w.i++
			w.ws()
		case '}':
			w.i++
			return true
		default:
			return false
		}
	}
}

func (w *jsonWalker) array(depth int) bool {
	if depth > maxJSONDepth {
		return false
	}
	w.i++ // [
	w.ws()
	if w.i < len(w.b) && w.b[w.i] == ']' {
		w.i++
		return true
	}
	for {
		if !w.value(depth) {
			return false
		}
		w.ws()
		if w.i >= len(w.b) {
			return false
		}
		switch w.b[w.i] {
		case ',':
			w.i++
			w.ws()
		case ']':
			w.i++
			return true
		default:
			return false
		}
	}
}

// jsonStrPlain holds the string bytes that need no attention: not a quote,
// a backslash or a control character.
var jsonStrPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str parses a string at w.i, applies the rules to its content and reports
// whether it is a listed name (the caller knows whether it is a key).
func (w *jsonWalker) str() (listed, ok bool) {
	w.i++
	start := w.i
	if !w.strBody() {
		return false, false
	}
	if w.r != nil && w.quiet == 0 {
		listed = w.content(w.b[start:w.i-1], start, w.escaped)
	}
	return listed, true
}

// strBody parses the rest of a string from w.i, through its closing quote.
func (w *jsonWalker) strBody() bool {
	b := w.b
	i := w.i
	escaped := false
	for {
		for i < len(b) && jsonStrPlain[b[i]] {
			i++
		}
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case '"':
			w.i = i + 1
			w.escaped = escaped
			return true
		case '\\':
			escaped = true
			if i+1 >= len(b) {
				return false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return false
				}
				for _, h := range b[i+2 : i+6] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				i += 6
			default:
				return false
			}
		default: // control character
			return false
		}
	}
}

// content applies patterns and field rules to a string's content at
// offset start and reports whether it is a listed name.
func (w *jsonWalker) content(c []byte, start int, escaped bool) bool {
	r := w.r
	listed := false
	if r.fields.n > 0 && len(c) <= r.fields.max*6 { // \uXXXX at most
		if !escaped {
			listed = r.fields.has(c)
		} else {
			var name string
			quoted := w.b[start-1 : start+len(c)+1]
			listed = json.Unmarshal(quoted, &name) == nil && r.fields.hasString(name)
		}
	}
	if r.next(c, 0) < len(c) {
		var matched bool
		w.scratch, _, matched = r.scan(c, 0, true, true, true, w.scratch[:0], &w.pend)
		if matched {
			// The rules keep escapes whole; check rather than trust it.
			if !(&jsonWalker{b: append(w.scratch, '"')}).strBody() {
				w.broken = true
			}
			w.replaceBytes(start, start+len(c), w.scratch)
		}
	}
	return listed
}

// replace writes s instead of w.b[from:to].
func (w *jsonWalker) replace(from, to int, s string) {
	w.grow()
	w.out = append(w.out, w.b[w.cur:from]...)
	w.out = append(w.out, s...)
	w.cur = to
}

func (w *jsonWalker) replaceBytes(from, to int, s []byte) {
	w.grow()
	w.out = append(w.out, w.b[w.cur:from]...)
	w.out = append(w.out, s...)
	w.cur = to
}

func (w *jsonWalker) grow() {
	if w.out == nil {
		w.out = make([]byte, 0, len(w.b)+len(w.b)/8+len(jsonMask))
	}
}

func (w *jsonWalker) number() bool {
	b, i := w.b, w.i
	if b[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i - j
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	w.i = i
	return true
}

func (w *jsonWalker) literal(lit string) bool {
	if len(w.b)-w.i < len(lit) || string(w.b[w.i:w.i+len(lit)]) != lit {
		return false
	}
	w.i += len(lit)
	return true
}
