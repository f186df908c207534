package httpstream

import (
	"errors"
	"fmt"
	"strings"
)

// Injector rewrites the request heads of a client->server stream so each
// carries exactly one `name: value` header: header lines with that name (any
// case) are removed and one is added after the other headers, before the
// blank line. Trailer lines with that name are removed too, since some
// servers merge trailers into headers. Everything else (bodies, chunk
// framing, line endings of the kept lines) passes through byte-exact.
//
// Framing is the Parser's, so the injector fails on exactly the streams the
// recorder calls parse errors. After a request that asks for an Upgrade
// (with Connection: upgrade) or a CONNECT request, the rest of the stream
// passes through untouched: it is no longer HTTP/1.x, whatever the server
// answers. The request itself is rewritten.
//
// An Injector is not safe for concurrent use.
type Injector struct {
	name  string
	value func() (string, error)
	p     *Parser
	out   []byte // Transform's dst while the parser runs
	err   error  // sticky: fail closed
}

// NewInjector returns an injector for header name, calling value once per
// request for the value to send (the caller's func reloads it when it
// changes).
func NewInjector(name string, value func() (string, error)) *Injector {
	i := &Injector{name: name, value: value, p: NewRequestParser(nil)}
	i.p.tap = (*injectTap)(i)
	if !validToken(name) {
		i.err = fmt.Errorf("inject: invalid header name %q", name)
	}
	return i
}

// Transform appends to dst the bytes to forward for input p and returns dst;
// dst must not overlap p. Incomplete heads are held back (at most
// MaxHeadBytes); body bytes are copied through as they come.
//
// Errors: the stream is not HTTP/1.x, its framing is ambiguous (the same
// rules as Parser; the message names the problem), value fails or returns a
// control character, or the head is too large. After an error the returned
// slice holds what was produced before the problem, every later call
// returns the same error, and the caller must close the connection.
func (i *Injector) Transform(dst, p []byte) ([]byte, error) {
	if i.err != nil {
		return dst, i.err
	}
	i.out = dst
	i.p.Feed(p, (*injectTap)(i))
	dst, i.out = i.out, nil
	return dst, i.err
}

// Close reports an error if the stream ended inside a head, a chunk-size
// line or a trailer section: bytes the injector holds back would otherwise
// be dropped silently. A body cut short is not an error here: all of it was
// forwarded.
func (i *Injector) Close() error {
	if i.err != nil {
		return i.err
	}
	if n := i.p.pending(); n > 0 {
		what := "request head"
		if i.p.state != sStartLine && i.p.state != sHeaders {
			what = "chunked body framing"
		}
		i.err = fmt.Errorf("inject: stream ended inside a %s (%d bytes not forwarded)", what, n)
	}
	return i.err
}

// injectTap is the Injector seen by its parser: Handler and tap methods,
// kept off the Injector's own method set.
type injectTap Injector

func (t *injectTap) Head(uint32, *Head)          {}
func (t *injectTap) End(uint32, []Header, int64) {}
func (t *injectTap) Body(_ uint32, p []byte)     { t.out = append(t.out, p...) }
func (t *injectTap) framing(b []byte)            { t.out = append(t.out, b...) }
func (t *injectTap) trailers(raw []byte)         { t.out = t.rewrite(raw, 0, "") }
func (t *injectTap) Raw(p []byte) {
	if t.err == nil { // after an upgrade or CONNECT
		t.out = append(t.out, p...)
	}
}

func (t *injectTap) Fallback(reason string) {
	if !t.p.failed {
		return // upgrade or tunnel: the rest passes through
	}
	if strings.HasPrefix(reason, "not HTTP/1.x") {
		t.err = errors.New("inject: client stream is " + reason)
	} else {
		t.err = errors.New("inject: " + reason)
	}
}

func (t *injectTap) head(raw []byte) bool {
	v, err := t.value()
	if err != nil {
		t.err = fmt.Errorf("inject: credential value: %w", err)
		return false
	}
	if v == "" {
		// Most likely an empty credential file: sending nothing is no better.
		t.err = errors.New("inject: credential value is empty")
		return false
	}
	for j := 0; j < len(v); j++ {
		// Never quote the value: it is a secret.
		if c := v[j]; c < ' ' && c != '\t' || c == 0x7f {
			t.err = fmt.Errorf("inject: credential value contains control byte %#02x", c)
			return false
		}
	}
	kept := 0
	for _, f := range t.p.fields {
		if !equalFold(raw[f.line:f.nameEnd], t.name) {
			kept++
		}
	}
	start := len(t.out)
	t.out = t.rewrite(raw, t.p.sl.end, v)
	// The upstream (and our own recorder) parse with the same limits: a head
	// the added line pushes over them is refused, not forwarded.
	if kept+1 > MaxHeaderLines || len(t.out)-start > MaxHeadBytes {
		t.out = t.out[:start]
		t.err = fmt.Errorf("inject: request head with the injected %s header would exceed %d header lines or %d bytes", t.name, MaxHeaderLines, MaxHeadBytes)
		return false
	}
	return true
}

// rewrite appends raw (a head from its header lines at offset from, or a
// trailer section) without the lines named t.name, plus `name: v` when v is
// set, before the blank line.
func (t *injectTap) rewrite(raw []byte, from int, v string) []byte {
	out := append(t.out, raw[:from]...)
	blank := from
	for _, f := range t.p.fields {
		if !equalFold(raw[f.line:f.nameEnd], t.name) {
			out = append(out, raw[f.line:f.end]...)
		}
		blank = int(f.end)
	}
	if v != "" {
		out = append(out, t.name...)
		out = append(out, ": "...)
		out = append(out, v...)
		out = append(out, "\r\n"...)
	}
	return append(out, raw[blank:]...)
}

func validToken(s string) bool {
	for j := 0; j < len(s); j++ {
		if !tchar[s[j]] {
			return false
		}
	}
	return s != ""
}
