package relay

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// startWith runs RelayWith in the background.
func (s *setup) startWith(idle time.Duration, h *Hooks) <-chan relayResult {
	ch := make(chan relayResult, 1)
	go func() {
		st, err := RelayWith(s.client, s.upstream, idle, h)
		ch <- relayResult{st, err}
	}()
	return ch
}

// TestHooksTransformAndTap: the transform's output is what reaches the
// upstream and what the tap sees; the tap sees the reply too.
func TestHooksTransformAndTap(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			s := newSetup(t, m.tls)
			var mu sync.Mutex
			var up, down bytes.Buffer
			done := s.startWith(time.Minute, &Hooks{
				ClientTransform: func(dst, p []byte) ([]byte, error) {
					return append(dst, bytes.ToUpper(p)...), nil
				},
				Tap: func(toUpstream bool, p []byte) error {
					mu.Lock()
					defer mu.Unlock()
					if toUpstream {
						up.Write(p)
					} else {
						down.Write(p)
					}
					return nil
				},
			})
			go func() {
				_, _ = s.app.Write([]byte("hello upstream"))
				_ = s.app.CloseWrite()
			}()
			got, err := io.ReadAll(s.server)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "HELLO UPSTREAM" {
				t.Fatalf("upstream got %q, want the transformed bytes", got)
			}
			_, _ = s.server.Write([]byte("reply"))
			closeServerWrite(t, s)
			reply, _ := io.ReadAll(s.app)
			if string(reply) != "reply" {
				t.Fatalf("app got %q", reply)
			}
			r := wait(t, done, 5*time.Second)
			if r.err != nil {
				t.Fatal(r.err)
			}
			mu.Lock()
			defer mu.Unlock()
			if up.String() != "HELLO UPSTREAM" || down.String() != "reply" {
				t.Fatalf("tap saw %q / %q", up.String(), down.String())
			}
			if r.st.Sent != int64(len("HELLO UPSTREAM")) {
				t.Fatalf("Sent = %d, want the transformed length", r.st.Sent)
			}
		})
	}
}

// TestHooksFailClosed: a transform error, a tap error and a ClientEOF error
// each end the relay with that error and forward nothing more.
func TestHooksFailClosed(t *testing.T) {
	boom := errors.New("boom")
	cases := map[string]*Hooks{
		"transform": {ClientTransform: func(dst, p []byte) ([]byte, error) {
			if bytes.Contains(p, []byte("bad")) {
				return dst, boom
			}
			return append(dst, p...), nil
		}},
		"tap": {Tap: func(_ bool, p []byte) error {
			if bytes.Contains(p, []byte("bad")) {
				return boom
			}
			return nil
		}},
		"eof": {ClientEOF: func() error { return boom }},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			s := newSetup(t, nil)
			done := s.startWith(time.Minute, h)
			_, _ = s.app.Write([]byte("bad request"))
			if name == "eof" {
				_ = s.app.CloseWrite()
			}
			r := wait(t, done, 5*time.Second)
			if !errors.Is(r.err, boom) {
				t.Fatalf("relay error = %v, want boom", r.err)
			}
			got, _ := io.ReadAll(s.server)
			if name == "transform" && len(got) != 0 {
				t.Fatalf("upstream got %q after a transform error", got)
			}
			if name == "eof" && strings.Contains(string(got), "bad") && r.st.Sent == 0 {
				t.Fatal("stats lost")
			}
		})
	}
}

func closeServerWrite(t *testing.T, s *setup) {
	t.Helper()
	if err := closeWrite(s.server); err != nil {
		t.Fatal(err)
	}
}
