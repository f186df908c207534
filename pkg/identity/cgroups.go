// Package identity turns what the kernel reports about a connecting process
// into names people use: the cgroup id becomes the cgroup path, the
// container and the Kubernetes pod, the pid the executable (Workloads).
package identity

import (
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxCgroups bounds the cache on hosts with very many cgroups.
const maxCgroups = 1 << 17

// Cgroups resolves cgroup v2 ids (the inode numbers bpf_get_current_cgroup_id
// reports) to paths relative to the cgroup2 mount. A miss walks the
// hierarchy once, filling the cache with every cgroup seen; misses within
// minRewalk of the last walk are answered "" rather than walking again, so a
// flood of short-lived cgroups cannot turn every connection into a walk.
type Cgroups struct {
	root      string
	minRewalk time.Duration

	mu       sync.Mutex
	paths    map[uint64]string
	lastWalk time.Time
}

// NewCgroups resolves ids under the cgroup2 mount root.
func NewCgroups(root string) *Cgroups {
	return &Cgroups{root: root, minRewalk: time.Second, paths: make(map[uint64]string)}
}

// Path returns the cgroup path of id ("/" for the root), or "" if unknown.
func (c *Cgroups) Path(id uint64) string {
	if c == nil || id == 0 {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.paths[id]; ok {
		return p
	}
	if time.Since(c.lastWalk) < c.minRewalk {
		return ""
	}
	c.walk()
	return c.paths[id]
}

func (c *Cgroups) walk() {
	c.lastWalk = time.Now()
	if len(c.paths) >= maxCgroups {
		c.paths = make(map[uint64]string) // start over rather than grow forever
	}
	_ = filepath.WalkDir(c.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil // vanished cgroups are normal: skip them
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel, err := filepath.Rel(c.root, path)
		if err != nil {
			return nil
		}
		if len(c.paths) < maxCgroups {
			c.paths[st.Ino] = "/" + filepath.ToSlash(rel)
			if rel == "." {
				c.paths[st.Ino] = "/"
			}
		}
		return nil
	})
}

// learn records rel, a process's cgroup path as /proc/PID/cgroup gives it,
// as the path of id if the directory there is cgroup id. It finds cgroups
// made since the last walk without waiting for the next one, and does not
// trust rel: only the inode decides.
func (c *Cgroups) learn(id uint64, rel string) bool {
	// A path outside this cgroup namespace ("/../..") or not clean cannot
	// be joined to the root.
	if c == nil || id == 0 || !strings.HasPrefix(rel, "/") || filepath.Clean(rel) != rel {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(c.root, rel), &st); err != nil || st.Ino != id {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.paths) < maxCgroups {
		c.paths[id] = rel
	}
	return true
}
