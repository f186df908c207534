package tunnel

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/intransit/intransit/pkg/relay"
)

// TestRelayEndToEnd runs the whole path the agents build with pkg/relay:
// plaintext client -> relay -> stream -> relay -> plaintext executor, for
// both orders of half-close.
func TestRelayEndToEnd(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)

	// The executor: "upload" reads to EOF and answers with the byte count;
	// "http10" answers one line and closes first, like HTTP/1.0.
	exec, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Close() })
	go func() {
		for {
			c, err := exec.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				mode, _ := r.ReadString('\n')
				if mode == "upload\n" {
					n, _ := io.Copy(io.Discard, r)
					_, _ = c.Write([]byte{byte(n)})
					_ = c.(*net.TCPConn).CloseWrite()
					return
				}
				_, _ = c.Write([]byte("HTTP/1.0 200 OK\r\n\r\nbye"))
			}()
		}
	}()

	serverRelay := make(chan error, 2)
	_, addr := startServer(t, ServerOptions{
		TLS: pki.serverTLSConfig(),
		Handler: func(ctx context.Context, r *Request, accept func() (net.Conn, error)) error {
			fwd, err := net.Dial("tcp", exec.Addr().String())
			if err != nil {
				return &Refusal{Status: 502, Reason: "executor unreachable"}
			}
			s, err := accept()
			if err != nil {
				fwd.Close()
				return err
			}
			_, err = relay.Relay(s, fwd, 0)
			serverRelay <- err
			return nil
		},
	})
	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})

	// The outbound agent's side: accept the plaintext client, relay it into
	// a stream.
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close() })
	clientRelay := make(chan error, 2)
	go func() {
		for {
			app, err := front.Accept()
			if err != nil {
				return
			}
			go func() {
				s, err := c.Dial(context.Background(), addr, "10.0.0.7:8080", nil)
				if err != nil {
					app.Close()
					clientRelay <- err
					return
				}
				_, err = relay.Relay(app, s, 0)
				clientRelay <- err
			}()
		}
	}()

	app := func(t *testing.T) *net.TCPConn {
		t.Helper()
		conn, err := net.Dial("tcp", front.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn.(*net.TCPConn)
	}

	t.Run("client closes first", func(t *testing.T) {
		conn := app(t)
		if _, err := conn.Write(append([]byte("upload\n"), make([]byte, 100)...)); err != nil {
			t.Fatal(err)
		}
		_ = conn.CloseWrite()
		got, err := io.ReadAll(conn)
		if err != nil || len(got) != 1 || got[0] != 100 {
			t.Fatalf("answer %v, %v; want [100]", got, err)
		}
		if err := <-clientRelay; err != nil {
			t.Errorf("client relay: %v", err)
		}
		if err := <-serverRelay; err != nil {
			t.Errorf("server relay: %v", err)
		}
	})

	t.Run("server closes first", func(t *testing.T) {
		conn := app(t)
		if _, err := conn.Write([]byte("http10\n")); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(conn) // the application waits for EOF
		if err != nil || string(got) != "HTTP/1.0 200 OK\r\n\r\nbye" {
			t.Fatalf("answer %q, %v", got, err)
		}
		conn.Close()
		if err := <-clientRelay; err != nil {
			t.Errorf("client relay: %v", err)
		}
		// The server side cannot tell whether the client had more to send.
		err = <-serverRelay
		if err != nil && !errors.Is(err, ErrServerHalfClose) {
			t.Errorf("server relay: %v, want nil or ErrServerHalfClose", err)
		}
		t.Logf("server relay ended with %v", err)
	})
}
