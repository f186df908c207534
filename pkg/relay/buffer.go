package relay

import (
	"crypto/tls"
	"net"
	"sync"
)

const (
	// plainBufSize: one read from a plain socket fills 8 TLS records, sent
	// with one write(2) through BatchConn. Only active connections hold it:
	// an idle plain side gives its buffer back (see waiter).
	plainBufSize = 128 << 10
	// tlsBufSize fits the largest TLS record plaintext (2^14 bytes), which
	// is the most tls.Conn.Read returns per call; more would sit unused.
	tlsBufSize = 16 << 10
	// smallBufSize is what a TLS source blocks on while idle (see copy).
	smallBufSize = 2 << 10
)

// The pools are package-level because Relay is a plain function and buffers
// must be shared across relays to be reused at all; sync.Pool is safe for
// concurrent use and holds no observable state.
var (
	plainBufs = newPool(plainBufSize)
	smallBufs = newPool(smallBufSize)
	tlsBufs   = newPool(tlsBufSize)
)

func newPool(size int) *sync.Pool {
	return &sync.Pool{New: func() any {
		b := make([]byte, size)
		return &b // pointer: storing a slice in an interface would allocate
	}}
}

// poolFor picks the buffer size class for reading from src.
func poolFor(src net.Conn) *sync.Pool {
	if _, ok := src.(*tls.Conn); ok {
		return tlsBufs
	}
	return plainBufs
}
