package transcript

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/intransit/intransit/pkg/recording"
	"github.com/intransit/intransit/pkg/version"
)

// ErrNoHTTP is returned (wrapped) by HAR for a session without HTTP
// exchanges.
var ErrNoHTTP = errors.New("no HTTP exchanges")

// HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/). Custom fields
// start with an underscore, as the spec requires.
type harFile struct {
	Log harLog `json:"log"`
}

type harLog struct {
	Version string     `json:"version"`
	Creator harCreator `json:"creator"`
	Entries []harEntry `json:"entries"`
	Comment string     `json:"comment,omitempty"`
}

type harCreator struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type harEntry struct {
	StartedDateTime string      `json:"startedDateTime"`
	Time            float64     `json:"time"`
	Request         harRequest  `json:"request"`
	Response        harResponse `json:"response"`
	Cache           struct{}    `json:"cache"`
	Timings         harTimings  `json:"timings"`
	ServerIPAddress string      `json:"serverIPAddress,omitempty"`
	Connection      string      `json:"connection,omitempty"`
	Comment         string      `json:"comment,omitempty"`
}

type harRequest struct {
	Method      string       `json:"method"`
	URL         string       `json:"url"`
	HTTPVersion string       `json:"httpVersion"`
	Cookies     []harCookie  `json:"cookies"`
	Headers     []harNV      `json:"headers"`
	QueryString []harNV      `json:"queryString"`
	PostData    *harPostData `json:"postData,omitempty"`
	HeadersSize int64        `json:"headersSize"`
	BodySize    int64        `json:"bodySize"`
	Trailers    []harNV      `json:"_trailers,omitempty"`
	Comment     string       `json:"comment,omitempty"`
}

type harResponse struct {
	Status      int         `json:"status"`
	StatusText  string      `json:"statusText"`
	HTTPVersion string      `json:"httpVersion"`
	Cookies     []harCookie `json:"cookies"`
	Headers     []harNV     `json:"headers"`
	Content     harContent  `json:"content"`
	RedirectURL string      `json:"redirectURL"`
	HeadersSize int64       `json:"headersSize"`
	BodySize    int64       `json:"bodySize"`
	Trailers    []harNV     `json:"_trailers,omitempty"`
	Comment     string      `json:"comment,omitempty"`
}

type harNV struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type harCookie struct {
	Name     string `json:"name"`
	Value    string `json:"value"`
	Path     string `json:"path,omitempty"`
	Domain   string `json:"domain,omitempty"`
	Expires  string `json:"expires,omitempty"`
	HTTPOnly bool   `json:"httpOnly,omitempty"`
	Secure   bool   `json:"secure,omitempty"`
}

type harPostData struct {
	MimeType string  `json:"mimeType"`
	Params   []harNV `json:"params,omitempty"`
	Text     string  `json:"text"`
	Encoding string  `json:"_encoding,omitempty"` // HAR 1.2 has no encoding for postData
	Comment  string  `json:"comment,omitempty"`
}

