package relay

import (
	"crypto/tls"
	"net"
	"sync"
)

// BatchConn sits under a tls.Conn and lets the relay turn the several TLS
// records of one large plaintext write into one write(2): crypto/tls issues
// a syscall per 16 KiB record, and on loopback-heavy paths those syscalls,
// not the bytes, dominate. Outside a batch, writes go straight through, so
// handshakes, alerts and close_notify are never delayed.
type BatchConn struct {
	net.Conn

	mu       sync.Mutex
	batching bool
	buf      *[]byte // from batchBufs while batching
}

// NewBatchConn wraps c; pass the result to tls.Client.
func NewBatchConn(c net.Conn) *BatchConn { return &BatchConn{Conn: c} }

// batchBufs holds a batch: the plain read buffer plus TLS record overhead.
var batchBufs = newPool(plainBufSize + plainBufSize/8)

// Write buffers during a batch, else writes through.
func (b *BatchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.batching {
		*b.buf = append(*b.buf, p...)
		b.mu.Unlock()
		return len(p), nil
	}
	b.mu.Unlock()
	return b.Conn.Write(p)
}

func (b *BatchConn) begin() {
	b.mu.Lock()
	b.batching = true
	b.buf = batchBufs.Get().(*[]byte)
	*b.buf = (*b.buf)[:0]
	b.mu.Unlock()
}

// flush ends the batch with one write of everything buffered.
func (b *BatchConn) flush() error {
	b.mu.Lock()
	buf := b.buf
	b.batching, b.buf = false, nil
	b.mu.Unlock()
	var err error
	if len(*buf) > 0 {
		_, err = b.Conn.Write(*buf)
	}
	batchBufs.Put(buf)
	return err
}

// batcherOf returns the BatchConn under a TLS destination, if any.
func batcherOf(dst net.Conn) *BatchConn {
	if tc, ok := dst.(*tls.Conn); ok {
		if bc, ok := tc.NetConn().(*BatchConn); ok {
			return bc
		}
	}
	return nil
}

// CloseWrite half-closes the underlying connection (after close_notify).
func (b *BatchConn) CloseWrite() error {
	if cw, ok := b.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return b.Conn.Close()
}

// NetConn returns the wrapped connection (socket options, tests).
func (b *BatchConn) NetConn() net.Conn { return b.Conn }
