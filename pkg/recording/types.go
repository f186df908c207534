// Package recording is the on-disk session recording format: an append-only
// file of chunks, each chained to the previous by a SHA-256 (or keyed
// HMAC-SHA256) hash, closed by a seal, plus the store that bounds disk use.
// The format is documented in docs/recording-format.md.
package recording

import (
	"time"

	"github.com/intransit/intransit/pkg/audit"
)

// Kind is a chunk's type.
type Kind uint8

// Chunk kinds. Numbers are part of the on-disk format: never reuse one.
const (
	KindMeta     Kind = 1 // JSON Meta, always the first chunk
	KindData     Kind = 2 // raw stream bytes (already redacted) for Dir
	KindHTTPHead Kind = 3 // JSON HTTPHead: a request or response head
	KindHTTPBody Kind = 4 // decoded (de-chunked), redacted body bytes of Exchange in Dir
	KindHTTPEnd  Kind = 5 // JSON HTTPEnd: the message of Exchange in Dir is complete
	KindNote     Kind = 6 // JSON Note: something about the recording itself
	KindEnd      Kind = 7 // JSON End: session end metadata
	KindSeal     Kind = 8 // JSON Seal; always the last chunk of a finished recording
)

// Dir is the direction of stream bytes.
type Dir uint8

// Directions.
const (
	DirNone           Dir = 0
	DirClientToServer Dir = 1 // what the workload sent (after credential injection)
	DirServerToClient Dir = 2 // what the upstream answered
)

// Chunk is one record of a recording file.
type Chunk struct {
	Seq      uint64    // 0 for the Meta chunk, then +1 each
	Time     time.Time // when the bytes were seen (nanosecond precision)
	Kind     Kind
	Dir      Dir
	Exchange uint32 // HTTP exchange number, from 1; 0 when not HTTP
	Payload  []byte
}

// Record levels (rules[].record).
const (
	LevelOff      = "off"
	LevelMetadata = "metadata"
	LevelFull     = "full"
)

// Meta is the session's metadata written when it starts.
type Meta struct {
	ID          string          `json:"id"`
	Start       time.Time       `json:"start"`
	Rule        string          `json:"rule"`
	Level       string          `json:"level"` // metadata or full
	Node        string          `json:"node,omitempty"`
	Source      string          `json:"source"`      // client ip:port
	Destination string          `json:"destination"` // original destination ip:port
	Upstream    string          `json:"upstream"`    // ip:port or tunnel://peer
	Process     *audit.Process  `json:"process,omitempty"`
	TLS         *audit.TLSInfo  `json:"tls,omitempty"`
	Identity    *audit.Identity `json:"identity,omitempty"` // token subject presented
	// PeerCertificate is the upstream's leaf certificate, PEM.
	PeerCertificate string        `json:"peer_certificate,omitempty"`
	Verdict         audit.Verdict `json:"verdict"`
	// Redaction says what was redacted before anything was written.
	Redaction *RedactionInfo `json:"redaction,omitempty"`
}

// RedactionInfo records the redaction policy in force.
type RedactionInfo struct {
	Headers    []string `json:"headers"`
	JSONFields []string `json:"json_fields"`
	Patterns   []string `json:"patterns"`
}

// End is the session's end metadata.
type End struct {
	End           time.Time     `json:"end"`
	BytesSent     int64         `json:"bytes_sent"`     // client -> upstream
	BytesReceived int64         `json:"bytes_received"` // upstream -> client
	Verdict       audit.Verdict `json:"verdict"`
	Reason        string        `json:"reason,omitempty"`
	// Truncated is set when the per-session cap stopped stream recording.
	Truncated bool `json:"truncated,omitempty"`
}

// Header is one header line as received (name case kept), value redacted
// where the policy says so.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HTTPHead is a request or response head.
type HTTPHead struct {
	Request bool     `json:"request"`
	Method  string   `json:"method,omitempty"` // requests
	Target  string   `json:"target,omitempty"` // requests: request-target as sent
	Proto   string   `json:"proto"`            // HTTP/1.1
	Status  int      `json:"status,omitempty"` // responses
	Reason  string   `json:"reason,omitempty"` // responses
	Headers []Header `json:"headers"`
	// Chunked: the body was sent with chunked transfer coding (the
	// recorded body chunks are decoded).
	Chunked bool `json:"chunked,omitempty"`
}

// HTTPEnd closes one message.
type HTTPEnd struct {
	BodySize int64    `json:"body_size"` // decoded body bytes seen on the wire (before redaction)
	Trailers []Header `json:"trailers,omitempty"`
}

// Note is something about the recording itself (cap reached, parser fell
// back to raw, write error recovered...).
type Note struct {
	Code    string `json:"code"` // e.g. session_cap, http_parse_error
	Message string `json:"message"`
}

// Note codes.
const (
	NoteSessionCap     = "session_cap"      // per-session cap reached: stream bytes no longer recorded
	NoteHTTPParseError = "http_parse_error" // the stream stopped parsing as HTTP/1.x; the rest is raw
	NoteUpgrade        = "upgrade"          // the connection switched protocols; the rest is raw
	NoteStoreFull      = "store_full"       // the total cap was reached at Finish: buffered chunks were dropped
)

// Seal closes a recording: chunk count (including the seal) and payload
// bytes. Its chunk hash is the chain's final value.
type Seal struct {
	Chunks uint64 `json:"chunks"`
	Bytes  int64  `json:"bytes"` // file size before the seal chunk
}
