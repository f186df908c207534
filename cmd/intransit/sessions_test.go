package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/intransit/intransit/pkg/api"
	"github.com/intransit/intransit/pkg/recording"
)

// sessions runs `intransit sessions ARGS --dir DIR --config NONE`.
func (f *fixture) sessions(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	args = append(append([]string{"sessions"}, args...), "--dir", dir, "--config", noConfig(t))
	out, _, err := run(t, args...)
	return out, err
}

func listJSON(t *testing.T, out string) []recording.Summary {
	t.Helper()
	var sel []recording.Summary
	if err := json.Unmarshal([]byte(out), &sel); err != nil {
		t.Fatalf("list -o json: %v\n%s", err, out)
	}
	return sel
}

func ids(sel []recording.Summary) []string {
	var out []string
	for _, s := range sel {
		out = append(out, s.ID)
	}
	return out
}

// tableRow returns the table line of id, or fails.
func tableRow(t *testing.T, out, id string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, id+" ") {
			return l
		}
	}
	t.Fatalf("no row for %s in\n%s", id, out)
	return ""
}

func TestSessionsListTable(t *testing.T) {
	f := newFixture(t)
	out, err := f.sessions(t, f.dir, "list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 6 {
		t.Fatalf("want a header and 5 rows, got %d lines:\n%s", len(lines), out)
	}
	if !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "WORKLOAD") || !strings.HasSuffix(lines[0], "STATUS") {
		t.Errorf("header: %q", lines[0])
	}
	// Oldest first.
	var order []string
	for _, l := range lines[1:] {
		order = append(order, strings.Fields(l)[0])
	}
	if want := []string{idTampered, idSealed, idEvil, idRaw, idUnfinished}; !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
	for id, want := range map[string][]string{
		idSealed:     {"pod/payments/api-7f9", "10.0.0.5:40000", "10.0.0.9:80", "10.0.0.9:443", "123", "456", "UPGRADED", "full", "sealed", "1s"},
		idRaw:        {"container/docker/5d6e7f8091a2", "192.168.1.20:5432", "ERROR", "sealed"},
		idUnfinished: {"pod/payments/web-1", "unfinished"},
		idTampered:   {"tampered"},
	} {
		row := tableRow(t, out, id)
		for _, w := range want {
			if !strings.Contains(row, w) {
				t.Errorf("row %s lacks %q: %q", id, w, row)
			}
		}
	}
	if row := tableRow(t, out, idUnfinished); !regexp.MustCompile(`\s-\s`).MatchString(row) {
		t.Errorf("unfinished row should show - for duration and bytes: %q", row)
	}
}

func TestSessionsListJSON(t *testing.T) {
	f := newFixture(t)
	out, err := f.sessions(t, f.dir, "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	sel := listJSON(t, out)
	if want := []string{idTampered, idSealed, idEvil, idRaw, idUnfinished}; !slices.Equal(ids(sel), want) {
		t.Fatalf("ids %v, want %v", ids(sel), want)
	}
	byID := map[string]recording.Summary{}
	for _, s := range sel {
		byID[s.ID] = s
	}
	for id, want := range map[string]recording.Status{
		idSealed: recording.StatusSealed, idRaw: recording.StatusSealed, idEvil: recording.StatusSealed,
		idUnfinished: recording.StatusUnfinished, idTampered: recording.StatusTampered,
	} {
		if got := byID[id].Status; got != want {
			t.Errorf("%s: status %s, want %s", id, got, want)
		}
	}
	s := byID[idSealed]
	if s.Meta.Process == nil || s.Meta.Process.Pod == nil || s.Meta.Process.Pod.Name != "api-7f9" || s.End == nil || s.End.BytesSent != 123 {
		t.Errorf("sealed summary: %+v", s)
	}
	if byID[idUnfinished].End != nil {
		t.Errorf("unfinished has an End")
	}
	if len(byID[idTampered].Problems) == 0 {
		t.Errorf("tampered: no problems")
	}

	// Nothing selected: an empty array, not null.
	out, err = f.sessions(t, f.dir, "list", "-o", "json", "--workload", "nothing-matches")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("empty selection: %q", out)
	}
}

