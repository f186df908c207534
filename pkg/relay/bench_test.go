package relay

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// BenchmarkRelayThroughput pushes data one way through a relay, 1 MiB per
// iteration, and waits for the far end to receive all of it.
func BenchmarkRelayThroughput(b *testing.B) {
	const chunk = 1 << 20
	tt := newTestTLS(b)
	for _, bc := range []struct {
		name string
		tls  *testTLS
		idle time.Duration
		down bool // upstream -> client instead of client -> upstream
	}{
		{name: "tcp-tcp/buffered", idle: time.Hour},
		{name: "tcp-tcp/splice", idle: 0},
		{name: "tcp-tls/client-to-upstream", tls: tt, idle: time.Hour},
		{name: "tcp-tls/upstream-to-client", tls: tt, idle: time.Hour, down: true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := newSetup(b, bc.tls)
			done := s.start(bc.idle)
			var src, dst net.Conn = s.app, s.server
			if bc.down {
				src, dst = s.server, s.app
			}
			received := make(chan int64, 1)
			go func() {
				n, _ := io.Copy(io.Discard, dst)
				received <- n
			}()
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := src.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := closeWrite(src); err != nil {
				b.Fatal(err)
			}
			if n := <-received; n != int64(b.N)*chunk {
				b.Fatalf("received %d bytes, want %d", n, int64(b.N)*chunk)
			}
			b.StopTimer()
			_ = closeWrite(dst)
			wait(b, done, 10*time.Second)
		})
	}
}

// BenchmarkRelayPingPong measures a 100-byte request/response round trip
// through a relay (TLS upstream), the small-message path where every read is
// short and the client side waits for readiness before taking a buffer.
func BenchmarkRelayPingPong(b *testing.B) {
	s := newSetup(b, newTestTLS(b))
	done := s.start(time.Hour)
	go func() { // echo until EOF, then pass the EOF back
		_, _ = io.Copy(s.server, s.server)
		_ = closeWrite(s.server)
	}()
	msg := make([]byte, 100)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.app.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(s.app, msg); err != nil {
			b.Fatal(err)
		}
	}
	_ = s.app.CloseWrite()
	_, _ = io.Copy(io.Discard, s.app)
	wait(b, done, 10*time.Second)
}

// BenchmarkIdleMemory reports the memory a relay adds per idle connection in
// the production shape (plain TCP client, TLS upstream), after one message
// each way. The endpoints and their TLS buffers exist, warmed the same way,
// before the baseline, so only the relay's goroutines, buffers, timer and
// bookkeeping are counted. Run with -benchtime=1x.
func BenchmarkIdleMemory(b *testing.B) {
	const n = 500
	tt := newTestTLS(b)
	for b.Loop() {
		setups := make([]*setup, n)
		msg := make([]byte, 100)
		for i := range setups {
			s := buildSetup(b, tt)
			setups[i] = s
			// Warm every endpoint's buffers with direct traffic.
			for _, p := range [][2]net.Conn{{s.app, s.client}, {s.client, s.app}, {s.upstream, s.server}, {s.server, s.upstream}} {
				if _, err := p[0].Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(p[1], msg); err != nil {
					b.Fatal(err)
				}
			}
		}
		before := liveBytes()

		results := make([]<-chan relayResult, n)
		for i, s := range setups {
			results[i] = s.start(time.Hour)
			for _, p := range [][2]net.Conn{{s.app, s.server}, {s.server, s.app}} {
				if _, err := p[0].Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(p[1], msg); err != nil {
					b.Fatal(err)
				}
			}
		}
		time.Sleep(100 * time.Millisecond) // let every relay block in wait/Read
		after := liveBytes()
		b.ReportMetric(float64(after-before)/n, "B/idle-relay")

		for i, s := range setups {
			s.closeAll()
			wait(b, results[i], 5*time.Second)
		}
	}
}

// liveBytes is live heap plus goroutine stacks after a full collection.
func liveBytes() int64 {
	runtime.GC()
	runtime.GC() // a second cycle drops sync.Pool victims
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc + m.StackInuse)
}
