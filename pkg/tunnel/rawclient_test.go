package tunnel

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawClient speaks HTTP/2 frame by frame, to do what a well-behaved client
// never would.
type rawClient struct {
	tc *tls.Conn
	fr *http2.Framer

	wmu  sync.Mutex // frames and the hpack encoder's state
	henc *hpack.Encoder
	hbuf bytes.Buffer

	done      chan struct{} // closed when the read loop ends
	goAwayCh  chan struct{} // closed on the first GOAWAY
	resets    atomic.Int64  // RST_STREAM frames received
	goAway    atomic.Value  // http2.ErrCode of a GOAWAY received
	statusMu  sync.Mutex
	statuses  map[uint32]string // :status per stream
	readError error
}

func dialRaw(t testing.TB, addr netip.AddrPort, cfg *tls.Config) *rawClient {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"}
	tc, err := tls.Dial("tcp", addr.String(), cfg)
	if err != nil {
		t.Fatalf("raw dial: %v", err)
	}
	c := &rawClient{tc: tc, fr: http2.NewFramer(tc, tc), done: make(chan struct{}), goAwayCh: make(chan struct{}), statuses: make(map[uint32]string)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatalf("preface: %v", err)
	}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatalf("settings: %v", err)
	}
	go c.readLoop()
	t.Cleanup(func() {
		_ = tc.Close()
		<-c.done
	})
	return c
}

func (c *rawClient) readLoop() {
	defer close(c.done)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.readError = err
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.write(func() error { return c.fr.WriteSettingsAck() })
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				c.write(func() error { return c.fr.WritePing(true, f.Data) })
			}
		case *http2.RSTStreamFrame:
			c.resets.Add(1)
		case *http2.GoAwayFrame:
			if c.goAway.Swap(f.ErrCode) == nil {
				close(c.goAwayCh)
			}
		case *http2.MetaHeadersFrame:
			c.statusMu.Lock()
			c.statuses[f.StreamID] = f.PseudoValue("status")
			c.statusMu.Unlock()
		}
	}
}

// write runs one framer write; errors surface in the read loop.
func (c *rawClient) write(f func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return f()
}

// headerBlock encodes a CONNECT to authority with extra fields.
func (c *rawClient) headerBlock(authority string, extra ...hpack.HeaderField) []byte {
	c.hbuf.Reset()
	_ = c.henc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	_ = c.henc.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
	for _, f := range extra {
		_ = c.henc.WriteField(f)
	}
	return bytes.Clone(c.hbuf.Bytes())
}

// open sends a CONNECT on stream id; the body stays open.
func (c *rawClient) open(id uint32, authority string) error {
	return c.write(func() error {
		return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.headerBlock(authority), EndHeaders: true})
	})
}

// openAndReset sends a CONNECT and cancels it at once: one rapid-reset step.
func (c *rawClient) openAndReset(id uint32, authority string) error {
	return c.write(func() error {
		err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.headerBlock(authority), EndHeaders: true})
		if err == nil {
			err = c.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
		return err
	})
}

func (c *rawClient) status(id uint32) string {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	return c.statuses[id]
}

func (c *rawClient) goAwayCode() (http2.ErrCode, bool) {
	code, ok := c.goAway.Load().(http2.ErrCode)
	return code, ok
}

// closed reports whether the server ended the connection, or announced it
// would with GOAWAY, within d.
func (c *rawClient) closed(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-c.goAwayCh:
		return true
	case <-time.After(d):
		return false
	}
}
