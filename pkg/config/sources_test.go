package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/intransit/intransit/internal/testutil"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func ruleNamesOf(c *Config) []string {
	var out []string
	for _, r := range c.Rules {
		out = append(out, r.Name)
	}
	return out
}

const baseYAML = `
proxy: {port: 15001, dialTimeout: 3s}
metrics: {listen: "127.0.0.1:9999"}
redaction: {headers: [Authorization, Cookie]}
peers:
  - {destinations: [10.1.0.0/16], address: "192.0.2.1:15008"}
rules:
  - {name: a, ports: [80], mode: audit}
`

func TestLoadFilesMerge(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "intransit.yaml")
	writeFile(t, base, baseYAML)
	d := filepath.Join(dir, "conf.d")
	writeFile(t, filepath.Join(d, "10-proxy.yaml"), `
proxy: {port: 15002}            # scalar: later file wins; dialTimeout stays
redaction: {headers: [X-Token]} # list: replaces
peers: [{destinations: [10.2.0.0/16], address: "192.0.2.2:15008"}]
metrics: {listen: null}         # null: back to the default
`)
	writeFile(t, filepath.Join(d, "20-rules.yaml"), "rules:\n  - {name: b, ports: [81], mode: deny}\n")
	writeFile(t, filepath.Join(d, "30-more.yml"), "rules: [{name: c, ports: [82], mode: audit}]\n")
	writeFile(t, filepath.Join(d, "40-empty.yaml"), "# nothing here yet\n")
	writeFile(t, filepath.Join(d, "50-norules.yaml"), "rules: []\n")

	c, err := LoadFiles(base, d)
	if err != nil {
		t.Fatal(err)
	}
	if c.Proxy.Port != 15002 || c.Proxy.DialTimeout.Duration != 3*time.Second {
		t.Errorf("proxy = %+v, want port 15002 from the drop-in and dialTimeout 3s from the base", c.Proxy)
	}
	if !slices.Equal(c.Redaction.Headers, []string{"X-Token"}) {
		t.Errorf("redaction.headers = %v, want the drop-in's list to replace the base's", c.Redaction.Headers)
	}
	if len(c.Peers) != 1 || c.Peers[0].Address != "192.0.2.2:15008" {
		t.Errorf("peers = %+v, want the drop-in's list only", c.Peers)
	}
	if c.Metrics.Listen != DefaultMetricsListen {
		t.Errorf("metrics.listen = %q, want the default after null", c.Metrics.Listen)
	}
	if got := ruleNamesOf(c); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("rules = %v, want a, b, c appended in file order", got)
	}

	// Files merge in name order: a later file's scalar wins.
	writeFile(t, filepath.Join(d, "05-proxy.yaml"), "proxy: {port: 15005}\n")
	if c, err = LoadFiles(base, d); err != nil || c.Proxy.Port != 15002 {
		t.Errorf("port = %d (%v), want 15002 (10-proxy.yaml sorts after 05-proxy.yaml)", c.Proxy.Port, err)
	}
}

