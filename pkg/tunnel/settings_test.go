package tunnel

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestClientSettings checks what the client announces: the windows and frame
// size it can only set through the linked net/http Transport.
func TestClientSettings(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	cfg := pki.serverTLSConfig()
	cfg.NextProtos = []string{"h2"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	type seen struct {
		settings map[http2.SettingID]uint32
		connWin  uint32
		err      error
	}
	got := make(chan seen, 1)
	go func() {
		var s seen
		defer func() { got <- s }()
		c, err := ln.Accept()
		if err != nil {
			s.err = err
			return
		}
		defer c.Close()
		if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil {
			s.err = err
			return
		}
		fr := http2.NewFramer(c, c)
		s.settings = make(map[http2.SettingID]uint32)
		for s.connWin == 0 {
			f, err := fr.ReadFrame()
			if err != nil {
				s.err = err
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				_ = f.ForeachSetting(func(st http2.Setting) error {
					s.settings[st.ID] = st.Val
					return nil
				})
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					s.connWin = f.Increment
				}
			}
		}
	}()

	c := newTestClient(t, ClientOptions{TLS: pki.clientTLSConfig()})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	// The peer never answers; the Dial fails, the settings were sent.
	_, _ = c.Dial(ctx, ln.Addr().(*net.TCPAddr).AddrPort(), "10.0.0.1:80", nil)
	s := <-got
	if s.err != nil {
		t.Fatal(s.err)
	}
	if w := s.settings[http2.SettingInitialWindowSize]; w != streamWindow {
		t.Errorf("SETTINGS_INITIAL_WINDOW_SIZE = %d, want %d", w, streamWindow)
	}
	if f := s.settings[http2.SettingMaxFrameSize]; f != maxFrameSize {
		t.Errorf("SETTINGS_MAX_FRAME_SIZE = %d, want %d", f, maxFrameSize)
	}
	// x/net adds the whole window on top of the initial 64 KiB.
	if s.connWin != connWindow {
		t.Errorf("connection WINDOW_UPDATE %d, want %d", s.connWin, connWindow)
	}
}
