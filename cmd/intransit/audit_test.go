package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/intransit/intransit/pkg/audit"
)

var auditT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func int64p(n int64) *int64 { return &n }

// auditEvents are the agent's recent lines in the tests.
func auditEvents() []audit.Event {
	return []audit.Event{
		{Time: auditT0, Event: audit.EventConnect, Verdict: audit.VerdictUpgraded, Rule: "payments-http", Mode: "enforce",
			Source: "10.0.0.5:40000", Destination: "10.0.0.9:80", Upstream: "10.0.0.9:443", Process: podProcess("python3", "api-7f9")},
		{Time: auditT0.Add(time.Second), Event: audit.EventSessionEnd, Verdict: audit.VerdictError, Rule: "db", Session: idRaw,
			Source: "10.0.0.6:40001", Destination: "192.168.1.20:5432", Process: &audit.Process{PID: 77, Comm: "psql"},
			BytesSent: int64p(10), BytesReceived: int64p(0), Reason: "upstream reset"},
		// A line with one counter only (an older or foreign writer).
		{Time: auditT0.Add(2 * time.Second), Event: audit.EventSessionEnd, Verdict: audit.VerdictUpgraded, Rule: "db",
			Source: "10.0.0.6:40002", Destination: "192.168.1.20:5432", BytesSent: int64p(5)},
		// Escapes in every workload-controlled string.
		{Time: auditT0.Add(3 * time.Second), Event: audit.EventConnect, Verdict: audit.VerdictDenied, Rule: "deny\x1b[2J",
			Source: "10.0.0.7:40003", Destination: "10.0.0.9:80", Process: podProcess(evilComm, evilPod), Reason: "bad\x1b]0;x\x07"},
	}
}

func auditBackend(t *testing.T) (*fakeBackend, [][]byte) {
	b := &fakeBackend{}
	var lines [][]byte
	for _, e := range auditEvents() {
		l := auditLine(t, e)
		lines = append(lines, l)
		b.publish(l)
	}
	return b, lines
}

func tail(socket string, args ...string) []string {
	return append(append([]string{"audit", "tail", "--socket", socket}, args...), "--config", "/nonexistent/intransit.yaml")
}

