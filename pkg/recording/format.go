package recording

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"time"
)

// On-disk constants. Changing any of them changes the format: bump the
// version byte in Magic instead.
const (
	// Magic opens every recording file: "ITREC", a NUL, the format version
	// (1) and a newline (so a text-mode transfer that mangles newlines
	// breaks the magic instead of the chain).
	Magic = "ITREC\x00\x01\n"
	// FormatVersion is Magic[6].
	FormatVersion = 1

	// HeaderSize is the fixed chunk header: payload length u32, kind u8,
	// dir u8, flags u16, seq u64, time i64 (unix nanoseconds), exchange
	// u32, all big-endian.
	HeaderSize = 28
	// MACSize is the chain value that follows every payload.
	MACSize = sha256.Size
	// MaxPayload bounds one chunk's payload so that a corrupt length cannot
	// make a reader allocate gigabytes. Writers split larger data.
	MaxPayload = 16 << 20

	// FlagKeyed is set on every chunk of a recording whose chain is
	// HMAC-SHA256 with a key; clear on every chunk of an unkeyed (SHA-256)
	// one. Other flag bits are reserved and must be zero.
	FlagKeyed uint16 = 0x0001

	// EndReserve is kept free below the per-session cap, and reserved in
	// the store per open writer, so that End and Seal (and a store-full
	// Note) always fit.
	EndReserve = 8 << 10
	// SessionReserve is kept free below the per-session cap for stream
	// chunks: data, HTTP heads, bodies and ends stop at MaxSessionBytes -
	// SessionReserve, Notes at MaxSessionBytes - EndReserve, so the Note
	// that says the cap was reached still fits.
	SessionReserve = 16 << 10
	// MinSessionBytes is the smallest per-session cap accepted.
	MinSessionBytes = 64 << 10

	// maxReason bounds End.Reason so that End fits in EndReserve.
	maxReason = 1 << 10
	// minKeyLen: an HMAC key shorter than this is a configuration mistake.
	minKeyLen = 16

	idLen     = 16
	fileExt   = ".rec"
	indexName = "index.log"
)

// Errors callers test for with errors.Is.
var (
	// ErrSessionCap: the chunk would take the recording over the per-session
	// cap; nothing was written for it. Stream chunks are refused from then
	// on; a Note still fits, and so do End and Seal.
	ErrSessionCap = errors.New("per-session recording cap reached")
	// ErrStoreFull: the total cap is reached and only open recordings are
	// left to evict.
	ErrStoreFull = errors.New("recordings store full")
	// ErrInvalidID: a recording id is not 16 lowercase hex digits.
	ErrInvalidID = errors.New("invalid recording id (want 16 lowercase hex digits)")
	// ErrClosed: the writer was finished or abandoned.
	ErrClosed = errors.New("recording writer closed")
	// ErrChunkTooLarge: a payload exceeds MaxPayload.
	ErrChunkTooLarge = errors.New("chunk payload exceeds MaxPayload")
)

// ValidID reports whether id is a well-formed recording id. Every function
// that turns an id into a path checks it first, so "../../etc/passwd"
// never reaches the file system.
func ValidID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// chunkSize is the on-disk size of a chunk with n payload bytes.
func chunkSize(n int) int64 { return int64(HeaderSize + n + MACSize) }

// header is a decoded chunk header.
type header struct {
	length   uint32
	kind     Kind
	dir      Dir
	flags    uint16
	seq      uint64
	time     int64
	exchange uint32
}

func putHeader(b []byte, h header) {
	_ = b[HeaderSize-1]
	binary.BigEndian.PutUint32(b[0:], h.length)
	b[4] = byte(h.kind)
	b[5] = byte(h.dir)
	binary.BigEndian.PutUint16(b[6:], h.flags)
	binary.BigEndian.PutUint64(b[8:], h.seq)
	binary.BigEndian.PutUint64(b[16:], uint64(h.time))
	binary.BigEndian.PutUint32(b[24:], h.exchange)
}

func parseHeader(b []byte) header {
	_ = b[HeaderSize-1]
	return header{
		length:   binary.BigEndian.Uint32(b[0:]),
		kind:     Kind(b[4]),
		dir:      Dir(b[5]),
		flags:    binary.BigEndian.Uint16(b[6:]),
		seq:      binary.BigEndian.Uint64(b[8:]),
		time:     int64(binary.BigEndian.Uint64(b[16:])),
		exchange: binary.BigEndian.Uint32(b[24:]),
	}
}

// unixTime converts a header time back; UTC so that two reads compare equal
// whatever the reader's zone.
func unixTime(ns int64) time.Time { return time.Unix(0, ns).UTC() }

// chain computes chain values: SHA-256, or HMAC-SHA256 when keyed.
type chain struct {
	h     hash.Hash
	keyed bool
	sum   []byte // scratch for Sum
}

func newChain(key []byte) *chain {
	if len(key) > 0 {
		return &chain{h: hmac.New(sha256.New, key), keyed: true}
	}
	return &chain{h: sha256.New()}
}

// seed is MAC_{-1} = H(Magic || id): binds the chain to this format
// version and to the recording id (the file name), so a valid file renamed
// to another id fails at chunk 0.
func (c *chain) seed(id string) (out [MACSize]byte) {
	c.h.Reset()
	c.h.Write([]byte(Magic))
	c.h.Write([]byte(id))
	c.h.Sum(out[:0])
	return out
}

// next is MAC_i = H(MAC_{i-1} || header_i || payload_i).
func (c *chain) next(prev *[MACSize]byte, hdr, payload []byte) (out [MACSize]byte) {
	c.h.Reset()
	c.h.Write(prev[:])
	c.h.Write(hdr)
	c.h.Write(payload)
	// Sum into the chain's scratch: out[:0] would escape and cost an
	// allocation per chunk.
	c.sum = c.h.Sum(c.sum[:0])
	copy(out[:], c.sum)
	return out
}
