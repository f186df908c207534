package testutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ConfigMap is a directory laid out and updated the way the kubelet mounts
// a ConfigMap volume: each key a symlink to ..data/key, ..data a symlink to
// a timestamped directory. An update writes a new timestamped directory,
// renames a ..data_tmp symlink over ..data, links new keys, unlinks
// dropped ones and removes the old directory.
type ConfigMap struct {
	Dir string
	tb  testing.TB
	n   int
}

// NewConfigMap makes dir (if missing) a ConfigMap volume holding files.
func NewConfigMap(tb testing.TB, dir string, files map[string]string) *ConfigMap {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	c := &ConfigMap{Dir: dir, tb: tb}
	c.Update(files)
	return c
}

// Update replaces the volume's contents with files, atomically as the
// kubelet does.
func (c *ConfigMap) Update(files map[string]string) {
	tb := c.tb
	tb.Helper()
	c.n++
	ts := fmt.Sprintf("..2026_11_22_10_%02d_00.%d", c.n, 1000+c.n)
	must(tb, os.Mkdir(filepath.Join(c.Dir, ts), 0o755))
	for name, data := range files {
		must(tb, os.WriteFile(filepath.Join(c.Dir, ts, name), []byte(data), 0o644))
	}
	old, _ := os.Readlink(filepath.Join(c.Dir, "..data"))
	must(tb, os.Symlink(ts, filepath.Join(c.Dir, "..data_tmp")))
	must(tb, os.Rename(filepath.Join(c.Dir, "..data_tmp"), filepath.Join(c.Dir, "..data")))
	for name := range files {
		if _, err := os.Lstat(filepath.Join(c.Dir, name)); errors.Is(err, os.ErrNotExist) {
			must(tb, os.Symlink(filepath.Join("..data", name), filepath.Join(c.Dir, name)))
		}
	}
	entries, err := os.ReadDir(c.Dir)
	must(tb, err)
	for _, e := range entries {
		if _, keep := files[e.Name()]; !keep && !strings.HasPrefix(e.Name(), "..") {
			must(tb, os.Remove(filepath.Join(c.Dir, e.Name())))
		}
	}
	if old != "" {
		must(tb, os.RemoveAll(filepath.Join(c.Dir, old)))
	}
}
