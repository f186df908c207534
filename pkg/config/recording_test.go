package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// enforceRuleWith is an enforce rule with extra keys, for record/inject tests.
func enforceRuleWith(extra string) string {
	return "rules: [{name: a, ports: [80], mode: enforce, upstream: {tls: {port: 443}}" + extra + "}]\n"
}

func TestRecordingDefaults(t *testing.T) {
	c, err := Parse([]byte(enforceRuleWith("")))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Recordings
	if r.Dir != DefaultRecordingsDir || r.MaxSessionSize != 64<<20 || r.MaxTotalSize != 1<<30 || r.OnError != OnErrorContinue {
		t.Errorf("recordings defaults = %+v", r)
	}
	if c.Rules[0].Record != RecordOff || c.Records() {
		t.Errorf("record default = %q", c.Rules[0].Record)
	}
	if !slices.Contains(c.Redaction.Headers, "Authorization") || !slices.Contains(c.Redaction.JSONFields, "client_secret") || len(c.Redaction.Patterns) == 0 {
		t.Errorf("redaction defaults = %+v", c.Redaction)
	}
	if c.Identity.Pods != PodsAuto {
		t.Errorf("identity.pods default = %q", c.Identity.Pods)
	}
}

func TestRecordingValid(t *testing.T) {
	dir := t.TempDir()
	cred := filepath.Join(dir, "cred")
	key := filepath.Join(dir, "key")
	must(t, os.WriteFile(cred, []byte("Bearer abc\n"), 0o600))
	must(t, os.WriteFile(key, []byte("0123456789abcdef0123"), 0o600))
	y := "recordings: {dir: " + filepath.Join(dir, "rec") + ", maxSessionSize: 1MiB, maxTotalSize: \"2 GiB\", onError: close, keyFile: " + key + "}\n" +
		"redaction: {headers: [X-Secret], jsonFields: [pin], patterns: [jwt]}\n" +
		"identity: {pods: off}\nmetrics: {workloadLabels: true}\n" +
		enforceRuleWith(", record: full, inject: {header: Authorization, valueFile: "+cred+"}")
	c, err := Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if c.Recordings.MaxSessionSize != 1<<20 || c.Recordings.MaxTotalSize != 2<<30 || c.Recordings.OnError != OnErrorClose {
		t.Errorf("recordings = %+v", c.Recordings)
	}
	if r := c.Rules[0]; r.Record != RecordFull || r.Inject == nil || r.Inject.ValueFile != cred || !c.Records() {
		t.Errorf("rule = %+v", r)
	}
	if !slices.Equal(c.Redaction.Headers, []string{"X-Secret"}) || !c.Metrics.WorkloadLabels || c.Identity.Pods != PodsOff {
		t.Errorf("config = %+v", c)
	}
}

func TestRecordingErrors(t *testing.T) {
	dir := t.TempDir()
	two := filepath.Join(dir, "two-lines")
	empty := filepath.Join(dir, "empty")
	short := filepath.Join(dir, "short-key")
	must(t, os.WriteFile(two, []byte("Bearer a\nX-Other: b\n"), 0o600))
	must(t, os.WriteFile(empty, []byte("\n"), 0o600))
	must(t, os.WriteFile(short, []byte("abc"), 0o600))
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"record on audit", "rules: [{name: a, ports: [80], mode: audit, record: full}]\n", []string{"rules[0].record", `"full" needs mode enforce`}},
		{"record unknown", enforceRuleWith(", record: everything"), []string{"rules[0].record", `"everything" is not one of off, metadata, full`}},
		{"inject on deny", "rules: [{name: a, ports: [80], mode: deny, inject: {header: A, valueFile: " + two + "}}]\n", []string{"rules[0].inject", "needs mode enforce"}},
		{"inject no header", enforceRuleWith(", inject: {valueFile: " + two + "}"), []string{"rules[0].inject.header", "required"}},
		{"inject bad header", enforceRuleWith(", inject: {header: \"Bad Name\", valueFile: " + two + "}"), []string{"rules[0].inject.header", `"Bad Name" is not an HTTP header name`}},
		{"inject framing header", enforceRuleWith(", inject: {header: Content-Length, valueFile: " + two + "}"), []string{"rules[0].inject.header", "frames the request"}},
		{"inject missing file", enforceRuleWith(", inject: {header: A, valueFile: /nonexistent/cred}"), []string{"rules[0].inject.valueFile", "/nonexistent/cred"}},
		{"inject two lines", enforceRuleWith(", inject: {header: A, valueFile: " + two + "}"), []string{"rules[0].inject.valueFile", "more than one line"}},
		{"inject empty", enforceRuleWith(", inject: {header: A, valueFile: " + empty + "}"), []string{"rules[0].inject.valueFile", "is empty"}},
		{"dir relative", "recordings: {dir: rec}\n" + enforceRuleWith(""), []string{"recordings.dir", `"rec" is not an absolute path`}},
		{"session cap small", "recordings: {maxSessionSize: 1KiB}\n" + enforceRuleWith(""), []string{"recordings.maxSessionSize", "1KiB is below the minimum 256KiB"}},
		{"total below session", "recordings: {maxSessionSize: 8MiB, maxTotalSize: 4MiB}\n" + enforceRuleWith(""), []string{"recordings.maxTotalSize", "below recordings.maxSessionSize"}},
		{"size garbage", "recordings: {maxTotalSize: lots}\n" + enforceRuleWith(""), []string{"recordings.maxTotalSize", `"lots"`}},
		{"onError unknown", "recordings: {onError: retry}\n" + enforceRuleWith(""), []string{"recordings.onError", `"retry" is not one of continue, close`}},
		{"key short", "recordings: {keyFile: " + short + "}\n" + enforceRuleWith(""), []string{"recordings.keyFile", "holds 3 bytes"}},
		{"key inside dir", "recordings: {dir: " + dir + ", keyFile: " + filepath.Join(dir, "two-lines") + "}\n" + enforceRuleWith(""), []string{"recordings.keyFile", "inside recordings.dir"}},
		{"pattern unknown", "redaction: {patterns: [jwt, ssn]}\n" + enforceRuleWith(""), []string{"redaction", `"ssn"`}},
		{"redact header bad", "redaction: {headers: [\"a b\"]}\n" + enforceRuleWith(""), []string{"redaction", `"a b"`}},
		{"pods unknown", "identity: {pods: maybe}\n" + enforceRuleWith(""), []string{"identity.pods", `"maybe" is not one of auto, on, off`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			t.Log(err)
			if !slices.ContainsFunc(strings.Split(err.Error(), "\n"), func(l string) bool { return containsAll(l, tt.want) }) {
				t.Errorf("no error line contains all of %q; got:\n%v", tt.want, err)
			}
		})
	}
}

func TestSizeString(t *testing.T) {
	for in, want := range map[string]Size{"4096": 4096, "64MiB": 64 << 20, "1 GiB": 1 << 30, "500MB": 500e6, "7B": 7} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1MiB", "1.5GiB", "1PiB", "9999999999TiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) succeeded", bad)
		}
	}
	if s := Size(64 << 20).String(); s != "64MiB" {
		t.Errorf("String = %q", s)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
