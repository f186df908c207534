// Package httpstream understands HTTP/1.x on the byte streams the proxy
// relays, incrementally: pieces of any size arrive as read(2) returns them,
// and nothing may be lost, duplicated or held back longer than a head.
//
// A Parser turns one direction into events (Handler) for session recording;
// an Injector rewrites the request heads of the client direction so they
// carry exactly one credential header. Both share one framing engine, so
// what the recorder calls a request is what the injector rewrote.
//
// Framing follows RFC 9112 strictly: anything a server could read in two
// ways (request smuggling) is a parse error, after which the parser reports
// the rest of the stream as Raw and the injector fails closed. An error in a
// head sends the whole bad message to Raw; an error in chunk framing sends
// the rest from the bad framing, since the head and earlier body bytes were
// already delivered (no byte is reported twice).
//
// Bare LF is accepted as a line end in heads and trailers (as net/http
// does) but not in chunk framing, where disagreeing line-end rules are a
// known smuggling vector.
package httpstream

import (
	"bytes"
	"fmt"
	"math"
)

// MaxHeadBytes bounds a message head (start line, header lines and the
// blank line) and, separately, a chunked body's trailer section.
const MaxHeadBytes = 64 << 10

// MaxHeaderLines bounds the header lines of a head or a trailer section.
const MaxHeaderLines = 200

const (
	// maxChunkLine bounds a chunk-size line with its extensions, as net/http.
	maxChunkLine = 4096
	// maxMethod lets token-like binary fail fast instead of after 64 KiB.
	maxMethod = 32
)

// Header is one header (or trailer) field, name case as received, value
// without surrounding whitespace.
type Header struct{ Name, Value string }

// Head is a request or response head.
//
// Passed to Handler.Head, it is valid only during the call (the Headers
// slice is reused); its strings are not, they may be kept (all share one
// allocation per head).
type Head struct {
	Request        bool
	Method, Target string // requests
	Proto          string // "HTTP/1.1", "HTTP/1.0"
	Status         int    // responses
	Reason         string
	Headers        []Header
	Chunked        bool
	// ContentLength is the header's value, -1 when absent. A response to
	// HEAD, or a 1xx/204/304 response, has no body whatever it says.
	ContentLength int64
}