func TestAuditTailCompact(t *testing.T) {
	b, _ := auditBackend(t)
	socket := serveAPI(t, b)
	out, _, err := run(t, tail(socket)...) // compact is the default
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want 4 lines, got %d:\n%s", len(lines), out)
	}
	for i, want := range [][]string{
		{"connect", "UPGRADED", "rule=payments-http", "workload=pod/payments/api-7f9", "comm=python3", "pid=4242", "src=10.0.0.5:40000", "dst=10.0.0.9:80", "upstream=10.0.0.9:443"},
		{"session_end", "ERROR", "rule=db", "session=" + idRaw, "workload=unknown", "comm=psql", "src=10.0.0.6:40001", "dst=192.168.1.20:5432", "sent=10 received=0", "reason=upstream reset"},
		{"session_end", "UPGRADED", "rule=db", "src=10.0.0.6:40002", "dst=192.168.1.20:5432", "sent=5"},
		{"connect", "DENIED", `rule="deny\x1b[2J"`, `workload="pod/payments/pod\x1b]0;pwned\a"`, `comm="ev\x1b[31mil"`, "src=10.0.0.7:40003", `reason="bad\x1b]0;x\a"`},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d lacks %q: %q", i, w, lines[i])
			}
		}
		if !regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} `).MatchString(lines[i]) {
			t.Errorf("line %d: no time: %q", i, lines[i])
		}
	}
	if strings.Contains(lines[2], "received=") {
		t.Errorf("line without bytes_received: %q", lines[2])
	}
	noEscapes(t, "audit tail compact", out)
}

func TestAuditTailJSON(t *testing.T) {
	b, lines := auditBackend(t)
	socket := serveAPI(t, b)
	out, _, err := run(t, tail(socket, "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	if want := string(bytes.Join(lines, nil)); out != want {
		t.Errorf("json passes the lines through:\ngot  %q\nwant %q", out, want)
	}
	// JSON escapes control characters itself.
	noEscapes(t, "audit tail json", out)
}

func TestAuditTailFollow(t *testing.T) {
	for _, output := range []string{"json", "compact"} {
		t.Run(output, func(t *testing.T) {
			b, lines := auditBackend(t)
			socket := serveAPI(t, b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out, _, done := start(ctx, tail(socket, "-f", "-o", output)...)
			waitFor(t, "the recent lines", func() bool { return strings.Count(out.String(), "\n") == len(lines) })
			waitFor(t, "the subscription", func() bool { return b.subscribers() == 1 })

			for i := range 3 {
				b.publish(auditLine(t, audit.Event{Time: auditT0.Add(time.Minute), Event: audit.EventConnect,
					Verdict: audit.VerdictAudit, Rule: fmt.Sprintf("new-%d", i), Source: "10.1.1.1:1", Destination: "10.2.2.2:2"}))
			}
			waitFor(t, "the new lines", func() bool { return strings.Count(out.String(), "\n") == len(lines)+3 })
			got := out.String()
			for i := range 3 {
				if n := strings.Count(got, fmt.Sprintf("new-%d", i)); n != 1 {
					t.Errorf("new-%d printed %d times:\n%s", i, n, got)
				}
			}
			if i0, i2 := strings.Index(got, "new-0"), strings.Index(got, "new-2"); i0 < strings.Index(got, "10.0.0.7:40003") || i2 < i0 {
				t.Errorf("out of order:\n%s", got)
			}
			select {
			case err := <-done:
				t.Fatalf("-f ended on its own: %v", err)
			case <-time.After(50 * time.Millisecond):
			}

			// Interrupting a follow is not a failure, and the agent's
			// subscription goes away.
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("interrupted -f: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("-f did not stop on cancel")
			}
			waitFor(t, "the unsubscription", func() bool { return b.subscribers() == 0 })
		})
	}
}

func TestAuditTailFollowAgentStops(t *testing.T) {
	b, lines := auditBackend(t)
	socket := serveAPI(t, b)
	out, _, done := start(context.Background(), tail(socket, "-f")...)
	waitFor(t, "the subscription", func() bool { return b.subscribers() == 1 })
	b.closeSubscribers()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "audit stream ended") {
			t.Errorf("agent ended the stream: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("-f did not end with the stream")
	}
	if n := strings.Count(out.String(), "\n"); n != len(lines) {
		t.Errorf("%d lines before the end, want %d", n, len(lines))
	}
}

func TestAuditTailErrors(t *testing.T) {
	b, _ := auditBackend(t)
	socket := serveAPI(t, b)
	if _, _, err := run(t, tail(socket, "-o", "yaml")...); err == nil || !strings.Contains(err.Error(), `-o "yaml": want json or compact`) {
		t.Errorf("bad -o: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "none.sock")
	if _, _, err := run(t, tail(missing)...); err == nil || !strings.Contains(err.Error(), "reach the agent at "+missing) {
		t.Errorf("no agent: %v", err)
	}
	// An explicit --config that cannot be read is an error, not a silent
	// fallback to the default socket.
	if _, _, err := run(t, "audit", "tail", "--config", noConfig(t)); err == nil || !strings.Contains(err.Error(), "no-such-config.yaml") {
		t.Errorf("unreadable --config: %v", err)
	}
}

func TestCopyAudit(t *testing.T) {
	good := string(auditLine(t, auditEvents()[0]))
	long := `{"event":"` + strings.Repeat("x", maxAuditLine) + `"}` + "\n"
	in := "not json\n" + long + good + "\n" + strings.TrimSuffix(good, "\n") // blank line; last line without newline
	var out bytes.Buffer
	if err := copyAudit(&out, strings.NewReader(in), "compact"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want 4 lines, got %d:\n%s", len(lines), out.String())
	}
	if !strings.HasPrefix(lines[0], "(unreadable line: invalid character") {
		t.Errorf("bad line: %q", lines[0])
	}
	if want := fmt.Sprintf("(line of %d bytes skipped: longer than %d)", len(long), maxAuditLine); lines[1] != want {
		t.Errorf("long line: %q, want %q", lines[1], want)
	}
	for _, l := range lines[2:] {
		if !strings.Contains(l, "rule=payments-http") {
			t.Errorf("line after a long one: %q", l)
		}
	}

	out.Reset()
	if err := copyAudit(&out, strings.NewReader(long+good), "json"); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out.String(), "\n"+good) {
		t.Errorf("json after a long line: %q", out.String())
	}
}
