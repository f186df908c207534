package testutil

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// MountTmpfs mounts a tmpfs of size (e.g. "256k") on a fresh 0700 directory
// and unmounts it at cleanup: a small disk to fill. Like RequireRoot it
// skips on a developer machine that cannot mount, and fails under CI=true.
func MountTmpfs(tb testing.TB, size string) string {
	tb.Helper()
	RequireRoot(tb)
	dir := filepath.Join(tb.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("CI=true: mount a tmpfs on %s: %v", dir, err)
		}
		tb.Skipf("needs to mount a tmpfs (CAP_SYS_ADMIN): %v", err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			// A file left open by a failed test: detach anyway.
			tb.Errorf("umount %s: %v", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}