func TestLoadFilesConfigMapLayout(t *testing.T) {
	d := t.TempDir()
	cm := testutil.NewConfigMap(t, d, map[string]string{
		"intransit.yaml": "rules: [{name: a, ports: [80], mode: audit}]\n",
		"extra.yaml":     "rules: [{name: b, ports: [81], mode: audit}]\n",
	})
	// Hidden files and other names are never read: garbage would fail.
	writeFile(t, filepath.Join(d, ".hidden.yaml"), "not: [valid")
	writeFile(t, filepath.Join(d, "notes.txt"), "not: [valid")
	writeFile(t, filepath.Join(d, "intransit.yaml.bak"), "not: [valid")
	c, err := LoadFiles("", d)
	if err != nil {
		t.Fatal(err)
	}
	// extra.yaml sorts before intransit.yaml.
	if got := ruleNamesOf(c); !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("rules = %v, want b, a (each key once, ..data entries not read)", got)
	}

	// An update swaps ..data; a removed key's symlink dangles until the
	// kubelet unlinks it, and is skipped.
	cm.Update(map[string]string{
		"intransit.yaml": "rules: [{name: a2, ports: [80], mode: deny}]\n",
	})
	if err := os.Symlink("..data/gone.yaml", filepath.Join(d, "gone.yaml")); err != nil {
		t.Fatal(err)
	}
	c, err = LoadFiles("", d)
	if err != nil {
		t.Fatal(err)
	}
	if got := ruleNamesOf(c); !slices.Equal(got, []string{"a2"}) {
		t.Errorf("after the update rules = %v, want a2", got)
	}

	// --config naming a file inside --config-dir is read once.
	c, err = LoadFiles(filepath.Join(d, "intransit.yaml"), d)
	if err != nil {
		t.Fatalf("base inside the directory: %v", err)
	}
	if got := ruleNamesOf(c); !slices.Equal(got, []string{"a2"}) {
		t.Errorf("base inside the directory: rules = %v, want a2 once", got)
	}
}

func TestLoadFilesErrorsNameFileAndKey(t *testing.T) {
	f := newTestFiles(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "intransit.yaml")
	writeFile(t, base, "rules:\n  - {name: a, ports: [80], mode: audit}\n  - {name: b, ports: [81], mode: audit}\n")
	d := filepath.Join(dir, "conf.d")
	drop := filepath.Join(d, "20-x.yaml")

	cases := []struct {
		name, yaml string
		want       []string // each a whole line of the report
	}{
		{"unknown key", "rules: [{name: x, ports: [90], mode: audit, mdoe: enforce}]\n",
			[]string{drop + `: unknown key "rules[0].mdoe" (did you mean "mode"?)`}},
		{"unknown top-level key", "proxi: {port: 1}\n",
			[]string{drop + `: unknown key "proxi" (did you mean "proxy"?)`}},
		{"wrong type", "proxy: {port: high}\n",
			[]string{drop + `: proxy.port: want an integer, got string "high"`}},
		{"syntax", "rules: [\n",
			[]string{drop + `: yaml: line 1: did not find expected node content`}},
		{"explicit zero", "proxy: {port: 0}\n",
			[]string{drop + `: proxy.port: 0 is not allowed (omit the key for the default)`}},
		{"bad value in a rule, by its index in its own file", "rules: [{name: x, ports: [90], mode: block}]\n",
			[]string{drop + `: rules[0].mode: "block" is not one of audit, enforce, deny`}},
		{"bad scalar overriding the base", "proxy: {dialTimeout: -1s}\n",
			[]string{drop + `: proxy.dialTimeout: -1s must not be negative`}},
		{"rule name used in two files", "rules: [{name: b, ports: [90], mode: audit}]\n",
			[]string{drop + `: rules[0].name: "b" is already used by rules[1] (in ` + base + `)`}},
		{"selector clash across files", "rules: [{name: x, ports: [80], mode: deny}]\n",
			[]string{drop + `: rules[0]: port 80 to 0.0.0.0/0 is selected by both rules[0] (in ` + base + `) ("a") and rules[0] ("x") (a rule without destinations covers every address)`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			writeFile(t, drop, tc.yaml)
			_, err := LoadFiles(base, d)
			if err == nil {
				t.Fatal("LoadFiles succeeded")
			}
			lines := strings.Split(err.Error(), "\n")
			if !slices.Equal(lines, tc.want) {
				t.Errorf("got:\n%s\nwant:\n%s", err, strings.Join(tc.want, "\n"))
			}
		})
	}

	// Problems in several files are all reported, each with its file.
	writeFile(t, drop, "bogus: 1\n")
	writeFile(t, filepath.Join(d, "30-y.yaml"), "proxy: {typo: 1}\n")
	_, err := LoadFiles(base, d)
	if err == nil || !strings.Contains(err.Error(), drop+`: unknown key "bogus"`) ||
		!strings.Contains(err.Error(), filepath.Join(d, "30-y.yaml")+`: unknown key "proxy.typo"`) {
		t.Errorf("want both files' errors, got:\n%v", err)
	}
	must(t, os.Remove(filepath.Join(d, "30-y.yaml")))

	// A missing file named by a drop-in: named, and still an fs.ErrNotExist.
	writeFile(t, drop, "rules: [{name: x, ports: [90], mode: enforce, upstream: {tls: {caFile: /nonexistent/ca.pem}}}]\n")
	_, err = LoadFiles(base, d)
	if err == nil || !strings.HasPrefix(err.Error(), drop+": rules[0].upstream.tls.caFile: ") || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing caFile: %v (errors.Is ErrNotExist: %t)", err, errors.Is(err, fs.ErrNotExist))
	}
	// A valid drop-in referencing a real file loads.
	writeFile(t, drop, "rules: [{name: x, ports: [90], mode: enforce, upstream: {tls: {caFile: "+f.ca+"}}}]\n")
	if _, err := LoadFiles(base, d); err != nil {
		t.Errorf("valid drop-in: %v", err)
	}

	// A mapping built by two files names both when nothing more precise is
	// known.
	writeFile(t, base, "rules: [{name: a, ports: [80], mode: audit}]\ninbound: {tls: {certFile: "+f.cert+"}}\n")
	writeFile(t, drop, "inbound: {tls: {keyFile: "+f.key+"}}\n")
	_, err = LoadFiles(base, d)
	if want := base + " + " + drop + ": inbound.services: at least one service is required"; err == nil || !slices.Contains(strings.Split(err.Error(), "\n"), want) {
		t.Errorf("got:\n%v\nwant a line %q", err, want)
	}
}

