package identity

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func inode(t testing.TB, p string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// A plain directory tree stands in for the cgroup2 mount: resolution only
// relies on inode numbers.
func TestPathResolvesAndRateLimitsWalks(t *testing.T) {
	root := t.TempDir()
	a := filepath.Join(root, "system.slice", "executor.service")
	if err := os.MkdirAll(a, 0o755); err != nil {
		t.Fatal(err)
	}
	c := NewCgroups(root)
	if got := c.Path(inode(t, a)); got != "/system.slice/executor.service" {
		t.Fatalf("Path = %q", got)
	}
	if got := c.Path(inode(t, root)); got != "/" {
		t.Fatalf("root Path = %q", got)
	}
	// A cgroup created right after a walk is not found until minRewalk passes.
	b := filepath.Join(root, "late")
	if err := os.Mkdir(b, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := c.Path(inode(t, b)); got != "" {
		t.Fatalf("within the rewalk interval Path = %q, want \"\"", got)
	}
	c.minRewalk = 0
	time.Sleep(time.Millisecond)
	if got := c.Path(inode(t, b)); got != "/late" {
		t.Fatalf("after the interval Path = %q", got)
	}
	if got := c.Path(0); got != "" {
		t.Fatalf("Path(0) = %q", got)
	}
}
