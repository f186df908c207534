package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/intransit/intransit/internal/testutil"
	"github.com/intransit/intransit/pkg/recording"
	"github.com/intransit/intransit/pkg/transcript"
)

// Canary secrets: each must be absent from every output (threat T11).
const (
	canaryClientBearer = "CanaryClientBearer7f3a"
	canaryInjected     = "CanaryInjectedCredential9b1c"
	canaryInjected2    = "CanaryRotatedCredential2a4d"
	canaryCookie       = "CanaryCookie2d8e"
	canaryAPIKey       = "CanaryXApiKey5c4f"
	canaryPassword     = "CanaryPassword6a7b"
	canaryNestedKey    = "CanaryNestedApiKey1e2f"
	canaryQuery        = "CanaryQueryToken3c9d"
	canarySetCookie    = "CanarySetCookie8f0a"
	canaryRespToken    = "CanaryResponseToken4b6c"
	canaryJWTSig       = "CanaryJwtSignature0d1e"
	canaryRawAWS       = "AKIACANARYRAW1234567"
	canaryRawBearer    = "CanaryRawBearerToken5f6a"
)

var canaries = []string{canaryClientBearer, canaryInjected, canaryInjected2, canaryCookie, canaryAPIKey, canaryPassword,
	canaryNestedKey, canaryQuery, canarySetCookie, canaryRespToken, canaryJWTSig, canaryRawAWS, canaryRawBearer}

// jwtCanary is a syntactically valid JWT whose signature is a canary.
const jwtCanary = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0." + canaryJWTSig

// syncBuffer collects the agent's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// startHTTPSExecutor is a TLS HTTP server that records the Authorization
// headers it receives and answers with secrets of its own.
func startHTTPSExecutor(t *testing.T, p *pki, seen *[]string, mu *sync.Mutex) int {
	t.Helper()
	h := http.NewServeMux()
	h.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		*seen = append(*seen, r.Header.Values("Authorization")...)
		mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/jwt":
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "your token is %s, keep it safe\n", jwtCanary)
		default:
			http.SetCookie(w, &http.Cookie{Name: "session", Value: canarySetCookie})
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"ok":true,"path":%q,"got":%d,"token":%q,"items":[1,2,3]}`, r.URL.Path, len(body), canaryRespToken)
		}
	})
	srv := httptest.NewUnstartedServer(h)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	srv.Listener = ln
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.server.TLS}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return ln.Addr().(*net.TCPAddr).Port
}

// TestRecordingRedactionAndInjection runs HTTP and raw sessions through
// rules with record: full, one injecting a credential, then searches every
// output (recordings, audit trail, agent log, metrics, exports) for the
// canary secrets, and checks the recordings hold what they should.
func TestRecordingRedactionAndInjection(t *testing.T) {
	p := newPKI(t)
	var mu sync.Mutex
	var seenAuth []string
	httpPort := startHTTPSExecutor(t, p, &seenAuth, &mu)
	rawSrv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)

	dir := t.TempDir()
	recDir := filepath.Join(dir, "recordings")
	credFile := filepath.Join(dir, "executor-token")
	must(t, os.WriteFile(credFile, []byte("Bearer "+canaryInjected+"\n"), 0o600))
	protHTTP, protRaw := freePort(t), freePort(t)
	var logBuf syncBuffer
	r := startAgent(t, agentOpts{enter: true, log: &logBuf,
		extra: fmt.Sprintf("recordings: {dir: %s}\n", recDir),
		rules: fmt.Sprintf(`  - name: http
    ports: [%d]
    mode: enforce
    record: full
    inject: {header: Authorization, valueFile: %s}
    upstream: {tls: {port: %d, caFile: %s}}
  - name: raw
    ports: [%d]
    mode: enforce
    record: full
    upstream: {tls: {port: %d, caFile: %s}}
