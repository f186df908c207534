package transcript

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/intransit/intransit/pkg/audit"
)

func replay(t *testing.T, tr *Transcript, speed float64) (string, []time.Duration) {
	t.Helper()
	var out bytes.Buffer
	var slept []time.Duration
	err := Replay(tr, &out, ReplayOptions{Speed: speed, Sleep: func(d time.Duration) { slept = append(slept, d) }})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return out.String(), slept
}

// The gaps between httpSession's distinct event times, in ms.
var httpGaps = []float64{12, 1, 2, 85, 1, 1, 8, 1, 89, 5, 95, 2, 98, 1, 99, 1, 499}

func TestReplaySleeps(t *testing.T) {
	tr := mustBuild(t, httpSession(t))
	for _, speed := range []float64{1, 2} {
		_, slept := replay(t, tr, speed)
		if len(slept) != len(httpGaps) {
			t.Fatalf("speed %v: %d sleeps %v, want %d", speed, len(slept), slept, len(httpGaps))
		}
		for i, gap := range httpGaps {
			if want := time.Duration(gap / speed * float64(time.Millisecond)); slept[i] != want {
				t.Errorf("speed %v: sleep %d = %v, want %v", speed, i, slept[i], want)
			}
		}
	}
	for _, speed := range []float64{0, -1} {
		if _, slept := replay(t, tr, speed); len(slept) != 0 {
			t.Errorf("speed %v slept %v", speed, slept)
		}
	}
}

func TestReplayOutput(t *testing.T) {
	in := httpSession(t)
	in.Meta.Process.Comm = "evil\x1b]0;pwned\x07"
	tr := mustBuild(t, in)
	out, _ := replay(t, tr, 0)

	// Nothing recorded reaches the terminal raw.
	for _, b := range []byte(out) {
		if b < 0x20 && b != '\n' && b != '\t' || b == 0x7f {
			t.Fatalf("control byte %#x in replay output:\n%q", b, out)
		}
	}
	if strings.Contains(out, "\u202e") {
		t.Errorf("bidi override written raw")
	}

	// In time order, each as it happened.
	want := []string{
		"session     0123456789abcdef",
		"workload    pod/shop/web-7f9c (evil\\x1b]0;pwned\\a, pid 4242, uid 1000)",
		"source      10.1.2.3:40000",
		"destination 93.184.216.34:80",
		"upstream    93.184.216.34:443",
		"tls         TLS 1.3 TLS_AES_128_GCM_SHA256, server name example.com",
		"recording   sealed",
		"[+0.000s] → GET /index.html?q=a%20b&x=1 HTTP/1.1\n    Host: example.com\n",
		"    Authorization: [REDACTED]\n",
		"[+0.012s] ← HTTP/1.1 200 OK\n",
		"    <html>hello world</html>\n",
		"    (trailer) X-Checksum: abc123\n",
		"[+0.100s] → POST /api/items HTTP/1.1\n",
		"[+0.101s] ← HTTP/1.1 100 Continue\n",
		"[+0.102s] → request body of exchange 2\n    " + postBody + "\n",
		"[+0.110s] ← HTTP/1.1 201 Created\n",
		"[+0.200s] → HEAD /big HTTP/1.1\n",
		"[+0.302s] ← HTTP/1.1 101 Switching Protocols\n",
		"[+0.302s] note upgrade: upgrade: echo/1\n",
		"[+0.400s] → 7 bytes\n    HELLO\\r\n",
		"[+0.401s] ← 7 bytes\n",
		"[+0.500s] → " + strconv.Itoa(len(ansiRaw)) + " bytes\n    \\x1b[31mred\\x1b[0m\\a bell \\u202eevil\\r\n",
		"[+0.501s] ← 10 bytes\n    00000000  00 01 ff fe 1b 5b 32 4a  80 81",
		"[+1.000s] end: 1234 bytes sent, 5678 bytes received, verdict UPGRADED\n",
	}
	pos := 0
	for _, w := range want {
		i := strings.Index(out[pos:], w)
		if i < 0 {
			t.Fatalf("replay output lacks %q after offset %d:\n%s", w, pos, out)
		}
		pos += i + len(w)
	}
	if strings.Contains(out, "WARNING") {
		t.Errorf("warning for a sealed recording:\n%s", out)
	}
}

func TestReplayBodies(t *testing.T) {
	r := &rec{tb: t}
	m := testMeta()
	r.meta(m)
	ms := time.Millisecond
	r.request(0, 1, "GET", "/stream", "Host", "x")
	r.end(0, c2s, 1, 0)
	r.response(ms, 1, 200, "OK")
	// A streamed text body split inside a line and inside a rune (é).
	r.body(2*ms, s2c, 1, "data: caf\xc3")
	r.body(3*ms, s2c, 1, "\xa9\n\ndata: two\n")
	r.end(3*ms, s2c, 1, 20)
	r.request(4*ms, 2, "GET", "/img", "Host", "x")
	r.end(4*ms, c2s, 2, 0)
	r.response(5*ms, 2, 200, "OK")
	r.body(5*ms, s2c, 2, "\x89PNG\x00\x01")
	r.body(6*ms, s2c, 2, "\x00\x02\x1b[2J")
	r.end(6*ms, s2c, 2, 12)
	tr := mustBuild(t, Input{Meta: m, Chunks: r.chunks, Status: StatusSealed})
	out, _ := replay(t, tr, 0)
	if !strings.Contains(out, "    data: café\n    \n    data: two\n") {
		t.Errorf("streamed text body not rendered whole:\n%s", out)
	}
	if strings.Count(out, "<12 bytes binary>") != 1 || strings.Contains(out, "PNG") {
		t.Errorf("binary body not summarised once:\n%s", out)
	}
}

func TestReplayWarnsWhenNotSealed(t *testing.T) {
	for _, status := range []string{StatusUnfinished, StatusTampered, StatusTruncated, ""} {
		in := httpSession(t)
		in.Status = status
		out, _ := replay(t, mustBuild(t, in), 0)
		if strings.Count(out, "!!! WARNING") != 2 {
			t.Errorf("status %q: want a warning at the top and the bottom:\n%s", status, out)
		}
		if status != "" && !strings.Contains(out, "WARNING: recording "+status) {
			t.Errorf("status %q not named:\n%s", status, out)
		}
	}
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n <= 0 {
		return 0, errors.New("disk full")
	}
	w.n--
	return len(p), nil
}

func TestReplayWriteError(t *testing.T) {
	tr := mustBuild(t, httpSession(t))
	err := Replay(tr, &failWriter{n: 3}, ReplayOptions{})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("err = %v", err)
	}
}

func TestReplayNoProcess(t *testing.T) {
	in := httpSession(t)
	in.Meta.Process = nil
	in.Meta.TLS = nil
	out, _ := replay(t, mustBuild(t, in), 0)
	if !strings.Contains(out, "workload    "+audit.Unknown+"\n") || !strings.Contains(out, "tls         none\n") {
		t.Errorf("header without process/TLS:\n%s", out)
	}
}
