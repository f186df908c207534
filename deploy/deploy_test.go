// Package deploy_test validates the deployment artifacts offline: the Helm
// chart (rendered with Helm's Go library), the Kubernetes manifest rendered
// from it, the systemd unit and the Dockerfile. No cluster, helm binary,
// docker engine or network is needed.
//
//	go test ./deploy/                                 # check everything
//	go test ./deploy/ -run TestRenderedManifest -update  # re-render kubernetes/intransit.yaml
package deploy_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/intransit/intransit/pkg/config"
)

// Paths, relative to this package's directory.
const (
	manifestPath   = "kubernetes/intransit.yaml"
	chartDir       = "helm/intransit"
	unitPath       = "systemd/intransit.service"
	hostConfigPath = "systemd/intransit.yaml"
	dockerfilePath = "../Dockerfile"
	dockerignore   = "../.dockerignore"
	goModPath      = "../go.mod"
)

// wantCaps is the documented capability set, without the CAP_ prefix. It must
// be the same in the DaemonSet (without its privileged and
// resolveExecutables switches) and the systemd unit. CAP_DAC_OVERRIDE is
// deliberately absent: the agent runs as uid 0 and owns every path it writes.
var wantCaps = []string{"BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitDocs splits a multi-document YAML stream, dropping documents that
// hold only comments and blank lines.
func splitDocs(data []byte) []string {
	var docs []string
	for _, d := range docSep.Split(string(data), -1) {
		for line := range strings.SplitSeq(d, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				docs = append(docs, d)
				break
			}
		}
	}
	return docs
}

// strict decodes one document into out, refusing unknown and duplicate
// fields, so a typo'd key fails the test instead of being dropped by the API
// server.
func strict(t *testing.T, doc string, out any) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(doc), out); err != nil {
		t.Fatalf("strict decode into %T: %v\n%s", out, err, doc)
	}
}

// parseConfig runs the agent's own loader on an intransit.yaml. Parse also
// checks that the files and directories it names exist, which on this
// machine they need not (they are on the node, or in Secrets): each prefix
// in swap is replaced with its value first (for files the test created),
// and the audit file, when not "-", with one in a temporary directory. The
// original audit path is returned for the callers to check against the
// mounts.
func parseConfig(t *testing.T, data []byte, swap map[string]string) (cfg *config.Config, auditFile string) {
	t.Helper()
	var peek config.Config
	if err := yaml.Unmarshal(data, &peek); err != nil {
		t.Fatalf("decode config: %v", err)
	}
	text := string(data)
	for from, to := range swap {
		text = strings.ReplaceAll(text, from, to)
	}
	auditFile = peek.Audit.File
	if auditFile != "" && auditFile != config.AuditStdout {
		tmp := filepath.Join(t.TempDir(), filepath.Base(auditFile))
		text = strings.ReplaceAll(text, auditFile, tmp)
	}
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatalf("config.Parse:\n%v\n--- config ---\n%s", err, text)
	}
	if auditFile == "" {
		auditFile = config.DefaultAuditFile
	}
	return cfg, auditFile
}