`, protHTTP, credFile, httpPort, p.ca.File, protRaw, rawSrv.port, p.ca.File)})

	// Three exchanges on one keep-alive connection.
	tr := &http.Transport{MaxConnsPerHost: 1}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	base := fmt.Sprintf("http://127.0.0.1:%d", protHTTP)
	do := func(method, path, body string) string {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		must(t, err)
		req.Header.Set("Authorization", "Bearer "+canaryClientBearer)
		req.Header.Set("Cookie", "sid="+canaryCookie)
		req.Header.Set("X-Api-Key", canaryAPIKey)
		req.Header.Set("X-Request-Note", "visible-note")
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %s", method, path, resp.Status)
		}
		return string(b)
	}
	do("GET", "/status?verbose=1&access_token="+canaryQuery, "")
	got := do("POST", "/run", fmt.Sprintf(`{"task":"build-42","password":%q,"nested":{"api_key":%q,"depth":2}}`, canaryPassword, canaryNestedKey))
	if !strings.Contains(got, `"path":"/run"`) {
		t.Fatalf("POST answer %q", got)
	}
	do("GET", "/jwt", "")
	tr.CloseIdleConnections()

	// Credential injection: the executor saw only the held credential.
	mu.Lock()
	for _, a := range seenAuth {
		if a != "Bearer "+canaryInjected {
			t.Errorf("executor saw Authorization %q, want only the injected one", a)
		}
	}
	if len(seenAuth) != 3 {
		t.Errorf("executor saw %d Authorization headers, want 3", len(seenAuth))
	}
	seenAuth = nil
	mu.Unlock()

	// The held credential rotates: the file is re-read when it changes
	// (checked at most once a second).
	must(t, os.WriteFile(credFile, []byte("Bearer "+canaryInjected2+"\n"), 0o600))
	time.Sleep(1100 * time.Millisecond)
	do("GET", "/status", "")
	tr.CloseIdleConnections()
	mu.Lock()
	if len(seenAuth) != 1 || seenAuth[0] != "Bearer "+canaryInjected2 {
		t.Errorf("after rotation the executor saw %q, want the new credential", seenAuth)
	}
	mu.Unlock()

	// A raw (non-HTTP) stream.
	c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", protRaw))
	must(t, err)
	msg := "hello key=" + canaryRawAWS + " auth Bearer " + canaryRawBearer + " end\n"
	if echoed, err := roundTrip(c, msg); err != nil || echoed != msg {
		t.Fatalf("raw echo = %q, %v", echoed, err)
	}
	c.Close()

	r.events(t, countAtLeast(3, "event", "session_end"))
	sums := waitSealed(t, recDir, 3)

	var httpRec, rawRec *transcript.Transcript
	for _, s := range sums {
		rec, err := recording.Load(recDir, s.ID, nil)
		must(t, err)
		tt, err := transcript.Build(transcript.Input{Meta: rec.Meta, Chunks: rec.Chunks, End: rec.End, Status: string(rec.Status)})
		must(t, err)
		switch rec.Meta.Rule {
		case "http":
			if len(tt.Exchanges) == 3 {
				httpRec = tt
			}
		case "raw":
			rawRec = tt
		}
		res, err := recording.Verify(recDir, s.ID, nil)
		must(t, err)
		if res.Status != recording.StatusSealed {
			t.Errorf("verify %s: %s %v", s.ID, res.Status, res.Problems)
		}
	}
	if httpRec == nil || rawRec == nil {
		t.Fatalf("recordings: %+v", sums)
	}

	// The HTTP recording is per exchange, redacted, with injection masked.
	if n := len(httpRec.Exchanges); n != 3 {
		for _, x := range httpRec.Exchanges {
			t.Logf("exchange %d: request %+v response %+v", x.N, x.Request, x.Response)
		}
		t.Fatalf("http recording has %d exchanges, want 3", n)
	}
	post := httpRec.Exchanges[1]
	if post.Request == nil || post.Request.Head.Method != "POST" || post.Response == nil || post.Response.Head.Status != 200 {
		t.Fatalf("exchange 2 = %+v", post)
	}
	body := string(post.Request.Body)
	if !strings.Contains(body, `"task":"build-42"`) || !strings.Contains(body, `"[REDACTED]"`) {
		t.Errorf("recorded POST body %q: want the task visible and the secrets masked", body)
	}
	var auth, note string
	for _, h := range post.Request.Head.Headers {
		switch strings.ToLower(h.Name) {
		case "authorization":
			auth = h.Value
		case "x-request-note":
			note = h.Value
		}
	}
	if auth != "[REDACTED]" || note != "visible-note" {
		t.Errorf("recorded headers: Authorization %q (want masked), X-Request-Note %q (want visible)", auth, note)
	}
	if m := httpRec.Meta; m.Process == nil || m.Process.Exe == "" || m.Process.CgroupPath == "" || m.TLS == nil || m.PeerCertificate == "" {
		t.Errorf("session metadata incomplete: %+v", m)
	}
	var raw bytes.Buffer
	for _, s := range rawRec.Raw {
		raw.Write(s.Data)
	}
	if !strings.Contains(raw.String(), "hello key=") || !strings.Contains(raw.String(), " end") {
		t.Errorf("raw recording %q: want the non-secret text", raw.String())
	}

	// Exports.
	har, err := transcript.HAR(httpRec)
	must(t, err)
	var harDoc struct {
		Log struct {
			Entries []struct {
				Request struct{ Method, URL string } `json:"request"`
			} `json:"entries"`
		} `json:"log"`
	}
	must(t, json.Unmarshal(har, &harDoc))
	if len(harDoc.Log.Entries) != 3 || harDoc.Log.Entries[1].Request.Method != "POST" {
		t.Errorf("HAR entries: %+v", harDoc.Log.Entries)
	}
	var pcap bytes.Buffer
	must(t, transcript.PCAPNG(httpRec, &pcap))
	js, err := transcript.JSON(httpRec)
	must(t, err)
	var replay bytes.Buffer
	must(t, transcript.Replay(httpRec, &replay, transcript.ReplayOptions{}))
	must(t, transcript.Replay(rawRec, &replay, transcript.ReplayOptions{}))
	if !strings.Contains(replay.String(), "POST /run") {
		t.Errorf("replay lacks the POST:\n%s", replay.String())
	}
	pcapFile := filepath.Join(dir, "http.pcapng")
	must(t, os.WriteFile(pcapFile, pcap.Bytes(), 0o600))
	if _, err := exec.LookPath("tshark"); err == nil {
		out, err := exec.Command("tshark", "-r", pcapFile, "-Y", "http.request", "-T", "fields", "-e", "http.request.method", "-e", "http.request.uri").CombinedOutput()
		if err != nil {
			t.Fatalf("tshark: %v\n%s", err, out)
		}
		if strings.Count(string(out), "GET") != 2 || strings.Count(string(out), "POST") != 1 {
			t.Errorf("tshark sees requests:\n%s", out)
		}
	}

	// Every output, searched for every canary.
	outputs := map[string][]byte{
		"agent log": logBuf.Bytes(), "HAR": har, "pcapng": pcap.Bytes(), "JSON export": js, "replay": replay.Bytes(),
	}
	files, _ := filepath.Glob(filepath.Join(recDir, "*"))
	for _, f := range append(files, r.audit) {
		b, err := os.ReadFile(f)
		must(t, err)
		outputs[f] = b
	}
	outputs["metrics"] = scrapeBytes(t, r.metrics)
	if len(files) < 4 {
		t.Errorf("recordings dir holds %v, want 3 recordings and the index", files)
	}
	for name, b := range outputs {
		for _, c := range canaries {
			if bytes.Contains(b, []byte(c)) {
				t.Errorf("canary %s found in %s", c, name)
			}
		}
	}
	for _, f := range files {
		fi, err := os.Stat(f)
		must(t, err)
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if fi, err := os.Stat(recDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("recordings dir mode: %v %v, want 0700", fi.Mode().Perm(), err)
	}
}

// waitSealed waits until dir holds n sealed recordings.
func waitSealed(t *testing.T, dir string, n int) []recording.Summary {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		all, err := recording.List(dir)
		must(t, err)
		var sealed []recording.Summary
		for _, s := range all {
			if s.Status == recording.StatusSealed {
				sealed = append(sealed, s)
			}
		}
		if len(sealed) >= n {
			return sealed
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sealed recordings after 5s, want %d: %+v", len(sealed), n, all)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func scrapeBytes(t *testing.T, addr string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return b
}

// TestRecordingDiskFull fills a small tmpfs under the recordings: with
// onError continue the session completes unrecorded and audited; with close
// the session is ended (threat T12).
func TestRecordingDiskFull(t *testing.T) {
	for _, policy := range []string{"continue", "close"} {
		t.Run(policy, func(t *testing.T) {
			testutil.RequireRoot(t)
			p := newPKI(t)
			srv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)
			recDir := testutil.MountTmpfs(t, "512k")
			port := freePort(t)
			r := startAgent(t, agentOpts{enter: true,
				extra: fmt.Sprintf("recordings: {dir: %s, onError: %s, maxSessionSize: 64MiB, maxTotalSize: 1GiB}\n", recDir, policy),
				rules: fmt.Sprintf(`  - name: full
    ports: [%d]
    mode: enforce
    record: full
    upstream: {tls: {port: %d, caFile: %s}}
