package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/intransit/intransit/internal/testutil"
)

// TestEnforceUpgrades dials a protected port in plaintext over IPv4, IPv6,
// IPv4-mapped IPv6 and TCP Fast Open; each must arrive at the TLS server over
// TLS, with getpeername showing the original destination (threat T3).
func TestEnforceUpgrades(t *testing.T) {
	p := newPKI(t)
	srv4 := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)
	srv6 := startTLSServer(t, "tcp6", "[::1]:0", p.server.TLS, echo)
	port4, port6 := freePort(t), freePort(t)
	r := startAgent(t, agentOpts{enter: true, rules: enforceRule("v4", port4, srv4.port, ", caFile: "+p.ca.File) +
		enforceRule("v6", port6, srv6.port, ", caFile: "+p.ca.File)})

	dst4 := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", port4))
	dst6 := netip.MustParseAddrPort(fmt.Sprintf("[::1]:%d", port6))
	cases := []struct {
		name string
		dial func() (net.Conn, error)
		dst  netip.AddrPort
		srv  *tlsServer
		msg  string
	}{
		{"ipv4", func() (net.Conn, error) { return net.Dial("tcp4", dst4.String()) }, dst4, srv4, "hello v4"},
		{"ipv6", func() (net.Conn, error) { return net.Dial("tcp6", dst6.String()) }, dst6, srv6, "hello v6"},
		{"ipv4-mapped", func() (net.Conn, error) { return testutil.DialV4Mapped(dst4) }, dst4, srv4, "hello mapped"},
		{"fastopen", func() (net.Conn, error) { return testutil.DialFastOpen(dst4, []byte("hello tfo")) }, dst4, srv4, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.srv.accepted.Load()
			c, err := tc.dial()
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			peer := c.RemoteAddr().(*net.TCPAddr).AddrPort()
			if peer.Addr().Unmap() != tc.dst.Addr() || peer.Port() != tc.dst.Port() {
				t.Errorf("getpeername = %s, want the original destination %s", peer, tc.dst)
			}
			if tc.msg == "" { // fast open sent its bytes in the SYN
				buf := make([]byte, len("hello tfo"))
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello tfo" {
					t.Fatalf("fast open echo = %q, %v", buf, err)
				}
			} else if got, err := roundTrip(c, tc.msg); err != nil || got != tc.msg {
				t.Fatalf("echo = %q, %v", got, err)
			}
			if tc.srv.accepted.Load() != before+1 {
				t.Errorf("TLS server saw %d new TLS sessions, want 1", tc.srv.accepted.Load()-before)
			}
		})
	}
	c, _ := net.Dial("tcp4", dst4.String())
	_, _ = roundTrip(c, "x")
	c.Close()
	evs := r.events(t, countAtLeast(5, "event", "session_end"))
	ups := having(evs, "event", "session_start", "verdict", "UPGRADED")
	if len(ups) < 5 {
		t.Fatalf("want 5 UPGRADED session_start events, got %d: %v", len(ups), evs)
	}
	e := ups[0]
	tlsInfo, _ := e["tls"].(map[string]any)
	proc, _ := e["process"].(map[string]any)
	if tlsInfo["version"] != "TLS 1.3" || tlsInfo["cipher"] == "" {
		t.Errorf("tls = %v, want TLS 1.3 with a cipher", tlsInfo)
	}
	if fmt.Sprint(proc["pid"]) != fmt.Sprint(os.Getpid()) || proc["comm"] == "" {
		t.Errorf("process = %v, want pid %d", proc, os.Getpid())
	}
	ends := having(evs, "event", "session_end")
	if len(ends) < 5 || ends[0]["bytes_sent"] == nil || ends[0]["duration"] == nil {
		t.Errorf("session_end events = %v", ends)
	}
	if srv4.states[0].Version != 0x0304 {
		t.Errorf("server side negotiated %x, want TLS 1.3", srv4.states[0].Version)
	}
}

// TestAuditPassesThrough: an audit rule leaves the connect untouched and
// reports it with the process that made it.
func TestAuditPassesThrough(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go echo(c)
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	r := startAgent(t, agentOpts{enter: true, rules: fmt.Sprintf("  - {name: legacy, ports: [%d], mode: audit}\n", port)})
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "plain"); err != nil || got != "plain" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	evs := r.events(t, countAtLeast(1, "verdict", "AUDIT"))
	a := having(evs, "verdict", "AUDIT", "rule", "legacy")
	if len(a) != 1 {
		t.Fatalf("want one AUDIT event, got %v", evs)
	}
	if a[0]["destination"] != ln.Addr().String() {
		t.Errorf("destination = %v, want %s", a[0]["destination"], ln.Addr())
	}
	proc, _ := a[0]["process"].(map[string]any)
	if fmt.Sprint(proc["pid"]) != fmt.Sprint(os.Getpid()) || proc["cgroup_path"] == nil || !strings.HasSuffix(r.cgroup, fmt.Sprint(proc["cgroup_path"])) {
		t.Errorf("process = %v, want pid %d in cgroup %s", proc, os.Getpid(), r.cgroup)
	}
}

