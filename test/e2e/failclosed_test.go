package e2e

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/intransit/intransit/internal/testutil"
)

// TestCertificateFailuresFailClosed (threat T9): with a wrong CA, a wrong
// name, an expired or a client-only certificate the upgrade fails and the
// client connection closes without a byte relayed; never a plaintext retry.
func TestCertificateFailuresFailClosed(t *testing.T) {
	p := newPKI(t)
	other := testutil.NewCA(t, p.dir, "other")
	expired := p.ca.Issue(t, p.dir, testutil.Leaf{CommonName: "expired", IPs: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	clientOnly := p.ca.Issue(t, p.dir, testutil.Leaf{CommonName: "clientonly", IPs: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUse: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	good := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)
	exp := startTLSServer(t, "tcp4", "127.0.0.1:0", expired.TLS, echo)
	cli := startTLSServer(t, "tcp4", "127.0.0.1:0", clientOnly.TLS, echo)

	cases := []struct {
		name, extra string
		srv         *tlsServer
		reason      string
	}{
		{"wrong-ca", ", caFile: " + other.File, good, "cert_unknown_authority"},
		{"wrong-name", ", caFile: " + p.ca.File + ", serverName: not-the-executor.test", good, "cert_name_mismatch"},
		{"expired", ", caFile: " + p.ca.File, exp, "cert_expired"},
		{"client-only-cert", ", caFile: " + p.ca.File, cli, "cert_invalid"},
	}
	var rules string
	ports := map[string]int{}
	for _, tc := range cases {
		ports[tc.name] = freePort(t)
		rules += enforceRule(tc.name, ports[tc.name], tc.srv.port, tc.extra)
	}
	r := startAgent(t, agentOpts{enter: true, rules: rules})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.srv.accepted.Load()
			c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", ports[tc.name]))
			switch {
			case errors.Is(err, syscall.ECONNRESET):
				// The proxy failed the upgrade and reset the connection
				// before this goroutine saw connect() complete.
			case err != nil:
				t.Fatalf("dial: %v", err)
			default:
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.WriteString(c, "Authorization: Bearer canary-secret\r\n")
				n, err := c.Read(make([]byte, 64))
				if n != 0 || err == nil {
					t.Fatalf("read %d bytes, err %v: want the connection closed", n, err)
				}
			}
			if got := tc.srv.accepted.Load() - before; got != 0 {
				t.Errorf("server completed %d handshakes, want 0", got)
			}
			evs := r.events(t, countAtLeast(1, "rule", tc.name, "verdict", "ERROR"))
			errs := having(evs, "rule", tc.name, "verdict", "ERROR")
			if len(errs) != 1 || !strings.HasPrefix(fmt.Sprint(errs[0]["reason"]), tc.reason) {
				t.Errorf("want one ERROR event with reason %s, got %v", tc.reason, errs)
			}
		})
	}
}

// TestSourcePortReuse (threat T6): the same client port is reused at once for
// connections to two different protected destinations; each must land at its
// own upstream, never inherit the previous entry.
func TestSourcePortReuse(t *testing.T) {
	p := newPKI(t)
	tag := func(name string) func(net.Conn) {
		return func(c net.Conn) { _, _ = io.WriteString(c, name); _, _ = io.Copy(io.Discard, c) }
	}
	a := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, tag("A"))
	b := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, tag("B"))
	portA, portB := freePort(t), freePort(t)
	startAgent(t, agentOpts{enter: true, rules: enforceRule("a", portA, a.port, ", caFile: "+p.ca.File) +
		enforceRule("b", portB, b.port, ", caFile: "+p.ca.File)})
	local := freePort(t)
	d := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: local},
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			_ = rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
				// Linger 0: close with RST, no TIME_WAIT, so the port is free at once.
				if serr == nil {
					serr = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
				}
			})
			return serr
		},
	}
	for i := range 40 {
		want, port := "A", portA
		if i%2 == 1 {
			want, port = "B", portB
		}
		var c net.Conn
		var err error
		for try := 0; try < 50; try++ { // the port may take a moment to free
			if c, err = d.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("round %d: dial from port %d: %v", i, local, err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 1)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
			t.Fatalf("round %d: from port %d reached %q (%v), want %s", i, local, got, err, want)
		}
		c.Close()
	}
}

// TestMapFullNeverGuesses (threat T5): with a tiny map and many connections
// held open, every connection reaches its own destination or fails; none
// reaches another one; the fill level stays within capacity and is exported.
func TestMapFullNeverGuesses(t *testing.T) {
	p := newPKI(t)
	tag := func(name string) func(net.Conn) {
		return func(c net.Conn) { _, _ = io.WriteString(c, name); _, _ = io.Copy(io.Discard, c) }
	}
	a := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, tag("A"))
	b := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, tag("B"))
	portA, portB := freePort(t), freePort(t)
	r := startAgent(t, agentOpts{enter: true, mapSize: 64, rules: enforceRule("a", portA, a.port, ", caFile: "+p.ca.File) +
		enforceRule("b", portB, b.port, ", caFile: "+p.ca.File)})
	const n = 300
	var mu sync.Mutex
	var conns []net.Conn
	var wrong, ok, failed int
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want, port := "A", portA
			if i%2 == 1 {
				want, port = "B", portB
			}
			c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			conns = append(conns, c)
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			got := make([]byte, 1)
			mu.Unlock()
			_, err = io.ReadFull(c, got)
			mu.Lock()
			switch {
			case err != nil:
				failed++
			case string(got) != want:
				wrong++
			default:
				ok++
			}
		}()
	}
	wg.Wait()
	fills, err := r.agent.Status().Maps, error(nil)
	for _, c := range conns {
		c.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d connections: %d reached their destination, %d failed, %d wrong", n, ok, failed, wrong)
	if wrong != 0 {
		t.Fatalf("%d connections reached the wrong destination", wrong)
	}
	if ok == 0 {
		t.Fatal("no connection got through")
	}
	for _, f := range fills {
		if f.Capacity != 64 || f.Entries > f.Capacity {
			t.Errorf("map %s fill %d/%d, want capacity 64", f.Map, f.Entries, f.Capacity)
		}
	}
	body := scrape(t, r.metrics)
	if !strings.Contains(body, `intransit_bpf_map_capacity{map="by_cookie"} 64`) {
		t.Errorf("metrics lack the map capacity:\n%s", grepLines(body, "intransit_bpf_map"))
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
	b, _ := io.ReadAll(c)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