func TestLoadFilesMissingAndEmpty(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "intransit.yaml")
	d := filepath.Join(dir, "conf.d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}

	// Nothing at all.
	_, err := Sources{Base: base, BaseOptional: true, Dir: d}.Load()
	if err == nil || !strings.Contains(err.Error(), "no configuration") || !strings.Contains(err.Error(), d) {
		t.Errorf("missing base, empty dir: %v", err)
	}
	_, err = LoadFiles("", d)
	if err == nil || !strings.Contains(err.Error(), d+" has no *.yaml or *.yml file") {
		t.Errorf("empty dir: %v", err)
	}

	// The base alone with an empty directory.
	writeFile(t, base, "rules: [{name: a, ports: [80], mode: audit}]\n")
	c, err := LoadFiles(base, d)
	if err != nil || !slices.Equal(ruleNamesOf(c), []string{"a"}) {
		t.Errorf("base with an empty dir: %v %v", err, c)
	}
	must(t, os.Remove(base))

	// A missing base: fine when optional, an error naming it otherwise.
	writeFile(t, filepath.Join(d, "a.yaml"), "rules: [{name: b, ports: [81], mode: audit}]\n")
	c, err = Sources{Base: base, BaseOptional: true, Dir: d}.Load()
	if err != nil || !slices.Equal(ruleNamesOf(c), []string{"b"}) {
		t.Errorf("optional missing base: %v %v", err, c)
	}
	_, err = LoadFiles(base, d)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), base) {
		t.Errorf("required missing base: %v", err)
	}

	// A missing directory is an error naming it (a typo must not silently
	// leave the drop-ins out).
	writeFile(t, base, "rules: [{name: a, ports: [80], mode: audit}]\n")
	_, err = LoadFiles(base, filepath.Join(dir, "nope"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), filepath.Join(dir, "nope")) {
		t.Errorf("missing dir: %v", err)
	}
	// A directory named like a drop-in is refused.
	must(t, os.Mkdir(filepath.Join(d, "sub.yaml"), 0o755))
	if _, err = LoadFiles(base, d); err == nil || !strings.Contains(err.Error(), "sub.yaml is not a regular file") {
		t.Errorf("directory named *.yaml: %v", err)
	}
}