// Get returns the value of the first header named name (case-insensitive).
func (h *Head) Get(name string) string {
	for _, f := range h.Headers {
		if equalFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// Handler receives parse events in stream order.
type Handler interface {
	// Head: a request or response head is complete; h is valid only
	// during the call.
	Head(exchange uint32, h *Head)
	// Body: decoded body bytes (chunked framing removed); p is a sub-slice
	// of the fed piece, valid only during the call.
	Body(exchange uint32, p []byte)
	// End: the message is complete; trailers are valid only during the call.
	End(exchange uint32, trailers []Header, bodySize int64)
	// Raw: bytes not parsed as HTTP, after Fallback.
	Raw(p []byte)
	// Fallback: called once, when the parser switches to raw, with why:
	// "not HTTP/1.x: ...", "upgrade to websocket", "CONNECT tunnel",
	// "parse error: ...".
	Fallback(reason string)
}

// Stats counts the bytes a parser consumed, by role. After Close they add
// up to every byte fed; before, bytes of an incomplete head or chunk-size
// line are not counted yet.
type Stats struct {
	Head    int64 // completed heads: start line, header lines, blank line
	Framing int64 // chunk-size lines, CRLFs after chunk data, trailer sections, empty lines between messages
	Body    int64 // decoded body bytes passed to Handler.Body
	Raw     int64 // bytes passed to Handler.Raw
}

type state uint8

const (
	sStart     state = iota // between messages
	sStartLine              // request or status line, checked byte by byte
	sHeaders                // header lines
	sBody                   // Content-Length body: remain bytes left
	sBodyClose              // response body delimited by end of stream
	sChunkLine              // chunk-size line
	sChunkData              // remain bytes of chunk data left
	sChunkEnd               // the CRLF after chunk data
	sTrailers               // trailer section
	sRaw                    // everything is Raw
	sClosed                 // Close was called; later bytes are Raw
	sDead                   // the injector failed: stop
)

// Start-line positions.
const (
	phMethod uint8 = iota
	phTarget
	phVersion // "HTTP/1.x", then CRLF (request) or SP (response)
	phCode
	phAfterCode
	phReason
	phCR // after CR: LF must follow
)

// tap sees what an Injector needs beyond Handler events: the raw bytes of
// heads, trailer sections and chunk framing, so it can forward them.
type tap interface {
	framing(b []byte)
	head(raw []byte) bool // false: stop, the tap recorded an error
	trailers(raw []byte)
}

// Parser parses one direction of a connection. It is not safe for
// concurrent use; the two directions share only their Exchanges.
type Parser struct {
	request bool
	x       *Exchanges
	tap     tap

	state   state
	raw     bool   // switched to raw (Raw())
	failed  bool   // raw because of an error, not an upgrade or tunnel
	started bool   // a start line was complete: later garbage is a parse error, not "not HTTP/1.x"
	seq     uint32 // last request number

	buf    []byte // head, chunk-size line or trailer section so far
	line0  int    // start of the current line in buf
	phase  uint8
	cr     bool // consumed a CR that must be followed by LF
	lines  int
	sl     startLine
	fields []field // header lines in buf
	hdrs   []Header
	head   Head

	ex       uint32 // exchange of the current message
	remain   int64  // Content-Length or chunk bytes still to come
	bodySize int64
	then     string // after the current message, switch to raw with this reason (upgrade)

	stats Stats
}

// startLine holds offsets into buf.
type startLine struct {
	methodEnd, targetStart, targetEnd int
	versionStart                      int
	code, codeDigits                  int
	reasonStart, reasonEnd            int
	end                               int // after the line ending
}

// field holds offsets into buf of one header line: name is [line, nameEnd),
// the trimmed value [val0, val1), the line with its ending [line, end).
type field struct{ line, nameEnd, val0, val1, end int32 }

// NewRequestParser parses the client->server direction, numbering exchanges
// 1, 2, 3... and queueing them on x (nil: numbering only).
//
// It switches to raw after a CONNECT request's head, and after a request
// that asks for an Upgrade (Upgrade plus Connection: upgrade) once its body
// is done, without waiting for the answer: the client may send tunnel or
// upgraded bytes at once. Should the server refuse, the client's later
// requests are Raw and their responses are exchange 0.
func NewRequestParser(x *Exchanges) *Parser { return &Parser{request: true, x: x} }

// NewResponseParser parses the server->client direction, pairing responses
// with the requests queued on x. Without a queued request (x nil, or an
// unsolicited response such as 408) a response is exchange 0 and framed as
// if it answered a GET.
func NewResponseParser(x *Exchanges) *Parser { return &Parser{x: x} }

// Raw reports whether the parser has switched to raw.
func (p *Parser) Raw() bool { return p.raw }

// Stats returns the byte counts so far.
func (p *Parser) Stats() Stats { return p.stats }

// Feed parses the next piece of the stream, of any size.
func (p *Parser) Feed(data []byte, h Handler) {
	for len(data) > 0 {
		var n int
		switch p.state {
		case sStart:
			n = p.boundary(h, data)
		case sStartLine:
			n = p.startLine(h, data)
		case sHeaders, sTrailers:
			n = p.headerLines(h, data)
		case sBody, sChunkData:
			n = p.body(h, data)
		case sBodyClose:
			n = len(data)
			p.stats.Body += int64(n)
			p.bodySize += int64(n)
			h.Body(p.ex, data)
		case sChunkLine:
			n = p.chunkLine(h, data)
		case sChunkEnd:
			n = p.chunkEnd(h, data)
		case sRaw, sClosed:
			p.emitRaw(h, data)
			return
		case sDead:
			return
		}
		data = data[n:]
	}
}

// Close reports the end of this direction's stream: it completes a body
// delimited by the close, and reports a message cut short with Fallback (and
// its buffered bytes with Raw). Bytes fed after Close are reported as Raw
// rather than lost.
func (p *Parser) Close(h Handler) {
	switch p.state {
	case sStartLine, sHeaders:
		p.fail(h, "parse error: stream ended inside a message head", nil)
	case sBody, sChunkLine, sChunkData, sChunkEnd, sTrailers:
		p.fail(h, "parse error: stream ended inside a message body", nil)
	case sBodyClose:
		p.then = ""
		h.End(p.ex, nil, p.bodySize)
	}
	if p.state != sDead {
		p.state = sClosed
	}
}

// pending reports bytes buffered and not yet passed on (for Injector.Close).
func (p *Parser) pending() int {
	switch p.state {
	case sStartLine, sHeaders, sChunkLine, sTrailers:
		return len(p.buf)
	}
	return 0
}

func (p *Parser) emitRaw(h Handler, b []byte) {
	p.stats.Raw += int64(len(b))
	h.Raw(b)
}

// fail switches to raw because of an error: what was buffered and the rest
// of the piece go to Raw, in stream order.
func (p *Parser) fail(h Handler, reason string, rest []byte) {
	p.state, p.raw, p.failed = sRaw, true, true
	h.Fallback(reason)
	if len(p.buf) > 0 {
		p.emitRaw(h, p.buf)
		p.buf = p.buf[:0]
	}
	if len(rest) > 0 {
		p.emitRaw(h, rest)
	}
}

// toRaw switches to raw on purpose (upgrade, tunnel); nothing is buffered.
func (p *Parser) toRaw(h Handler, reason string) {
	p.state, p.raw = sRaw, true
	h.Fallback(reason)
}

// malformed words a start-line error: before any start line parsed, the
// stream is taken for another protocol.
func (p *Parser) malformed(detail string) string {
	if p.started {
		return "parse error: malformed start line: " + detail
	}
	return "not HTTP/1.x: " + detail
}

// boundary skips empty lines between messages (RFC 9112 §2.2 lets servers
// ignore them; clients send them after POST bodies) and starts a message.
func (p *Parser) boundary(h Handler, data []byte) int {
	if p.started {
		i := 0
		for ; i < len(data); i++ {
			c := data[i]
			if c == '\n' {
				p.cr = false
				continue
			}
			if c == '\r' && !p.cr {
				p.cr = true
				continue
			}
			break
		}
		if i > 0 {
			p.framing(data[:i])
			return i
		}
		if p.cr {
			p.fail(h, "parse error: bare CR between messages", data)
			return len(data)
		}
	}
	p.state = sStartLine
	p.phase = phVersion
	if p.request {
		p.phase = phMethod
	}
	p.sl = startLine{}
	p.buf = p.buf[:0]
	p.cr = false
	return 0
}

func (p *Parser) framing(b []byte) {
	p.stats.Framing += int64(len(b))
	if p.tap != nil {
		p.tap.framing(b)
	}
}

// startLine checks the request or status line one byte at a time, so a
// stream that is not HTTP/1.x is recognised by its first contradicting byte.
func (p *Parser) startLine(h Handler, data []byte) int {
	base := len(p.buf)
	sl := &p.sl
	for i := 0; i < len(data); i++ {
		c, off := data[i], base+i
		if off >= MaxHeadBytes {
			p.fail(h, fmt.Sprintf("parse error: head larger than %d bytes", MaxHeadBytes), data)
			return len(data)
		}
		bad, done := "", false
		switch p.phase {
		case phMethod:
			switch {
			case c == ' ' && off > 0:
				sl.methodEnd, sl.targetStart, p.phase = off, off+1, phTarget
			case !tchar[c]:
				bad = unexpected(c, "method", off)
			case off >= maxMethod:
				bad = fmt.Sprintf("method longer than %d bytes", maxMethod)
			}
		case phTarget:
			switch {
			case c > ' ' && c != 0x7f:
				// Run through the target (URLs can be long), still within
				// the size limit.
				lim := min(len(data), MaxHeadBytes-base)
				for i+1 < lim && data[i+1] > ' ' && data[i+1] != 0x7f {
					i++
				}
			case c == ' ' && off > sl.targetStart:
				sl.targetEnd, sl.versionStart, p.phase = off, off+1, phVersion
			case c <= ' ' || c == 0x7f:
				bad = unexpected(c, "request target", off)
			}
		case phVersion:
			switch k := off - sl.versionStart; {
			case k < 7:
				if c != "HTTP/1."[k] {
					bad = unexpected(c, "version", off)
				}
			case k == 7:
				if c < '0' || c > '9' {
					bad = unexpected(c, "version", off)
				}
			case p.request && c == '\r':
				p.phase = phCR
			case p.request && c == '\n':
				done = true
			case !p.request && c == ' ':
				p.phase = phCode
			default:
				bad = unexpected(c, "version", off)
			}
		case phCode:
			if c < '0' || c > '9' {
				bad = unexpected(c, "status code", off)
				break
			}
			sl.code = sl.code*10 + int(c-'0')
			if sl.codeDigits++; sl.codeDigits == 3 {
				if sl.code < 100 {
					bad = fmt.Sprintf("status code %03d", sl.code)
				}
				p.phase = phAfterCode
			}
		case phAfterCode:
			switch c {
			case ' ':
				sl.reasonStart, p.phase = off+1, phReason
			case '\r':
				sl.reasonStart, sl.reasonEnd, p.phase = off, off, phCR
			case '\n':
				sl.reasonStart, sl.reasonEnd, done = off, off, true
			default:
				bad = unexpected(c, "status code", off)
			}
		case phReason:
			switch {
			case c == '\r':
				sl.reasonEnd, p.phase = off, phCR
			case c == '\n':
				sl.reasonEnd, done = off, true
			case c < ' ' && c != '\t' || c == 0x7f:
				bad = unexpected(c, "reason phrase", off)
			}
		case phCR:
			if c != '\n' {
				bad = fmt.Sprintf("bare CR in start line at offset %d", off-1)
				break
			}
			done = true
		}
		if bad != "" {
			// buf holds the earlier pieces, data this whole piece.
			p.fail(h, p.malformed(bad), data)
			return len(data)
		}
		if done {
			p.buf = append(p.buf, data[:i+1]...)
			sl.end = len(p.buf)
			p.started = true
			p.state = sHeaders
			p.line0, p.lines, p.fields = len(p.buf), 0, p.fields[:0]
			return i + 1
		}
	}
	p.buf = append(p.buf, data...)
	return len(data)
}

func unexpected(c byte, where string, off int) string {
	return fmt.Sprintf("unexpected byte %q in %s at offset %d", c, where, off)
}

// headerLines accumulates header (or trailer) lines, checking each as it
// completes, until the blank line.
func (p *Parser) headerLines(h Handler, data []byte) int {
	n := 0
	for {
		i := bytes.IndexByte(data[n:], '\n')
		if i < 0 {
			if len(p.buf)+len(data)-n > MaxHeadBytes {
				p.fail(h, p.tooLarge(), data[n:])
				return len(data)
			}
			p.buf = append(p.buf, data[n:]...)
			return len(data)
		}
		if len(p.buf)+i+1 > MaxHeadBytes {
			p.fail(h, p.tooLarge(), data[n:])
			return len(data)
		}
		p.buf = append(p.buf, data[n:n+i+1]...)
		n += i + 1
		done, bad := p.headerLine()
		if bad != "" {
			p.fail(h, "parse error: "+bad, data[n:])
			return len(data)
		}
		if !done {
			continue
		}
		if p.state == sTrailers {
			p.trailersDone(h)
			return n
		}
		if !p.headDone(h, data[n:]) {
			return len(data)
		}
		return n
	}
}

func (p *Parser) tooLarge() string {
	if p.state == sTrailers {
		return fmt.Sprintf("parse error: trailer section larger than %d bytes", MaxHeadBytes)
	}
	return fmt.Sprintf("parse error: head larger than %d bytes", MaxHeadBytes)
}

// headerLine checks the line that just completed at the end of buf and
// records it in fields; done reports the blank line.
func (p *Parser) headerLine() (done bool, bad string) {
	start, end := p.line0, len(p.buf)
	p.line0 = end
	line := p.buf[start : end-1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	if len(line) == 0 {
		return true, ""
	}
	if p.lines++; p.lines > MaxHeaderLines {
		return false, fmt.Sprintf("more than %d header lines", MaxHeaderLines)
	}
	if line[0] == ' ' || line[0] == '\t' {
		// RFC 9112 §5.2: obsolete line folding; proxies must not pass it on.
		return false, "obs-fold (line folding) in header section"
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		if bytes.IndexByte(line, '\r') >= 0 {
			return false, "bare CR in header section"
		}
		return false, fmt.Sprintf("header line without colon: %s", quote(line))
	}
	name := line[:colon]
	if colon == 0 {
		return false, "empty header name"
	}
	for _, c := range name {
		if tchar[c] {
			continue
		}
		switch c {
		case ' ', '\t':
			return false, fmt.Sprintf("whitespace in header name %s", quote(name))
		case '\r':
			return false, "bare CR in header section"
		}
		return false, fmt.Sprintf("unexpected byte %q in header name %s", c, quote(name))
	}
	v0, v1 := colon+1, len(line)
	for v0 < v1 && (line[v0] == ' ' || line[v0] == '\t') {
		v0++
	}
	for v1 > v0 && (line[v1-1] == ' ' || line[v1-1] == '\t') {
		v1--
	}
	if j := invalidValueByte(line[v0:v1]); j >= 0 {
		if c := line[v0+j]; c != '\r' {
			// The value is not quoted: it may be a secret.
			return false, fmt.Sprintf("unexpected byte %q in value of header %s", c, quote(name))
		}
		return false, "bare CR in header section"
	}
	p.fields = append(p.fields, field{
		line: int32(start), nameEnd: int32(start + colon),
		val0: int32(start + v0), val1: int32(start + v1), end: int32(end),
	})
	return false, ""
}

// framingInfo is what a head says about the body that follows.
type framingInfo struct {
	cl          int64 // -1: absent
	chunked     bool
	te          bool   // Transfer-Encoding present
	upgrade     string // Upgrade value
	connUpgrade bool   // Connection has the upgrade token
}

// bodyFraming applies RFC 9112 §6, rejecting whatever two servers could read
// differently.
func (p *Parser) bodyFraming() (framingInfo, string) {
	f := framingInfo{cl: -1}
	var cl []byte
	hasCL := false
	teFields, codings, chunkedCount := 0, 0, 0
	lastChunked := false
	var firstTE []byte
	for _, fd := range p.fields {
		name, val := p.buf[fd.line:fd.nameEnd], p.buf[fd.val0:fd.val1]
		switch len(name) { // most names are none of these: skip the compare
		case len("content-length"), len("transfer-encoding"), len("upgrade"), len("connection"):
		default:
			continue
		}
		switch {
		case equalFold(name, "content-length"):
			if !hasCL {
				cl, hasCL = val, true
			} else if !bytes.Equal(cl, val) {
				return f, fmt.Sprintf("differing Content-Length values %s and %s", quote(cl), quote(val))
			}
		case equalFold(name, "transfer-encoding"):
			f.te = true
			if teFields++; teFields == 1 {
				firstTE = val
			}
			forEachElement(val, func(el []byte) {
				codings++
				lastChunked = equalFold(el, "chunked")
				if lastChunked {
					chunkedCount++
				}
			})
		case equalFold(name, "upgrade"):
			if f.upgrade == "" {
				f.upgrade = string(val)
			}
		case equalFold(name, "connection"):
			forEachElement(val, func(el []byte) {
				if equalFold(el, "upgrade") {
					f.connUpgrade = true
				}
			})
		}
	}
	if f.te && hasCL {
		return f, "both Transfer-Encoding and Content-Length"
	}
	if f.te {
		if p.buf[p.sl.versionStart+7] == '0' {
			// RFC 9112 §6.1: faulty framing, whatever else the head says.
			return f, "Transfer-Encoding in an HTTP/1.0 message"
		}
		if p.request {
			// Servers answer 501 to codings they do not know; only plain
			// chunked is read the same by everyone.
			if teFields > 1 {
				return f, "multiple Transfer-Encoding fields in request"
			}
			if !equalFold(firstTE, "chunked") {
				return f, fmt.Sprintf("unsupported Transfer-Encoding %s in request", quote(firstTE))
			}
		}
		switch {
		case codings == 0:
			return f, "empty Transfer-Encoding"
		case chunkedCount > 1 || chunkedCount == 1 && !lastChunked:
			return f, "chunked is not the final transfer coding"
		}
		// A response whose final coding is not chunked is read until close.
		f.chunked = lastChunked
	}
	if hasCL {
		n, ok := parseUint(cl)
		if !ok {
			return f, fmt.Sprintf("invalid Content-Length %s", quote(cl))
		}
		f.cl = n
	}
	return f, ""
}

// headDone handles a complete head; false means it consumed the rest of the
// piece (error) or the injector stopped.
func (p *Parser) headDone(h Handler, rest []byte) bool {
	f, bad := p.bodyFraming()
	if bad != "" {
		p.fail(h, "parse error: "+bad, rest)
		return false
	}
	if p.tap == nil {
		p.buildHead(f)
	}
	p.stats.Head += int64(len(p.buf))
	if p.tap != nil && !p.tap.head(p.buf) {
		p.state = sDead
		return false
	}
	p.bodySize, p.then = 0, ""
	if p.request {
		return p.requestDone(h, f)
	}
	return p.responseDone(h, f)
}

func (p *Parser) requestDone(h Handler, f framingInfo) bool {
	p.seq++
	p.ex = p.seq
	method := p.buf[:p.sl.methodEnd]
	connect := string(method) == "CONNECT"
	upgrade := !connect && f.upgrade != "" && f.connUpgrade
	e := pending{n: p.ex, head: string(method) == "HEAD", connect: connect}
	if upgrade {
		e.upgrade = f.upgrade
	}
	p.x.push(e)
	h.Head(p.ex, &p.head)
	p.buf = p.buf[:0]
	switch {
	case connect:
		// The client may send tunnel bytes before the answer arrives.
		h.End(p.ex, nil, 0)
		p.toRaw(h, "CONNECT tunnel")
		return true
	case upgrade:
		// Likewise the upgraded protocol may follow this request at once.
		p.then = "upgrade to " + f.upgrade
	}
	p.startBody(h, f)
	return true
}

func (p *Parser) responseDone(h Handler, f framingInfo) bool {
	code := p.sl.code
	if code/100 == 1 && code != 101 {
		// Interim: the final response to the same request follows.
		e, _ := p.x.front(false)
		p.ex = e.n
		h.Head(p.ex, &p.head)
		p.buf = p.buf[:0]
		p.end(h, nil)
		return true
	}
	e, _ := p.x.front(true)
	p.ex = e.n
	h.Head(p.ex, &p.head)
	p.buf = p.buf[:0]
	switch {
	case code == 101:
		up := f.upgrade
		if up == "" {
			up = e.upgrade // what was asked for
		}
		if up == "" {
			up = "unknown protocol"
		}
		p.then = "upgrade to " + up
		p.end(h, nil)
	case e.connect && code/100 == 2:
		p.then = "CONNECT tunnel"
		p.end(h, nil)
	case e.head || code == 204 || code == 304:
		p.end(h, nil)
	case !f.chunked && f.cl < 0:
		p.state = sBodyClose
	default:
		p.startBody(h, f)
	}
	return true
}

func (p *Parser) startBody(h Handler, f framingInfo) {
	switch {
	case f.chunked:
		p.state = sChunkLine
	case f.cl > 0:
		p.state, p.remain = sBody, f.cl
	default:
		p.end(h, nil)
	}
}

// buildHead fills p.head from buf: one string allocation per head, so the
// strings handed out stay valid after the call.
func (p *Parser) buildHead(f framingInfo) {
	s := string(p.buf)
	sl := &p.sl
	p.head = Head{
		Request:       p.request,
		Proto:         s[sl.versionStart : sl.versionStart+8],
		Chunked:       f.chunked,
		ContentLength: f.cl,
	}
	if p.request {
		p.head.Method = s[:sl.methodEnd]
		p.head.Target = s[sl.targetStart:sl.targetEnd]
	} else {
		p.head.Status = sl.code
		p.head.Reason = s[sl.reasonStart:sl.reasonEnd]
	}
	p.head.Headers = p.headers(s)
}

func (p *Parser) headers(s string) []Header {
	hs := p.hdrs[:0]
	for _, fd := range p.fields {
		hs = append(hs, Header{Name: s[fd.line:fd.nameEnd], Value: s[fd.val0:fd.val1]})
	}
	p.hdrs = hs
	return hs
}

func (p *Parser) end(h Handler, trailers []Header) {
	h.End(p.ex, trailers, p.bodySize)
	if p.then != "" {
		reason := p.then
		p.then = ""
		p.toRaw(h, reason)
		return
	}
	p.state = sStart
}

// body passes Content-Length or chunk data through as sub-slices.
func (p *Parser) body(h Handler, data []byte) int {
	n := len(data)
	if int64(n) > p.remain {
		n = int(p.remain)
	}
	p.remain -= int64(n)
	p.bodySize += int64(n)
	p.stats.Body += int64(n)
	h.Body(p.ex, data[:n])
	if p.remain == 0 {
		if p.state == sChunkData {
			p.state = sChunkEnd
		} else {
			p.end(h, nil)
		}
	}
	return n
}

// chunkLine reads a chunk-size line, buffering it only when it is split.
func (p *Parser) chunkLine(h Handler, data []byte) int {
	i := bytes.IndexByte(data, '\n')
	if i < 0 {
		if len(p.buf)+len(data) > maxChunkLine {
			p.fail(h, fmt.Sprintf("parse error: chunk-size line longer than %d bytes", maxChunkLine), data)
			return len(data)
		}
		p.buf = append(p.buf, data...)
		return len(data)
	}
	line, rest := data[:i+1], data
	if len(p.buf) > 0 {
		if len(p.buf)+i+1 > maxChunkLine {
			p.fail(h, fmt.Sprintf("parse error: chunk-size line longer than %d bytes", maxChunkLine), data)
			return len(data)
		}
		p.buf = append(p.buf, line...)
		line, rest = p.buf, data[i+1:]
	}
	size, bad := parseChunkLine(line)
	if bad != "" {
		p.fail(h, "parse error: "+bad, rest)
		return len(data)
	}
	p.framing(line)
	p.buf = p.buf[:0]
	if size == 0 {
		p.state = sTrailers
		p.line0, p.lines, p.fields = 0, 0, p.fields[:0]
	} else {
		p.state, p.remain = sChunkData, size
	}
	return i + 1
}

// parseChunkLine parses chunk-size [chunk-ext] CRLF. Bare LF is refused here
// (unlike in heads): chunk framing is where parsers that disagree on line
// ends get smuggled past.
func parseChunkLine(line []byte) (int64, string) {
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return 0, fmt.Sprintf("chunk-size line %s not ended by CRLF", quote(line))
	}
	l := line[:len(line)-2]
	var size int64
	i := 0
	for ; i < len(l); i++ {
		v := unhex(l[i])
		if v < 0 {
			break
		}
		if size > math.MaxInt64>>4 {
			return 0, fmt.Sprintf("chunk size %s too large", quote(l))
		}
		size = size<<4 | int64(v)
	}
	if i == 0 {
		return 0, fmt.Sprintf("invalid chunk size %s", quote(l))
	}
	ext := l[i:]
	for len(ext) > 0 && (ext[0] == ' ' || ext[0] == '\t') {
		ext = ext[1:]
	}
	if len(ext) > 0 && ext[0] != ';' {
		return 0, fmt.Sprintf("invalid chunk size %s", quote(l))
	}
	for _, c := range ext {
		if c == '\r' {
			return 0, "bare CR in chunk extension"
		}
		if c < ' ' && c != '\t' || c == 0x7f {
			return 0, fmt.Sprintf("unexpected byte %q in chunk extension", c)
		}
	}
	return size, ""
}

// chunkEnd expects the CRLF that ends chunk data.
func (p *Parser) chunkEnd(h Handler, data []byte) int {
	i, ok := 0, true
	for i < len(data) {
		c := data[i]
		if !p.cr {
			if ok = c == '\r'; !ok {
				break
			}
			p.cr = true
			i++
			continue
		}
		if ok = c == '\n'; ok {
			p.cr = false
			p.state = sChunkLine
			i++
		}
		break
	}
	if i > 0 {
		p.framing(data[:i])
	}
	if !ok {
		p.cr = false
		p.fail(h, "parse error: missing CRLF after chunk data", data[i:])
		return len(data)
	}
	return i
}

func (p *Parser) trailersDone(h Handler) {
	var trailers []Header
	if p.tap == nil && len(p.fields) > 0 {
		trailers = p.headers(string(p.buf))
	}
	p.stats.Framing += int64(len(p.buf))
	if p.tap != nil {
		p.tap.trailers(p.buf)
	}
	p.buf = p.buf[:0]
	p.end(h, trailers)
}