func TestSessionsListFilters(t *testing.T) {
	f := newFixture(t)
	rfc := func(d time.Duration) string { return f.now.Add(-d).UTC().Format(time.RFC3339) }
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"since duration", []string{"--since", "90m"}, []string{idEvil, idRaw, idUnfinished}},
		{"until duration", []string{"--until", "90m"}, []string{idTampered, idSealed}},
		{"since and until RFC 3339", []string{"--since", rfc(3 * time.Hour), "--until", rfc(45 * time.Minute)}, []string{idSealed, idEvil}},
		{"since RFC 3339 offset", []string{"--since", f.now.Add(-15 * time.Minute).In(time.FixedZone("", 5*3600)).Format(time.RFC3339)}, []string{idUnfinished}},
		{"workload pod namespace", []string{"--workload", "pod/payments/"}, []string{idTampered, idSealed, idEvil, idUnfinished}},
		{"workload pod name", []string{"--workload", "api-7f9"}, []string{idTampered, idSealed}},
		{"workload comm", []string{"--workload", "psql"}, []string{idRaw}},
		{"workload container", []string{"--workload", "container/docker"}, []string{idRaw}},
		{"workload full container id of a pod", []string{"--workload", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"}, []string{idTampered, idSealed, idEvil, idUnfinished}},
		{"workload cgroup path of a pod", []string{"--workload", "kubepods-pod1234"}, []string{idTampered, idSealed, idEvil, idUnfinished}},
		{"workload exe", []string{"--workload", "/usr/bin/psql"}, []string{idRaw}},
		{"workload comm curl", []string{"--workload", "curl"}, []string{idUnfinished}},
		{"destination CIDR", []string{"--destination", "10.0.0.0/24"}, []string{idTampered, idSealed, idEvil, idUnfinished}},
		{"destination CIDR other", []string{"--destination", "192.168.0.0/16"}, []string{idRaw}},
		{"destination CIDR none", []string{"--destination", "172.16.0.0/12"}, nil},
		{"destination CIDR v6", []string{"--destination", "fd00::/8"}, nil},
		{"destination substring", []string{"--destination", ":5432"}, []string{idRaw}},
		{"verdict lower case", []string{"--verdict", "error"}, []string{idRaw}},
		{"verdict of unfinished from meta", []string{"--verdict", "UPGRADED"}, []string{idTampered, idSealed, idEvil, idUnfinished}},
		{"combined", []string{"--since", "3h", "--workload", "api-7f9", "--verdict", "upgraded"}, []string{idSealed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := f.sessions(t, f.dir, append([]string{"list", "-o", "json"}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(listJSON(t, out)); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSessionsListErrors(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", "yaml"}, `-o "yaml": want table or json`},
		{[]string{"--since", "yesterday"}, `--since "yesterday": want an RFC 3339 time`},
		{[]string{"--until", "2026-13-01"}, `--until "2026-13-01": want an RFC 3339 time`},
		{[]string{"--destination", "10.0.0.0/99"}, `--destination "10.0.0.0/99"`},
		{[]string{"extra-arg"}, `unknown command "extra-arg"`},
	} {
		out, err := f.sessions(t, f.dir, append([]string{"list"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("list %v: error %v, want %q", tc.args, err, tc.want)
		}
		if out != "" {
			t.Errorf("list %v printed %q", tc.args, out)
		}
	}
	if _, err := f.sessions(t, filepath.Join(f.dir, "missing"), "list"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing --dir: %v", err)
	}
}

func TestSessionsShow(t *testing.T) {
	f := newFixture(t)
	out, err := f.sessions(t, f.dir, "show", idSealed)
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`Session:\s+` + idSealed,
		`Status:\s+sealed`,
		`Rule:\s+payments-http \(record: full\)`,
		`Verdict:\s+UPGRADED`,
		`Bytes:\s+123 sent, 456 received`,
		`Workload:\s+pod/payments/api-7f9`,
		`Process:\s+pid 4242, comm "python3", uid 1000, gid 1000`,
		`Executable:\s+/usr/bin/python3`,
		`Cgroup:\s+/kubepods.slice/`,
		`Container:\s+containerd 0a1b2c3d4e5f6071`,
		`Pod:\s+payments/api-7f9 \(uid uid-1234, service account payments-sa\)`,
		`Destination:\s+10.0.0.9:80`,
		`TLS:\s+TLS 1.3 TLS_AES_128_GCM_SHA256`,
		`Peer certificate:\s+CN=api.internal`,
		`Exchanges:\s+2\n`,
		`Raw segments:\s+2\n`,
		`Note:\s+upgrade: switched to websocket`,
		`  #1 POST /api/v1/charges -> 201\n  #2 GET /api/v1/charges/7 -> 404\n`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("show lacks %s:\n%s", re, out)
		}
	}
	if strings.Contains(out, "Problem:") {
		t.Errorf("sealed recording with problems:\n%s", out)
	}

	out, err = f.sessions(t, f.dir, "show", idTampered)
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{`Status:\s+tampered`, `Problem:\s+chunk \d+: hash mismatch \(tampered\)`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("tampered show lacks %s:\n%s", re, out)
		}
	}

	out, err = f.sessions(t, f.dir, "show", idUnfinished)
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{`Status:\s+unfinished`, `Problem:\s+unfinished: no seal`, `Verdict:\s+UPGRADED`, `  #1 GET /pending\n`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("unfinished show lacks %s:\n%s", re, out)
		}
	}

	if _, err := f.sessions(t, f.dir, "show", idMissing); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing recording: %v", err)
	}
	if _, err := f.sessions(t, f.dir, "show"); err == nil || !strings.Contains(err.Error(), "accepts 1 arg") {
		t.Errorf("no id: %v", err)
	}
}

func TestSessionsVerify(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		dir, id string
		key     string // key file, "" for none
		status  recording.Status
	}{
		{f.dir, idSealed, "", recording.StatusSealed},
		{f.dir, idRaw, "", recording.StatusSealed},
		{f.dir, idTampered, "", recording.StatusTampered},
		{f.dir, idUnfinished, "", recording.StatusUnfinished},
		{f.keyedDir, idKeyed, f.keyFile, recording.StatusSealed},
		{f.keyedDir, idKeyed, "", recording.StatusUnverified},
		{f.keyedDir, idKeyed, f.wrongKeyFile, recording.StatusTampered},
		// A key given for an unkeyed recording: an attacker could have
		// recomputed the plain chain.
		{f.dir, idSealed, f.keyFile, recording.StatusTampered},
	} {
		args := []string{"verify", tc.id}
		if tc.key != "" {
			args = append(args, "--key-file", tc.key)
		}
		out, err := f.sessions(t, tc.dir, args...)
		if !strings.HasPrefix(out, tc.id+": "+string(tc.status)+" (") {
			t.Errorf("verify %s key %q: output %q, want status %s", tc.id, tc.key, out, tc.status)
		}
		if tc.status == recording.StatusSealed {
			if err != nil {
				t.Errorf("verify %s key %q: %v", tc.id, tc.key, err)
			}
			continue
		}
		if !errors.Is(err, errVerify) || !strings.HasSuffix(err.Error(), ": "+string(tc.status)) {
			t.Errorf("verify %s key %q: error %v, want errVerify with %s", tc.id, tc.key, err, tc.status)
		}
		if !strings.Contains(out, "\n  ") {
			t.Errorf("verify %s key %q: no problems listed: %q", tc.id, tc.key, out)
		}
	}

	out, err := f.sessions(t, f.dir, "verify", idTampered, "--json")
	if !errors.Is(err, errVerify) {
		t.Errorf("verify --json tampered: %v", err)
	}
	var res recording.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, out)
	}
	if res.ID != idTampered || res.Status != recording.StatusTampered || len(res.Problems) == 0 || res.Chunks == 0 {
		t.Errorf("verify --json: %+v", res)
	}

	if _, err := f.sessions(t, f.keyedDir, "verify", idKeyed, "--key-file", filepath.Join(f.dir, "nope")); err == nil || !strings.Contains(err.Error(), "key file") {
		t.Errorf("unreadable key file: %v", err)
	}
	if _, err := f.sessions(t, f.dir, "verify", idMissing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("verify missing: %v", err)
	}
}

// harLog is the part of HAR 1.2 the tests look at.
type harLog struct {
	Log struct {
		Version string `json:"version"`
		Comment string `json:"comment"`
		Entries []struct {
			Request struct {
				Method string `json:"method"`
				URL    string `json:"url"`
			} `json:"request"`
			Response struct {
				Status  int `json:"status"`
				Content struct {
					Text string `json:"text"`
				} `json:"content"`
			} `json:"response"`
		} `json:"entries"`
	} `json:"log"`
}

func TestSessionsExport(t *testing.T) {
	f := newFixture(t)
	tmp := t.TempDir()

	// HAR to stdout (-o - is the default).
	out, err := f.sessions(t, f.dir, "export", idSealed, "--format", "har")
	if err != nil {
		t.Fatal(err)
	}
	var h harLog
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		t.Fatalf("HAR: %v\n%s", err, out)
	}
	if h.Log.Version != "1.2" || len(h.Log.Entries) != 2 {
		t.Fatalf("HAR: version %q, %d entries", h.Log.Version, len(h.Log.Entries))
	}
	e0, e1 := h.Log.Entries[0], h.Log.Entries[1]
	if e0.Request.Method != "POST" || !strings.HasSuffix(e0.Request.URL, "/api/v1/charges") || e0.Response.Status != 201 || e0.Response.Content.Text != "secret-body" {
		t.Errorf("HAR entry 0: %+v", e0)
	}
	if e1.Request.Method != "GET" || e1.Response.Status != 404 {
		t.Errorf("HAR entry 1: %+v", e1)
	}

	// HAR to a file: created 0600.
	harPath := filepath.Join(tmp, "s.har")
	if out, err := f.sessions(t, f.dir, "export", idSealed, "--format", "har", "-o", harPath); err != nil || out != "" {
		t.Fatalf("export -o: %v, stdout %q", err, out)
	}
	checkMode(t, harPath, 0o600)
	b, err := os.ReadFile(harPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &h); err != nil || len(h.Log.Entries) != 2 {
		t.Errorf("HAR file: %v, %d entries", err, len(h.Log.Entries))
	}

	// JSON (the default format).
	jsonPath := filepath.Join(tmp, "s.json")
	if _, err := f.sessions(t, f.dir, "export", idSealed, "-o", jsonPath); err != nil {
		t.Fatal(err)
	}
	checkMode(t, jsonPath, 0o600)
	var js struct {
		Meta      recording.Meta `json:"meta"`
		Status    string         `json:"status"`
		Exchanges []struct {
			N uint32 `json:"n"`
		} `json:"exchanges"`
		Raw []struct {
			Data string `json:"data"`
		} `json:"raw"`
	}
	b, _ = os.ReadFile(jsonPath)
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatalf("JSON: %v\n%s", err, b)
	}
	if js.Meta.ID != idSealed || js.Status != "sealed" || len(js.Exchanges) != 2 || len(js.Raw) != 2 || js.Raw[0].Data != "raw-ping" {
		t.Errorf("JSON export: %+v", js)
	}

	// pcapng: a Section Header Block first.
	pcapPath := filepath.Join(tmp, "s.pcapng")
	if _, err := f.sessions(t, f.dir, "export", idSealed, "--format", "pcapng", "-o", pcapPath); err != nil {
		t.Fatal(err)
	}
	checkMode(t, pcapPath, 0o600)
	b, _ = os.ReadFile(pcapPath)
	if len(b) < 12 || binary.LittleEndian.Uint32(b) != 0x0A0D0D0A || binary.LittleEndian.Uint32(b[8:]) != 0x1A2B3C4D {
		t.Errorf("pcapng: starts % x", b[:min(len(b), 12)])
	}
	out, err = f.sessions(t, f.dir, "export", idRaw, "--format", "pcapng")
	if err != nil || len(out) < 4 || binary.LittleEndian.Uint32([]byte(out)) != 0x0A0D0D0A {
		t.Errorf("pcapng of a raw session to stdout: %v", err)
	}

	// A raw-only session has no HAR; the output file is neither created
	// nor, if it exists, truncated.
	rawHAR := filepath.Join(tmp, "raw.har")
	_, err = f.sessions(t, f.dir, "export", idRaw, "--format", "har", "-o", rawHAR)
	if err == nil || !strings.Contains(err.Error(), "no HTTP exchanges") || !strings.Contains(err.Error(), "pcapng or json") {
		t.Errorf("raw to HAR: %v", err)
	}
	if _, err := os.Stat(rawHAR); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed export created %s: %v", rawHAR, err)
	}
	writeFile(t, rawHAR, []byte("keep me"))
	if _, err := f.sessions(t, f.dir, "export", idRaw, "--format", "har", "-o", rawHAR); err == nil {
		t.Error("raw to HAR succeeded")
	}
	if b, _ := os.ReadFile(rawHAR); string(b) != "keep me" {
		t.Errorf("failed export truncated an existing file: %q", b)
	}

	// A bad format is refused before anything is read or written.
	badPath := filepath.Join(tmp, "bad")
	if _, err := f.sessions(t, f.dir, "export", idSealed, "--format", "csv", "-o", badPath); err == nil || !strings.Contains(err.Error(), `--format "csv": want har, pcapng or json`) {
		t.Errorf("bad format: %v", err)
	}
	if _, err := os.Stat(badPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bad format created the output")
	}

	// A tampered recording's export says so, and why.
	out, err = f.sessions(t, f.dir, "export", idTampered, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var tj struct {
		Status   string   `json:"status"`
		Problems []string `json:"problems"`
	}
	if err := json.Unmarshal([]byte(out), &tj); err != nil {
		t.Fatal(err)
	}
	if tj.Status != "tampered" || !slices.ContainsFunc(tj.Problems, func(p string) bool { return strings.Contains(p, "hash mismatch") }) {
		t.Errorf("tampered JSON export: status %q, problems %q", tj.Status, tj.Problems)
	}
	out, err = f.sessions(t, f.dir, "export", idTampered, "--format", "har")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), &h); err != nil || !strings.Contains(h.Log.Comment, "tampered") || !strings.Contains(h.Log.Comment, "hash mismatch") {
		t.Errorf("tampered HAR comment: %v %q", err, h.Log.Comment)
	}

	// The keyed recording exports with its key.
	out, err = f.sessions(t, f.keyedDir, "export", idKeyed, "--key-file", f.keyFile)
	if err != nil || !strings.Contains(out, `"status": "sealed"`) {
		t.Errorf("keyed export: %v", err)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
	}
}