func TestParseFilesSingleIsLoad(t *testing.T) {
	data := "rules: [{name: a, ports: [80], mode: block}]\n"
	_, e1 := ParseFiles([]File{{Name: "/x/intransit.yaml", Data: []byte(data)}})
	path := filepath.Join(t.TempDir(), "intransit.yaml")
	writeFile(t, path, data)
	_, e2 := Load(path)
	if e1 == nil || e2 == nil || strings.ReplaceAll(e1.Error(), "/x/intransit.yaml", path) != e2.Error() {
		t.Errorf("ParseFiles(one file) = %v\nLoad = %v", e1, e2)
	}
}

func TestSourcesWatchDirs(t *testing.T) {
	s := Sources{Base: "/etc/intransit/intransit.yaml", Dir: "/etc/intransit/conf.d/"}
	if got := s.WatchDirs(); !slices.Equal(got, []string{"/etc/intransit", "/etc/intransit/conf.d"}) {
		t.Errorf("WatchDirs = %v", got)
	}
	s = Sources{Base: "/etc/intransit/intransit.yaml", Dir: "/etc/intransit"}
	if got := s.WatchDirs(); !slices.Equal(got, []string{"/etc/intransit"}) {
		t.Errorf("WatchDirs = %v, want the directory once", got)
	}
}

func TestDrainTimeout(t *testing.T) {
	const rule = "rules: [{name: a, ports: [80], mode: audit}]\n"
	c, err := Parse([]byte(rule))
	if err != nil || c.Proxy.DrainTimeout.Duration != DefaultDrainTimeout {
		t.Fatalf("default drainTimeout = %v (%v), want %s", c.Proxy.DrainTimeout, err, DefaultDrainTimeout)
	}
	c, err = Parse([]byte("proxy: {drainTimeout: 1m30s}\n" + rule))
	if err != nil || c.Proxy.DrainTimeout.Duration != 90*time.Second {
		t.Fatalf("drainTimeout 1m30s = %v (%v)", c.Proxy.DrainTimeout, err)
	}
	for in, want := range map[string]string{
		"0s":   `config: proxy.drainTimeout: "0s" is not allowed: omit the key for the default 10s, or give a small duration such as 1ms to cut sessions at once`,
		"0":    `config: proxy.drainTimeout: "0" is not allowed`,
		"-1s":  `config: proxy.drainTimeout: -1s must not be negative`,
		"soon": `config: proxy.drainTimeout: "soon" is not a duration`,
	} {
		_, err := Parse([]byte("proxy: {drainTimeout: \"" + in + "\"}\n" + rule))
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("drainTimeout %q: %v, want %q", in, err, want)
		}
	}
}

// The merge re-encodes the documents: what the decoder special-cases (hex
// integers, unquoted off/on) must mean the same as in a single file.
func TestLoadFilesYAMLQuirksSurviveMerge(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "intransit.yaml")
	writeFile(t, base, "bpf: {mark: 0x1e7a0002}\nrules: [{name: a, ports: [80], mode: audit}]\n")
	d := filepath.Join(dir, "conf.d")
	writeFile(t, filepath.Join(d, "a.yaml"), "metrics: {listen: off}\nidentity: {pods: on}\nproxy: {drainTimeout: 2s}\n")
	c, err := LoadFiles(base, d)
	if err != nil {
		t.Fatal(err)
	}
	if c.BPF.Mark != 0x1e7a0002 || c.Metrics.Listen != MetricsOff || c.Identity.Pods != PodsOn || c.Proxy.DrainTimeout.Duration != 2*time.Second {
		t.Errorf("mark %#x, metrics.listen %q, identity.pods %q, drainTimeout %s", c.BPF.Mark, c.Metrics.Listen, c.Identity.Pods, c.Proxy.DrainTimeout)
	}
}