`, port, srv.port, p.ca.File)})

			c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
			must(t, err)
			defer c.Close()
			const size = 4 << 20
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			want := make([]byte, size)
			_, _ = rand.Read(want)
			go func() {
				_, _ = c.Write(want)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
			got, rerr := io.ReadAll(bufio.NewReader(c))
			evs := r.events(t, countAtLeast(1, "event", "recording_error"))
			errs := having(evs, "event", "recording_error")
			if len(errs) == 0 {
				t.Fatalf("no recording_error event: %v", evs)
			}
			reason := fmt.Sprint(errs[0]["reason"])
			if !strings.Contains(reason, "no space left") {
				t.Errorf("recording_error reason %q does not name the disk-full error", reason)
			}
			switch policy {
			case "continue":
				if rerr != nil || sha256.Sum256(got) != sha256.Sum256(want) {
					t.Fatalf("continue: echoed %d of %d bytes (%v): the session should go on unrecorded", len(got), size, rerr)
				}
				if !strings.Contains(reason, "continues unrecorded") {
					t.Errorf("reason %q", reason)
				}
			case "close":
				if len(got) == size && rerr == nil {
					t.Fatal("close: the whole stream went through although the recording failed")
				}
				if !strings.Contains(reason, "session closed") {
					t.Errorf("reason %q", reason)
				}
			}
			// What was written before the disk filled stays readable.
			all, err := recording.List(recDir)
			must(t, err)
			if len(all) != 1 || all[0].Status == recording.StatusSealed {
				t.Errorf("recordings after disk full: %+v, want one unsealed", all)
			}
		})
	}
}

// TestWorkloadIdentityPodCgroup runs a client in nested cgroups named like a
// Kubernetes pod's container (systemd and cgroupfs drivers) and checks the
// session's workload: executable, container id, pod uid, and "unknown" for
// what cannot be looked up without a cluster.
func TestWorkloadIdentityPodCgroup(t *testing.T) {
	p := newPKI(t)
	srv := startTLSServer(t, "tcp4", "127.0.0.1:0", p.server.TLS, echo)
	port := freePort(t)
	r := startAgent(t, agentOpts{extra: "identity: {pods: off}\n", metricsExtra: ", workloadLabels: true",
		rules: enforceRule("id", port, srv.port, ", caFile: "+p.ca.File)})
	bash, err := exec.LookPath("bash")
	must(t, err)
	const uid = "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"
	cid := strings.Repeat("ab12", 16)
	forms := map[string]string{
		"systemd":  "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice/cri-containerd-" + cid + ".scope",
		"cgroupfs": "kubepods/burstable/pod" + uid + "/" + cid,
	}
	for name, rel := range forms {
		t.Run(name, func(t *testing.T) {
			leaf := filepath.Join(r.cgroup, rel)
			must(t, os.MkdirAll(leaf, 0o755))
			t.Cleanup(func() {
				for d := leaf; d != r.cgroup; d = filepath.Dir(d) {
					_ = os.Remove(d)
				}
			})
			fd, err := unix.Open(leaf, unix.O_DIRECTORY|unix.O_RDONLY, 0)
			must(t, err)
			defer unix.Close(fd)
			cmd := exec.Command(bash, "-c", fmt.Sprintf(`exec 3<>/dev/tcp/127.0.0.1/%d; printf 'ping-%s\n' >&3; head -c 10 <&3`, port, name))
			cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("client: %v: %s", err, out)
			}
			var proc map[string]any
			evs := r.events(t, func(evs []map[string]any) bool {
				for _, e := range having(evs, "event", "session_start") {
					pr, _ := e["process"].(map[string]any)
					if strings.HasSuffix(fmt.Sprint(pr["cgroup_path"]), rel) {
						proc = pr
					}
				}
				return proc != nil
			})
			if proc == nil {
				t.Fatalf("no session_start from %s: %v", rel, evs)
			}
			if exe := fmt.Sprint(proc["exe"]); filepath.Base(exe) != "bash" {
				t.Errorf("exe = %q, want bash", exe)
			}
			ctr, _ := proc["container"].(map[string]any)
			if ctr["id"] != cid || ctr["runtime"] == nil {
				t.Errorf("container = %v, want id %s", ctr, cid)
			}
			pod, _ := proc["pod"].(map[string]any)
			if pod["uid"] != uid || pod["namespace"] != "unknown" || pod["name"] != "unknown" {
				t.Errorf("pod = %v, want uid %s and unknown namespace/name (no cluster)", pod, uid)
			}
			// metrics.workloadLabels: a bounded label, namespace/service account.
			m := scrape(t, r.metrics)
			if !strings.Contains(m, `intransit_workload_connections_total{rule="id",verdict="UPGRADED",workload="unknown/unknown"}`) {
				t.Errorf("no workload-labelled connection counter in:\n%s", grepLines(m, "workload"))
			}
		})
	}
}