func TestSessionsReplay(t *testing.T) {
	f := newFixture(t)
	start := time.Now()
	out, err := f.sessions(t, f.dir, "replay", idSealed, "--speed", "0")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("--speed 0 waited %v", d)
	}
	// In time order: exchange 1, exchange 2, the raw data, the end.
	want := []string{
		"session     " + idSealed,
		"workload    pod/payments/api-7f9 (python3, pid 4242, uid 1000)",
		"recording   sealed",
		"→ POST /api/v1/charges HTTP/1.1",
		`{"amount": 4200}`,
		"← HTTP/1.1 201 Created",
		"secret-body",
		"→ GET /api/v1/charges/7 HTTP/1.1",
		"← HTTP/1.1 404 Not Found",
		"note upgrade: switched to websocket",
		"raw-ping",
		"raw-pong",
		"end: 123 bytes sent, 456 bytes received, verdict UPGRADED",
	}
	pos := 0
	for _, w := range want {
		i := strings.Index(out[pos:], w)
		if i < 0 {
			t.Fatalf("replay: %q missing or out of order after byte %d:\n%s", w, pos, out)
		}
		pos += i + len(w)
	}

	out, err = f.sessions(t, f.dir, "replay", idTampered, "--speed", "0")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "!!! WARNING: recording tampered") || !strings.Contains(out, "!!! problem: chunk") {
		t.Errorf("tampered replay does not warn with the problems:\n%s", out)
	}
}