type harContent struct {
	Size     int64  `json:"size"`
	MimeType string `json:"mimeType"`
	Text     string `json:"text,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	Comment  string `json:"comment,omitempty"`
}

type harTimings struct {
	Send    float64 `json:"send"`
	Wait    float64 `json:"wait"`
	Receive float64 `json:"receive"`
}

// harTime is HAR's ISO 8601 with milliseconds.
const harTime = "2006-01-02T15:04:05.000Z07:00"

// HAR exports the session's HTTP exchanges as a HAR 1.2 log. Sessions
// without HTTP (raw, metadata-only) are an error wrapping ErrNoHTTP.
func HAR(t *Transcript) ([]byte, error) {
	f := harFile{Log: harLog{
		Version: "1.2",
		Creator: harCreator{Name: "intransit", Version: version.Version},
		Entries: []harEntry{},
		Comment: sessionComment(t),
	}}
	for _, ex := range t.Exchanges {
		if ex.Request == nil {
			continue // a response without its request cannot be an entry
		}
		f.Log.Entries = append(f.Log.Entries, harExchange(t, ex))
	}
	if len(f.Log.Entries) == 0 {
		return nil, fmt.Errorf("session %s has %w: export it as pcapng or json", t.Meta.ID, ErrNoHTTP)
	}
	b, err := marshal(f)
	if err != nil {
		return nil, fmt.Errorf("session %s: HAR: %w", t.Meta.ID, err)
	}
	return b, nil
}

// marshal is indented JSON without HTML escaping (bodies stay readable).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// sessionComment says which session a log is and whether to trust it.
func sessionComment(t *Transcript) string {
	s := fmt.Sprintf("intransit session %s (rule %s), recording %s", t.Meta.ID, t.Meta.Rule, statusOrUnknown(t.Status))
	if t.Status != StatusSealed {
		s += ": " + statusWarning(t.Status)
	}
	if len(t.Problems) > 0 {
		s += "; problems: " + strings.Join(t.Problems, "; ")
	}
	return s
}

func harExchange(t *Transcript, ex *Exchange) harEntry {
	req := ex.Request
	e := harEntry{
		StartedDateTime: req.Start.Format(harTime),
		Request:         harReq(t, req),
		ServerIPAddress: hostIP(t.Meta.Destination),
		Connection:      portOf(t.Meta.Source),
	}
	comments := []string{fmt.Sprintf("intransit session %s, exchange %d", t.Meta.ID, ex.N)}
	if !req.Complete {
		comments = append(comments, "request incomplete")
	}
	for _, m := range ex.Interim {
		comments = append(comments, fmt.Sprintf("interim response %d %s", m.Head.Status, m.Head.Reason))
	}
	if resp := ex.Response; resp != nil {
		e.Response = harResp(ex, resp)
		if !resp.Complete {
			comments = append(comments, "response incomplete")
		}
		e.Timings = harTimings{
			Send:    ms(req.End.Sub(req.Start)),
			Wait:    ms(resp.Start.Sub(req.End)),
			Receive: ms(resp.End.Sub(resp.Start)),
		}
	} else {
		// HAR requires a response: status 0 is what browsers write for a
		// request that got none.
		e.Response = harResponse{
			Cookies: []harCookie{}, Headers: []harNV{}, HeadersSize: -1, BodySize: -1,
			Comment: "no response recorded",
		}
		e.Timings = harTimings{Send: ms(req.End.Sub(req.Start))}
		comments = append(comments, "no response recorded")
	}
	e.Time = round3(e.Timings.Send + e.Timings.Wait + e.Timings.Receive)
	e.Comment = strings.Join(comments, "; ")
	return e
}

func harReq(t *Transcript, m *Message) harRequest {
	h := m.Head
	r := harRequest{
		Method:      h.Method,
		URL:         requestURL(t.Meta, h),
		HTTPVersion: h.Proto,
		Cookies:     []harCookie{},
		Headers:     harHeaders(h.Headers),
		QueryString: query(h.Target),
		HeadersSize: headSize(h),
		BodySize:    bodySize(m),
		Trailers:    trailers(m.Trailers),
	}
	for _, hd := range h.Headers {
		if strings.EqualFold(hd.Name, "Cookie") {
			r.Cookies = append(r.Cookies, requestCookies(hd.Value)...)
		}
	}
	if len(m.Body) > 0 {
		ct := header(h.Headers, "Content-Type")
		pd := &harPostData{MimeType: ct}
		pd.Text, pd.Encoding = encodeBody(m.Body)
		if pd.Encoding != "" {
			pd.Comment = "binary body, base64-encoded"
		} else if mediaType(ct) == "application/x-www-form-urlencoded" {
			pd.Params = parsePairs(string(m.Body))
		}
		if c := redactionComment(m); c != "" {
			pd.Comment = strings.TrimPrefix(pd.Comment+"; "+c, "; ")
		}
		r.PostData = pd
	}
	return r
}

func harResp(ex *Exchange, m *Message) harResponse {
	h := m.Head
	r := harResponse{
		Status:      h.Status,
		StatusText:  h.Reason,
		HTTPVersion: h.Proto,
		Cookies:     []harCookie{},
		Headers:     harHeaders(h.Headers),
		RedirectURL: header(h.Headers, "Location"),
		HeadersSize: headSize(h),
		BodySize:    bodySize(m),
		Trailers:    trailers(m.Trailers),
	}
	if bodyless(ex, m) {
		r.BodySize = 0
	}
	for _, hd := range h.Headers {
		if strings.EqualFold(hd.Name, "Set-Cookie") {
			if c, ok := setCookie(hd.Value); ok {
				r.Cookies = append(r.Cookies, c)
			}
		}
	}
	r.Content = harContent{Size: m.BodySize, MimeType: header(h.Headers, "Content-Type")}
	if len(m.Body) > 0 {
		r.Content.Text, r.Content.Encoding = encodeBody(m.Body)
	}
	r.Content.Comment = redactionComment(m)
	return r
}

// redactionComment explains a recorded body shorter or longer than the
// wire's: redaction rewrote it, or recording stopped (session cap).
func redactionComment(m *Message) string {
	if int64(len(m.Body)) == m.BodySize {
		return ""
	}
	return fmt.Sprintf("recorded body is %d bytes of %d on the wire (redacted or cut short)", len(m.Body), m.BodySize)
}

func bodySize(m *Message) int64 {
	if !m.Complete {
		return -1
	}
	return m.BodySize
}

func harHeaders(hs []recording.Header) []harNV {
	out := make([]harNV, 0, len(hs))
	for _, h := range hs {
		out = append(out, harNV{Name: h.Name, Value: h.Value})
	}
	return out
}

func trailers(hs []recording.Header) []harNV {
	if len(hs) == 0 {
		return nil
	}
	return harHeaders(hs)
}

// headSize is the size of the head as re-serialised from the recorded
// (possibly redacted) fields: exact unless redaction changed a value.
func headSize(h recording.HTTPHead) int64 {
	var n int
	if h.Request {
		n = len(h.Method) + 1 + len(h.Target) + 1 + len(h.Proto) + 2
	} else {
		n = len(h.Proto) + 1 + 3 + 1 + len(h.Reason) + 2
	}
	for _, hd := range h.Headers {
		n += len(hd.Name) + 2 + len(hd.Value) + 2
	}
	return int64(n + 2)
}

// requestURL is the absolute URL the workload asked for: absolute-form
// targets as they are, else http:// + Host (or the original destination)
// + target.
func requestURL(meta recording.Meta, h recording.HTTPHead) string {
	target := h.Target
	if u, err := url.Parse(target); err == nil && u.Scheme != "" && u.Host != "" {
		return target
	}
	host := header(h.Headers, "Host")
	if host == "" {
		host = meta.Destination
		if ap, err := netip.ParseAddrPort(host); err == nil && ap.Port() == 80 {
			host = hostIP(host)
			if ap.Addr().Unmap().Is6() {
				host = "[" + host + "]"
			}
		}
	}
	switch {
	case h.Method == "CONNECT":
		return "http://" + target // authority-form: host:port
	case target == "*":
		return "http://" + host // asterisk-form (OPTIONS *) names no path
	case !strings.HasPrefix(target, "/"):
		target = "/" + target
	}
	return "http://" + host + target
}

// query returns the target's query parameters in order, unescaped where
// they decode.
func query(target string) []harNV {
	_, q, ok := strings.Cut(target, "?")
	if !ok {
		return []harNV{}
	}
	q, _, _ = strings.Cut(q, "#")
	return parsePairs(q)
}

// parsePairs splits application/x-www-form-urlencoded text, keeping order
// and duplicates (url.ParseQuery keeps neither).
func parsePairs(s string) []harNV {
	out := []harNV{}
	for _, p := range strings.Split(s, "&") {
		if p == "" {
			continue
		}
		k, v, _ := strings.Cut(p, "=")
		out = append(out, harNV{Name: unescape(k), Value: unescape(v)})
	}
	return out
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// requestCookies parses a Cookie header leniently: a redacted value such
// as "[REDACTED]" is not a valid cookie-value but must still be shown.
func requestCookies(v string) []harCookie {
	var out []harCookie
	for _, p := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || k == "" {
			continue
		}
		out = append(out, harCookie{Name: k, Value: val})
	}
	return out
}

// setCookie parses a Set-Cookie header leniently (see requestCookies).
func setCookie(v string) (harCookie, bool) {
	parts := strings.Split(v, ";")
	k, val, ok := strings.Cut(strings.TrimSpace(parts[0]), "=")
	if !ok || k == "" {
		return harCookie{}, false
	}
	c := harCookie{Name: k, Value: val}
	for _, a := range parts[1:] {
		an, av, _ := strings.Cut(strings.TrimSpace(a), "=")
		switch strings.ToLower(an) {
		case "path":
			c.Path = av
		case "domain":
			c.Domain = av
		case "expires":
			if tm, err := http.ParseTime(av); err == nil {
				c.Expires = tm.UTC().Format(harTime)
			}
		case "httponly":
			c.HTTPOnly = true
		case "secure":
			c.Secure = true
		}
	}
	return c, true
}

func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// hostIP is the address of an ip:port without the port, or "".
func hostIP(addrPort string) string {
	ap, err := netip.ParseAddrPort(addrPort)
	if err != nil {
		return ""
	}
	return ap.Addr().Unmap().String()
}

// portOf is the port of an ip:port, or "".
func portOf(addrPort string) string {
	ap, err := netip.ParseAddrPort(addrPort)
	if err != nil {
		return ""
	}
	return strconv.Itoa(int(ap.Port()))
}

// ms is a duration in milliseconds (µs precision), never negative: clocks
// of the two directions are the same host's, but a response may start
// before the request is fully sent.
func ms(d time.Duration) float64 {
	if d < 0 {
		return 0
	}
	return round3(float64(d) / float64(time.Millisecond))
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }
