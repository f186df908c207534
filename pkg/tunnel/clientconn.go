//lint:file-ignore SA1019 x/net marks its http2 API deprecated in favour of net/http (moving in Go 1.27); net/http has no way to run HTTP/2 over a connection we dialed ourselves.

package tunnel

import (
	"crypto/tls"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// pconn is one pooled HTTP/2 connection to a peer. cc and the fields after
// it are guarded by the pool's mutex.
type pconn struct {
	p       *pool
	tc      *tls.Conn
	cc      *http2.ClientConn
	streams int  // open streams, counted by Dial and stream Close
	retired bool // takes no new streams (GOAWAY); closed when streams reach 0
	dead    bool // the connection is closed
	single  bool // SingleUse: carries one stream, closed when it is released
}

// forceCloseAfter matches x/net's own bound on a close_notify that a stalled
// peer does not take.
const forceCloseAfter = 250 * time.Millisecond

// trackedConn is what x/net gets as its connection: every way a ClientConn
// dies (PING timeout, read error, drained GOAWAY, idle timeout, Close) ends
// in Close, which tells the pool at once, before the streams even notice.
type trackedConn struct {
	*tls.Conn
	once    sync.Once
	onClose func()
}

func (c *trackedConn) Close() error {
	if c.onClose != nil {
		c.once.Do(c.onClose)
	}
	// x/net only force-closes a *tls.Conn it can see, so do it here: the
	// close_notify can block on a peer that stopped reading.
	t := time.AfterFunc(forceCloseAfter, func() { _ = c.Conn.NetConn().Close() })
	defer t.Stop()
	return c.Conn.Close()
}