// TestDenyFailsWithEPERM: a deny rule refuses the connect itself.
func TestDenyFailsWithEPERM(t *testing.T) {
	port := freePort(t)
	r := startAgent(t, agentOpts{enter: true, rules: fmt.Sprintf("  - {name: blocked, ports: [%d], mode: deny}\n", port)})
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if network == "tcp6" {
			addr = fmt.Sprintf("[::1]:%d", port)
		}
		_, err := net.Dial(network, addr)
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s dial error = %v, want EPERM", network, err)
		}
	}
	if _, err := testutil.DialV4Mapped(netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", port))); !errors.Is(err, syscall.EPERM) {
		t.Errorf("v4-mapped dial error = %v, want EPERM", err)
	}
	evs := r.events(t, countAtLeast(3, "verdict", "DENIED"))
	if n := len(having(evs, "verdict", "DENIED", "rule", "blocked")); n != 3 {
		t.Errorf("want 3 DENIED events, got %d: %v", n, evs)
	}
}

// TestDirectDialToProxyRefused (threat T1): a process that dials the proxy
// port itself has no redirect entry; it is reset, nothing is dialled, and the
// attempt is audited.
func TestDirectDialToProxyRefused(t *testing.T) {
	p := newPKI(t)
	srv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)
	r := startAgent(t, agentOpts{enter: true, rules: enforceRule("exec", freePort(t), srv.port, ", caFile: "+p.ca.File)})
	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", r.cfg.Proxy.Port), fmt.Sprintf("[::1]:%d", r.cfg.Proxy.Port)} {
		c, err := net.Dial("tcp", addr)
		if errors.Is(err, syscall.ECONNRESET) {
			continue // reset before connect() returned: refused all the same
		}
		if err != nil {
			t.Fatalf("dial proxy %s: %v", addr, err)
		}
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		n, err := c.Read(make([]byte, 10))
		if n != 0 || err == nil {
			t.Errorf("direct dial to %s read %d bytes, err %v: want it closed at once", addr, n, err)
		}
		c.Close()
	}
	evs := r.events(t, countAtLeast(2, "verdict", "REFUSED"))
	if n := len(having(evs, "verdict", "REFUSED")); n != 2 {
		t.Errorf("want 2 REFUSED events, got %v", evs)
	}
	if srv.accepted.Load()+srv.failed.Load() != 0 {
		t.Errorf("upstream saw %d connections, want none", srv.accepted.Load()+srv.failed.Load())
	}
}

// TestParallelConnects: 500 connects at once all resolve to their origin.
func TestParallelConnects(t *testing.T) {
	p := newPKI(t)
	srv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)
	port := freePort(t)
	startAgent(t, agentOpts{enter: true, rules: enforceRule("exec", port, srv.port, ", caFile: "+p.ca.File)})
	const n = 500
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg := fmt.Sprintf("conn-%04d", i)
			if got, err := roundTrip(c, msg); err != nil || got != msg {
				errs <- fmt.Errorf("%s: got %q, %v", msg, got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed < 5 {
			t.Error(err)
		}
		failed++
	}
	if failed > 0 {
		t.Fatalf("%d of %d parallel connects failed", failed, n)
	}
}

// TestLargeTransferBothWays moves 64 MiB each way at once and checks SHA-256.
func TestLargeTransferBothWays(t *testing.T) {
	p := newPKI(t)
	const size = 64 << 20
	// The server sends its own 64 MiB while hashing what it receives.
	type result struct{ got, sent [32]byte }
	results := make(chan result, 1)
	srv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, func(c net.Conn) {
		var res result
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := sha256.New()
			_, _ = io.Copy(h, c)
			copy(res.got[:], h.Sum(nil))
		}()
		h := sha256.New()
		_, _ = io.Copy(io.MultiWriter(c, h), io.LimitReader(rand.Reader, size))
		copy(res.sent[:], h.Sum(nil))
		_ = c.(interface{ CloseWrite() error }).CloseWrite()
		wg.Wait()
		results <- res
	})
	port := freePort(t)
	r := startAgent(t, agentOpts{enter: true, rules: enforceRule("bulk", port, srv.port, ", caFile: "+p.ca.File)})
	c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var recvSum [32]byte
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h := sha256.New()
		_, _ = io.Copy(h, c)
		copy(recvSum[:], h.Sum(nil))
	}()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(c, h), io.LimitReader(rand.Reader, size)); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	wg.Wait()
	var sentSum [32]byte
	copy(sentSum[:], h.Sum(nil))
	res := <-results
	if res.got != sentSum {
		t.Error("client->server SHA-256 mismatch")
	}
	if recvSum != res.sent {
		t.Error("server->client SHA-256 mismatch")
	}
	evs := r.events(t, countAtLeast(1, "event", "session_end"))
	end := having(evs, "event", "session_end")
	if len(end) != 1 || end[0]["bytes_sent"] != float64(size) || end[0]["bytes_received"] != float64(size) {
		t.Errorf("session_end = %v, want %d bytes each way", end, size)
	}
}

// TestHalfClose: the client finishes its request with shutdown(SHUT_WR); the
// server reads to EOF, then answers; the client gets the whole answer.
func TestHalfClose(t *testing.T) {
	p := newPKI(t)
	srv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, func(c net.Conn) {
		req, err := io.ReadAll(c) // ends at the client's close_notify
		if err != nil {
			return
		}
		_, _ = fmt.Fprintf(c, "got %d bytes: %s", len(req), bytes.ToUpper(req))
	})
	port := freePort(t)
	startAgent(t, agentOpts{enter: true, rules: enforceRule("half", port, srv.port, ", caFile: "+p.ca.File)})
	c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "request body")
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(c)
	if err != nil || string(resp) != "got 12 bytes: REQUEST BODY" {
		t.Fatalf("response = %q, %v", resp, err)
	}
}
