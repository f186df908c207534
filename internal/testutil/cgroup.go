package testutil

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/intransit/intransit/pkg/redirect"
)

// RandomName returns prefix plus 8 random hex characters.
func RandomName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// NewCgroup creates a throwaway child of the cgroup2 root and removes it when
// the test ends, moving any leftover processes back to the root first.
func NewCgroup(tb testing.TB) string {
	tb.Helper()
	RequireRoot(tb)
	root, err := redirect.Cgroup2Root()
	if err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(root, RandomName("intransit-test-"))
	if err := os.Mkdir(dir, 0o755); err != nil {
		tb.Fatalf("create test cgroup: %v", err)
	}
	tb.Cleanup(func() {
		// Evict stragglers (killed children may linger briefly) then remove.
		deadline := time.Now().Add(5 * time.Second)
		for {
			procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			for _, pid := range strings.Fields(string(procs)) {
				_ = os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(pid), 0)
			}
			err := os.Remove(dir)
			if err == nil || os.IsNotExist(err) {
				return
			}
			if time.Now().After(deadline) {
				tb.Errorf("remove test cgroup %s: %v", dir, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return dir
}

// EnterCgroup moves the whole test process into dir until the test ends.
// Every connect the test makes is then subject to programs attached there;
// the proxy's own upstream sockets are excluded by their SO_MARK, exactly as
// in production.
func EnterCgroup(tb testing.TB, dir string) {
	tb.Helper()
	prev, err := ownCgroup()
	if err != nil {
		tb.Fatal(err)
	}
	pid := fmt.Sprint(os.Getpid())
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(pid), 0); err != nil {
		tb.Fatalf("move test process into %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(prev, "cgroup.procs"), []byte(pid), 0); err != nil {
			tb.Errorf("move test process back to %s: %v", prev, err)
		}
	})
}

// ownCgroup returns the cgroup2 directory of this process.
func ownCgroup() (string, error) {
	root, err := redirect.Cgroup2Root()
	if err != nil {
		return "", err
	}
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rel, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return filepath.Join(root, rel), nil
		}
	}
	return "", fmt.Errorf("no cgroup2 entry in /proc/self/cgroup")
}

// PinPath returns a throwaway bpffs directory; everything pinned under it is
// detached and removed when the test ends.
func PinPath(tb testing.TB) string {
	tb.Helper()
	RequireRoot(tb)
	p := filepath.Join("/sys/fs/bpf", RandomName("intransit-test-"))
	tb.Cleanup(func() {
		if err := redirect.Uninstall(p); err != nil {
			tb.Errorf("uninstall %s: %v", p, err)
		}
	})
	return p
}

// MoveTo moves the whole test process into dir (no automatic way back: pair
// it with EnterCgroup or another MoveTo). Sockets created meanwhile belong to
// dir for good, which is how a test gives a listener to a cgroup.
func MoveTo(tb testing.TB, dir string) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(fmt.Sprint(os.Getpid())), 0); err != nil {
		tb.Fatalf("move test process into %s: %v", dir, err)
	}
}

// OwnCgroup is the cgroup2 directory of this process.
func OwnCgroup(tb testing.TB) string {
	tb.Helper()
	d, err := ownCgroup()
	if err != nil {
		tb.Fatal(err)
	}
	return d
}