// under reports whether p is dir or below it.
func under(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func jsonString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// unit is a parsed systemd unit: section -> key -> values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, data []byte) unit {
	t.Helper()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			if strings.HasSuffix(line, `\`) {
				t.Fatalf("line %d: continuation lines are not supported by this check", n)
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("line %d: %q is not key=value in a section", n, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	return u
}

// one returns the single value of key, failing if it is absent or repeated.
func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Errorf("[%s] %s: %d values %q, want exactly one", section, key, len(v), v)
		return ""
	}
	return v[0]
}

func TestSystemdUnit(t *testing.T) {
	u := parseUnit(t, readFile(t, unitPath))
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			t.Fatalf("no [%s] section", s)
		}
	}
	want := map[string]string{
		"Type":             "notify", // the agent sends READY=1 (pkg/sdnotify)
		"NotifyAccess":     "main",
		"WatchdogSec":      "30s", // the agent pings at half of it
		"PrivateDevices":   "yes",
		"ExecStart":        "/usr/local/bin/intransit agent --config /etc/intransit/intransit.yaml",
		"ExecReload":       "/bin/kill -HUP $MAINPID",
		"Restart":          "always",
		"RestartSec":       "1",
		"NoNewPrivileges":  "yes",
		"ProtectSystem":    "strict",
		"ProtectHome":      "yes",
		"PrivateTmp":       "yes",
		"RuntimeDirectory": "intransit",
		"LogsDirectory":    "intransit",
		"LimitNOFILE":      "1048576",
		"LimitMEMLOCK":     "infinity",
	}
	for k, v := range want {
		if got := u.one(t, "Service", k); got != v {
			t.Errorf("[Service] %s=%q, want %q", k, got, v)
		}
	}
	if got := u.one(t, "Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("WantedBy=%q", got)
	}

	// Fail closed: nothing may uninstall the datapath when the service stops.
	for _, k := range []string{"ExecStop", "ExecStopPost"} {
		for _, v := range u["Service"][k] {
			if strings.Contains(v, "uninstall") {
				t.Errorf("%s=%s: stopping the service must not uninstall (fail closed)", k, v)
			}
		}
	}

	// The DaemonSet's set plus SYS_PTRACE, the host equivalent of the
	// chart's resolveExecutables switch: workload executables in audit
	// events and recordings.
	var wantSet []string
	for _, c := range append(slices.Clone(wantCaps), "SYS_PTRACE") {
		wantSet = append(wantSet, "CAP_"+c)
	}
	for _, k := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		got := strings.Fields(u.one(t, "Service", k))
		if !slices.Equal(sortedCopy(got), sortedCopy(wantSet)) {
			t.Errorf("%s=%v, want the DaemonSet's set plus CAP_SYS_PTRACE %v", k, got, wantSet)
		}
	}

	var rw []string
	for _, v := range u["Service"]["ReadWritePaths"] {
		rw = append(rw, strings.Fields(v)...)
	}
	for _, p := range []string{"/sys/fs/bpf", "/var/log/intransit", "/run/intransit"} {
		if !slices.Contains(rw, p) {
			t.Errorf("ReadWritePaths %v lacks %s", rw, p)
		}
	}

	// The example host config parses, and what it writes is writable.
	cfg, auditFile := parseConfig(t, readFile(t, hostConfigPath), nil)
	writable := func(p string) bool {
		for _, d := range rw {
			if under(p, d) {
				return true
			}
		}
		return false
	}
	if !writable(cfg.BPF.PinPath) {
		t.Errorf("bpf.pinPath %q is not under ReadWritePaths %v", cfg.BPF.PinPath, rw)
	}
	if auditFile != config.AuditStdout && !writable(auditFile) {
		t.Errorf("audit.file %q is not under ReadWritePaths %v", auditFile, rw)
	}
	if !writable(cfg.API.Socket) {
		t.Errorf("api.socket %q is not under ReadWritePaths %v", cfg.API.Socket, rw)
	}
	if cfg.Cgroup != "" {
		t.Errorf("host example cgroup %q: leave it empty for the whole host", cfg.Cgroup)
	}

	// systemd must not kill the agent while it drains: TimeoutStopSec
	// exceeds proxy.drainTimeout, with 10s to spare for the rest.
	unitDuration := func(key, v string) config.Duration {
		t.Helper()
		if v != "" && strings.Trim(v, "0123456789") == "" {
			v += "s" // a bare number is seconds
		}
		var d config.Duration
		if err := d.UnmarshalJSON([]byte(`"` + v + `"`)); err != nil {
			t.Errorf("%s=%s: not a duration this check understands: %v", key, v, err)
		}
		return d
	}
	stopTimeout := unitDuration("TimeoutStopSec", u.one(t, "Service", "TimeoutStopSec"))
	spare := unitDuration("spare", "10s")
	if drain := cfg.Proxy.DrainTimeout; stopTimeout.Duration < drain.Duration+spare.Duration {
		t.Errorf("TimeoutStopSec=%s, want at least proxy.drainTimeout (%s) + %s", stopTimeout, drain, spare)
	}
	if wd := unitDuration("WatchdogSec", u.one(t, "Service", "WatchdogSec")); wd.Duration <= 0 {
		t.Errorf("WatchdogSec=%s: want the watchdog on", wd)
	}

	// The notify socket and the API are unix sockets.
	if fams := strings.Fields(u.one(t, "Service", "RestrictAddressFamilies")); !slices.Contains(fams, "AF_UNIX") {
		t.Errorf("RestrictAddressFamilies=%v lacks AF_UNIX ($NOTIFY_SOCKET, api.socket)", fams)
	}
	// bpf(2) is only in @privileged: a system call filter must name it in
	// an allow list and never deny it, or the agent cannot load anything.
	allowList, allowsBPF := false, false
	for _, v := range u["Service"]["SystemCallFilter"] {
		deny := strings.HasPrefix(v, "~")
		allowList = allowList || !deny
		for _, f := range strings.Fields(strings.TrimPrefix(v, "~")) {
			switch {
			case deny && (f == "bpf" || f == "@privileged"):
				t.Errorf("SystemCallFilter=%s denies bpf(2)", v)
			case !deny && f == "bpf":
				allowsBPF = true
			}
		}
	}
	if allowList && !allowsBPF {
		t.Errorf("SystemCallFilter=%v: an allow list must include bpf explicitly", u["Service"]["SystemCallFilter"])
	}
}

// dockerStage is one FROM ... stage of the Dockerfile.
type dockerStage struct {
	from         string // image, and "AS name" if any
	instructions [][2]string
}

func parseDockerfile(t *testing.T, data []byte) []dockerStage {
	t.Helper()
	var stages []dockerStage
	var logical []string
	cur := ""
	for line := range strings.SplitSeq(string(data), "\n") {
		trim := strings.TrimSpace(line)
		if cur == "" && (trim == "" || strings.HasPrefix(trim, "#")) {
			continue
		}
		if strings.HasPrefix(trim, "#") {
			continue // comment inside a continued instruction
		}
		if strings.HasSuffix(trim, `\`) {
			cur += strings.TrimSuffix(trim, `\`) + " "
			continue
		}
		logical = append(logical, cur+trim)
		cur = ""
	}
	if cur != "" {
		t.Fatal("Dockerfile ends in a line continuation")
	}
	for _, l := range logical {
		op, args, _ := strings.Cut(l, " ")
		op = strings.ToUpper(op)
		args = strings.TrimSpace(args)
		if op == "FROM" {
			stages = append(stages, dockerStage{from: args})
			continue
		}
		if len(stages) == 0 {
			if op != "ARG" {
				t.Fatalf("%s before the first FROM", op)
			}
			continue
		}
		s := &stages[len(stages)-1]
		s.instructions = append(s.instructions, [2]string{op, args})
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, readFile(t, dockerfilePath))
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stages", len(stages))
	}

	build, final := stages[0], stages[len(stages)-1]
	fields := strings.Fields(build.from)
	image := ""
	for _, f := range fields {
		if !strings.HasPrefix(f, "--") {
			image = f
			break
		}
	}
	if !strings.HasPrefix(image, "golang:") || !strings.Contains(strings.ToLower(build.from), " as build") {
		t.Errorf("first stage FROM %q, want golang:... AS build", build.from)
	}
	// The builder's Go must be the go.mod toolchain line.
	goVersion := ""
	for line := range strings.SplitSeq(string(readFile(t, goModPath)), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go "); ok {
			goVersion = strings.TrimSpace(v)
		}
	}
	parts := strings.SplitN(goVersion, ".", 3)
	if len(parts) < 2 || !strings.HasPrefix(image, "golang:"+parts[0]+"."+parts[1]) {
		t.Errorf("build image %q does not match go.mod's go %s", image, goVersion)
	}

	var buildRun string
	for _, s := range stages {
		for _, in := range s.instructions {
			if in[0] != "RUN" {
				continue
			}
			low := strings.ToLower(in[1])
			for _, banned := range []string{"clang", "llvm", "bpf2go", "go generate"} {
				if strings.Contains(low, banned) {
					t.Errorf("RUN %s: the BPF objects are committed, the image must not need %s", in[1], banned)
				}
			}
			if strings.Contains(in[1], "go build") {
				buildRun = in[1]
			}
		}
	}
	for _, s := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/intransit", "github.com/intransit/intransit/pkg/version.Version="} {
		if !strings.Contains(buildRun, s) {
			t.Errorf("go build step %q lacks %s", buildRun, s)
		}
	}

	if strings.Contains(strings.ToLower(final.from), "golang") {
		t.Errorf("final stage FROM %q: must not ship the Go toolchain", final.from)
	}
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %q, want a distroless static image", final.from)
	}
	var entrypoint, cmd string
	copied := false
	for _, in := range final.instructions {
		switch in[0] {
		case "ENTRYPOINT":
			entrypoint = in[1]
		case "CMD":
			cmd = in[1]
		case "COPY":
			copied = copied || strings.Contains(in[1], "--from=build")
		case "RUN":
			t.Errorf("final stage RUN %q: distroless has no shell", in[1])
		case "USER":
			t.Errorf("final stage USER %s: the agent must run as root to hold its capabilities", in[1])
		}
	}
	var ep, args []string
	if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || len(ep) != 1 || ep[0] != "/intransit" {
		t.Errorf("final ENTRYPOINT %q, want [\"/intransit\"] in exec form (%v)", entrypoint, err)
	}
	if err := json.Unmarshal([]byte(cmd), &args); err != nil ||
		!slices.Equal(args, []string{"agent", "--config", "/etc/intransit/intransit.yaml"}) {
		t.Errorf("final CMD %q, want agent --config /etc/intransit/intransit.yaml in exec form", cmd)
	}
	if !copied {
		t.Error("final stage does not COPY --from=build")
	}

	// .dockerignore must not drop what the build needs.
	var patterns []string
	for line := range strings.SplitSeq(string(readFile(t, dockerignore)), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimSuffix(l, "/"))
		}
	}
	for _, p := range []string{".git", "bin"} {
		if !slices.Contains(patterns, p) {
			t.Errorf(".dockerignore does not exclude %s", p)
		}
	}
	needed := []string{"go.mod", "go.sum", "cmd/intransit", "pkg/bpfobj"}
	if objs, _ := filepath.Glob("../pkg/bpfobj/*.o"); len(objs) > 0 {
		needed = append(needed, "pkg/bpfobj/"+filepath.Base(objs[0]))
	}
	for _, n := range needed {
		for _, p := range patterns {
			if ignores(p, n) {
				t.Errorf(".dockerignore pattern %q excludes %s, which the build needs", p, n)
			}
		}
	}
}

// ignores approximates .dockerignore matching: a pattern matches a path or
// one of its parents; a leading **/ matches at any depth.
func ignores(pattern, name string) bool {
	if strings.HasPrefix(pattern, "!") {
		return false
	}
	elems := strings.Split(name, "/")
	for i := 1; i <= len(elems); i++ {
		prefix := strings.Join(elems[:i], "/")
		if ok, _ := path.Match(pattern, prefix); ok {
			return true
		}
		if rest, found := strings.CutPrefix(pattern, "**/"); found {
			if ok, _ := path.Match(rest, elems[i-1]); ok {
				return true
			}
		}
	}
	return false
}