func TestSessionsInvalidIDs(t *testing.T) {
	f := newFixture(t)
	// A recording outside the directory, reachable only through ".." or a
	// symlink.
	outside := filepath.Join(filepath.Dir(f.dir), "outside")
	if err := os.MkdirAll(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(f.dir, idSealed+".rec"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(outside, idSealed+".rec"), b)
	const linked = "00000000000000ff"
	if err := os.Symlink(filepath.Join(outside, idSealed+".rec"), filepath.Join(f.dir, linked+".rec")); err != nil {
		t.Fatal(err)
	}

	for _, id := range []string{
		"../etc/passwd",
		"../../../../../../../etc/passwd",
		"../outside/" + idSealed,
		"abc",
		"00000000000000A1", // upper case
		"00000000000000a1.rec",
		"",
		"/etc/passwd",
	} {
		for _, cmd := range [][]string{{"show"}, {"verify"}, {"replay"}, {"export", "--format", "json"}} {
			args := append(append([]string{}, cmd...), id)
			out, err := f.sessions(t, f.dir, args...)
			if err == nil || !errors.Is(err, recording.ErrInvalidID) || !strings.Contains(err.Error(), "invalid recording id") {
				t.Errorf("%v: error %v, want an invalid id error", args, err)
			}
			if out != "" {
				t.Errorf("%v printed %q", args, out)
			}
		}
	}
	// The symlink is not followed, and not listed.
	for _, cmd := range []string{"show", "verify", "replay", "export"} {
		out, err := f.sessions(t, f.dir, cmd, linked)
		if err == nil || strings.Contains(out, "POST") {
			t.Errorf("%s through a symlink: %v\n%s", cmd, err, out)
		}
	}
	out, err := f.sessions(t, f.dir, "list")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, linked) {
		t.Errorf("list shows the symlink:\n%s", out)
	}
}

