package tunnel

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
)

// benchServer serves three targets: "sink" reads to EOF, "source" writes the
// number of bytes given in the X-Bytes header, "close" ends at the client's
// END_STREAM.
func benchServer(b *testing.B) (*Client, netip.AddrPort) {
	b.Helper()
	pki := newTestPKI(b)
	bufs := sync.Pool{New: func() any { return new([32 << 10]byte) }} // what pkg/relay moves at a time
	_, addr := startServer(b, ServerOptions{
		TLS: pki.serverTLSConfig(),
		Handler: func(_ context.Context, r *Request, accept func() (net.Conn, error)) error {
			c, err := accept()
			if err != nil {
				return err
			}
			defer c.Close()
			bp := bufs.Get().(*[32 << 10]byte)
			defer bufs.Put(bp)
			buf := bp[:]
			switch r.Target {
			case "source:1":
				n, _ := strconv.ParseInt(r.Header.Get("X-Bytes"), 10, 64)
				for ; n > 0; n -= int64(len(buf)) {
					if _, err := c.Write(buf[:min(n, int64(len(buf)))]); err != nil {
						return err
					}
				}
			default:
				if _, err := io.CopyBuffer(io.Discard, readerOnly{c}, buf); err != nil {
					return err
				}
			}
			return c.(interface{ CloseWrite() error }).CloseWrite()
		},
	})
	return newTestClient(b, ClientOptions{TLS: pki.clientTLSConfig()}), addr
}

// BenchmarkStreamThroughput moves 1 MiB per op over one stream, in 32 KiB
// writes like pkg/relay.
func BenchmarkStreamThroughput(b *testing.B) {
	const chunk = 32 << 10
	const perOp = 1 << 20

	b.Run("upload", func(b *testing.B) {
		c, addr := benchServer(b)
		s, err := c.Dial(context.Background(), addr, "sink:1", nil)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		buf := make([]byte, chunk)
		b.SetBytes(perOp)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			for range perOp / chunk {
				if _, err := s.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := s.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, s); err != nil { // the sink's END_STREAM: all bytes arrived
			b.Fatal(err)
		}
	})

	b.Run("download", func(b *testing.B) {
		c, addr := benchServer(b)
		hdr := http.Header{"X-Bytes": {strconv.Itoa(b.N * perOp)}}
		s, err := c.Dial(context.Background(), addr, "source:1", hdr)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		buf := make([]byte, chunk)
		b.SetBytes(perOp)
		b.ReportAllocs()
		b.ResetTimer()
		n, err := io.CopyBuffer(io.Discard, readerOnly{s}, buf)
		if err != nil || n != int64(b.N)*perOp {
			b.Fatalf("read %d bytes, %v", n, err)
		}
		b.StopTimer()
		_ = s.(interface{ CloseWrite() error }).CloseWrite()
	})
}

// BenchmarkNewStream opens, half-closes and closes a stream on a pooled
// connection: the cost of one tunnelled client connection after the first.
func BenchmarkNewStream(b *testing.B) {
	run := func(b *testing.B, c *Client, addr netip.AddrPort) {
		s, err := c.Dial(context.Background(), addr, "close:1", nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, s); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}

	b.Run("serial", func(b *testing.B) {
		c, addr := benchServer(b)
		run(b, c, addr) // the one handshake
		before := c.Stats().Handshakes
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			run(b, c, addr)
		}
		b.StopTimer()
		b.ReportMetric(float64(c.Stats().Handshakes-before)/float64(b.N), "handshakes/op")
	})

	// The baseline pooling saves: a TLS connection per stream (resumed,
	// since the session cache is shared), as with one TLS connection per
	// client connection.
	b.Run("connection-per-stream", func(b *testing.B) {
		c, addr := benchServer(b)
		cfg := c.tls.Clone()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			one := NewClient(ClientOptions{TLS: cfg, Logger: quietLog})
			run(b, one, addr)
			_ = one.Close()
		}
	})

	b.Run("parallel", func(b *testing.B) {
		c, addr := benchServer(b)
		run(b, c, addr)
		before := c.Stats().Handshakes
		b.ReportAllocs()
		b.SetParallelism(16) // 16 x GOMAXPROCS concurrent streams
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				run(b, c, addr)
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(c.Stats().Handshakes-before)/float64(b.N), "handshakes/op")
	})
}

// readerOnly hides WriterTo-style fast paths so the copy uses our buffer.
type readerOnly struct{ io.Reader }
