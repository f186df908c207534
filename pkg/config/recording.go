package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/intransit/intransit/pkg/redact"
)

// Recording defaults and limits.
const (
	DefaultRecordingsDir  = "/var/lib/intransit/recordings"
	DefaultMaxSessionSize = Size(64 << 20)
	DefaultMaxTotalSize   = Size(1 << 30)
	// MinMaxSessionSize leaves room for the metadata, end and seal chunks.
	MinMaxSessionSize = Size(256 << 10)
	// MinRecordingKey is the shortest accepted HMAC key (recordings.keyFile).
	MinRecordingKey = 16

	RecordOff      = "off"
	RecordMetadata = "metadata"
	RecordFull     = "full"

	PodsAuto = "auto"
	PodsOn   = "on"
	PodsOff  = "off"
)

// headers an injected credential may not replace: they frame the request.
var framingHeaders = []string{"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "expect"}

func (c *Config) setRecordingDefaults() {
	setZero(&c.Recordings.Dir, DefaultRecordingsDir)
	setZero(&c.Recordings.MaxSessionSize, DefaultMaxSessionSize)
	setZero(&c.Recordings.MaxTotalSize, DefaultMaxTotalSize)
	setZero(&c.Recordings.OnError, OnErrorContinue)
	setZero(&c.Identity.Pods, PodsAuto)
	if c.Redaction.Headers == nil {
		c.Redaction.Headers = redact.DefaultHeaders()
	}
	if c.Redaction.JSONFields == nil {
		c.Redaction.JSONFields = redact.DefaultJSONFields()
	}
	if c.Redaction.Patterns == nil {
		c.Redaction.Patterns = redact.DefaultPatterns()
	}
	for i := range c.Rules {
		setZero(&c.Rules[i].Record, RecordOff)
	}
}

// RedactPolicy is the redaction section as the redactor takes it.
func (c *Config) RedactPolicy() redact.Policy {
	return redact.Policy{Headers: c.Redaction.Headers, JSONFields: c.Redaction.JSONFields, Patterns: c.Redaction.Patterns}
}

// Records reports whether any rule records sessions.
func (c *Config) Records() bool {
	for _, r := range c.Rules {
		if r.Record != RecordOff {
			return true
		}
	}
	return false
}

func (c *Config) checkRecordings(p *problems) {
	r := &c.Recordings
	if !filepath.IsAbs(r.Dir) {
		p.add("recordings.dir", "%q is not an absolute path", r.Dir)
	}
	if r.MaxSessionSize < MinMaxSessionSize {
		p.add("recordings.maxSessionSize", "%s is below the minimum %s", r.MaxSessionSize, MinMaxSessionSize)
	}
	if r.MaxTotalSize < r.MaxSessionSize {
		p.add("recordings.maxTotalSize", "%s is below recordings.maxSessionSize (%s)", r.MaxTotalSize, r.MaxSessionSize)
	}
	if r.OnError != OnErrorContinue && r.OnError != OnErrorClose {
		p.add("recordings.onError", "%q is not one of continue, close", r.OnError)
	}
	if r.KeyFile != "" {
		if key, err := readSmall(r.KeyFile); err != nil {
			p.addErr(fmt.Errorf("recordings.keyFile: %q: %w", r.KeyFile, err))
		} else if len(key) < MinRecordingKey {
			p.add("recordings.keyFile", "%q holds %d bytes; use at least %d random bytes", r.KeyFile, len(key), MinRecordingKey)
		}
		if filepath.IsAbs(r.Dir) && strings.HasPrefix(filepath.Clean(r.KeyFile), filepath.Clean(r.Dir)+string(filepath.Separator)) {
			p.add("recordings.keyFile", "%q is inside recordings.dir: keep the key away from what it protects", r.KeyFile)
		}
	}
	switch c.Identity.Pods {
	case PodsAuto, PodsOn, PodsOff:
	default:
		p.add("identity.pods", "%q is not one of auto, on, off", c.Identity.Pods)
	}
	if _, err := redact.New(c.RedactPolicy()); err != nil {
		p.add("redaction", "%v", err)
	}
	for k, h := range c.Redaction.Headers {
		if !validToken(h) {
			p.add(fmt.Sprintf("redaction.headers[%d]", k), "%q is not an HTTP header name", h)
		}
	}
}

// checkRecordInject validates rules[i].record and rules[i].inject.
func checkRecordInject(p *problems, key string, r *Rule) {
	switch r.Record {
	case RecordOff:
	case RecordMetadata, RecordFull:
		if r.Mode != ModeEnforce {
			p.add(key+".record", "%q needs mode enforce (%s connections are not proxied, so there is nothing to record)", r.Record, r.Mode)
		}
	default:
		p.add(key+".record", "%q is not one of off, metadata, full", r.Record)
	}
	in := r.Inject
	if in == nil {
		return
	}
	if r.Mode != ModeEnforce {
		p.add(key+".inject", "needs mode enforce (%s connections are not proxied)", r.Mode)
	}
	switch {
	case in.Header == "":
		p.add(key+".inject.header", "required, e.g. Authorization")
	case !validToken(in.Header):
		p.add(key+".inject.header", "%q is not an HTTP header name", in.Header)
	case slices.Contains(framingHeaders, strings.ToLower(in.Header)):
		p.add(key+".inject.header", "%q frames the request and cannot be injected", in.Header)
	}
	if in.ValueFile == "" {
		p.add(key+".inject.valueFile", "required: a file holding the header value")
		return
	}
	v, err := readSmall(in.ValueFile)
	switch {
	case err != nil:
		p.addErr(fmt.Errorf("%s.inject.valueFile: %q: %w", key, in.ValueFile, err))
	case strings.TrimSpace(string(v)) == "":
		p.add(key+".inject.valueFile", "%q is empty", in.ValueFile)
	case strings.ContainsAny(strings.TrimRight(string(v), "\r\n"), "\r\n\x00"):
		p.add(key+".inject.valueFile", "%q holds more than one line: a header value is one line", in.ValueFile)
	}
}

// validToken reports whether s is an RFC 9110 token (header names).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
