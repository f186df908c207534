package redirect

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCgroup2RootOf: in a pod the first cgroup2 mount is the container's
// own; the attach cgroup lives under the host's, mounted elsewhere.
func TestCgroup2RootOf(t *testing.T) {
	mi := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(mi, []byte(`1000 900 0:30 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw
1001 900 0:30 / /host/sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw
1002 900 0:31 / /host/sys/fs/bpf rw - bpf bpf rw
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]string{
		"/host/sys/fs/cgroup":                "/host/sys/fs/cgroup",
		"/host/sys/fs/cgroup/kubepods.slice": "/host/sys/fs/cgroup",
		"/sys/fs/cgroup/system.slice":        "/sys/fs/cgroup",
		"/host/sys/fs/cgroupx":               "",
		"/elsewhere":                         "",
	} {
		got, err := cgroup2RootOfFrom(mi, dir)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("%s: %q, %v; want %q", dir, got, err, want)
		}
	}
}