func TestSafe(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "",
		"pod/ns/name":        "pod/ns/name",
		"café – ok":          "café – ok",
		"ev\x1b[31mil":       `"ev\x1b[31mil"`,
		"tab\there":          `"tab\there"`,
		"line\nbreak":        `"line\nbreak"`,
		"del\x7f":            `"del\x7f"`,
		"c1\u009b2J":         `"c1\u009b2J"`,
		"bad\x9butf8":        `"bad\x9butf8"`,
		"bidi\u202eevil":     `"bidi\u202eevil"`,
		"zero\u200bwidth":    `"zero\u200bwidth"`,
		"real \ufffd stays":  "real \ufffd stays",
		"title\x1b]0;x\x07!": `"title\x1b]0;x\a!"`,
	} {
		if got := safe(in); got != want {
			t.Errorf("safe(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSessionsNoRawEscapes(t *testing.T) {
	f := newFixture(t)
	for _, args := range [][]string{
		{"list"},
		{"show", idEvil},
		{"replay", idEvil, "--speed", "0"},
		{"verify", idEvil},
	} {
		out, err := f.sessions(t, f.dir, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		noEscapes(t, strings.Join(args, " "), out)
	}
	out, _ := f.sessions(t, f.dir, "list")
	if row := tableRow(t, out, idEvil); !strings.Contains(row, `"pod/payments/pod\x1b]0;pwned\a"`) {
		t.Errorf("evil workload not quoted: %q", row)
	}
	out, _ = f.sessions(t, f.dir, "show", idEvil)
	if !strings.Contains(out, `comm \"ev\x1b[31mil\"`) && !strings.Contains(out, `comm "ev\x1b[31mil"`) {
		t.Errorf("evil comm not escaped:\n%s", out)
	}
	// The filter still sees the real strings.
	out, err := f.sessions(t, f.dir, "list", "-o", "json", "--workload", evilComm)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(listJSON(t, out)); !slices.Equal(got, []string{idEvil}) {
		t.Errorf("--workload with the raw comm: %v", got)
	}
}

// TestSessionsViaAPI: without --dir, the agent says where the recordings
// are and which sessions are open.
func TestSessionsViaAPI(t *testing.T) {
	f := newFixture(t)
	b := &fakeBackend{recordings: api.Recordings{Dir: f.dir, Active: []string{idUnfinished}}}
	socket := serveAPI(t, b)
	viaAPI := func(args ...string) (string, error) {
		args = append(append([]string{"sessions"}, args...), "--socket", socket, "--config", noConfig(t))
		out, _, err := run(t, args...)
		return out, err
	}

	out, err := viaAPI("list")
	if err != nil {
		t.Fatal(err)
	}
	if row := tableRow(t, out, idUnfinished); !strings.HasSuffix(row, " open") {
		t.Errorf("active session not open: %q", row)
	}
	if strings.Contains(out, "unfinished") {
		t.Errorf("list says unfinished:\n%s", out)
	}
	if row := tableRow(t, out, idTampered); !strings.HasSuffix(row, " tampered") {
		t.Errorf("tampered row: %q", row)
	}

	out, err = viaAPI("list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range listJSON(t, out) {
		if s.ID == idUnfinished && (s.Status != recording.StatusOpen || len(s.Problems) != 0) {
			t.Errorf("active session in JSON: status %s, problems %q", s.Status, s.Problems)
		}
	}

	out, err = viaAPI("show", idUnfinished)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`Status:\s+open\n`).MatchString(out) || strings.Contains(out, "Problem:") {
		t.Errorf("show of an active session:\n%s", out)
	}

	// An open recording is not a verification failure; --json says open too.
	out, err = viaAPI("verify", idUnfinished, "--json")
	if err != nil {
		t.Errorf("verify of an active session: %v", err)
	}
	var res recording.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Status != recording.StatusOpen {
		t.Errorf("verify --json of an active session: %v %+v", err, res)
	}
	if _, err := viaAPI("verify", idTampered); !errors.Is(err, errVerify) {
		t.Errorf("verify tampered via the API: %v", err)
	}

	// A file read while the agent is writing it can end mid-chunk: that is
	// an open session too, not a truncated recording.
	liveDir := filepath.Join(t.TempDir(), "live")
	ls, err := recording.OpenStore(liveDir, recording.StoreOptions{MaxSessionBytes: 1 << 20, MaxTotalBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	const idLive = "00000000000000ee"
	w := create(t, ls, meta(idLive, f.now, podProcess("curl", "live-0")))
	appendChunks(t, w, f.now, recording.Chunk{Kind: recording.KindData, Dir: recording.DirClientToServer, Payload: []byte("partial")})
	if err := w.Abandon(); err != nil {
		t.Fatal(err)
	}
	ls.Close()
	livePath := filepath.Join(liveDir, idLive+".rec")
	fi, err := os.Stat(livePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(livePath, fi.Size()-5); err != nil {
		t.Fatal(err)
	}
	if out, err := f.sessions(t, liveDir, "verify", idLive); !strings.HasPrefix(out, idLive+": truncated") || err == nil {
		t.Fatalf("cut file with --dir: %v %q", err, out)
	}
	b.setRecordings(api.Recordings{Dir: liveDir, Active: []string{idLive}}, nil)
	out, err = viaAPI("show", idLive)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`Status:\s+open\n`).MatchString(out) || strings.Contains(out, "Problem:") {
		t.Errorf("show of an active session read mid-write:\n%s", out)
	}
	if out, err := viaAPI("verify", idLive); err != nil || !strings.HasPrefix(out, idLive+": open") {
		t.Errorf("verify of an active session read mid-write: %v %q", err, out)
	}

	// The agent's key file is used for a keyed store.
	b.setRecordings(api.Recordings{Dir: f.keyedDir, KeyFile: f.keyFile}, nil)
	out, err = viaAPI("list")
	if err != nil {
		t.Fatal(err)
	}
	if row := tableRow(t, out, idKeyed); !strings.HasSuffix(row, " sealed") {
		t.Errorf("keyed via the API: %q", row)
	}

	// The agent has no recordings and there is no config: a clear error.
	b.setRecordings(api.Recordings{}, errors.New("no rule records sessions"))
	_, err = viaAPI("list")
	if err == nil || !strings.Contains(err.Error(), "no rule records sessions") || !strings.Contains(err.Error(), "pass --dir") {
		t.Errorf("agent without recordings: %v", err)
	}
}

func TestSessionsNoAgentNoConfig(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "none.sock")
	_, _, err := run(t, "sessions", "list", "--socket", socket, "--config", noConfig(t))
	if err == nil || !strings.Contains(err.Error(), "reach the agent") || !strings.Contains(err.Error(), "pass --dir") {
		t.Errorf("no agent, no config: %v", err)
	}
}
