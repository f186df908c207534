package redirect

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Cgroup2Root returns the mount point of the cgroup v2 hierarchy, read from
// /proc/self/mountinfo: hybrid hosts mount it at /sys/fs/cgroup/unified,
// unified ones at /sys/fs/cgroup, so it is never hard-coded.
func Cgroup2Root() (string, error) {
	return cgroup2RootFrom("/proc/self/mountinfo")
}

// Cgroup2RootOf returns the cgroup2 mount point that holds dir: in a pod
// the first cgroup2 mount is the container's own (its cgroup namespace),
// while the attach cgroup is the host's, mounted elsewhere (e.g.
// /host/sys/fs/cgroup). Paths of other workloads' cgroups are relative to
// that mount.
func Cgroup2RootOf(dir string) (string, error) {
	return cgroup2RootOfFrom("/proc/self/mountinfo", dir)
}

func cgroup2RootOfFrom(mountinfo, dir string) (string, error) {
	mounts, err := cgroup2Mounts(mountinfo)
	if err != nil {
		return "", err
	}
	best := ""
	for _, m := range mounts {
		if (dir == m || strings.HasPrefix(dir, strings.TrimSuffix(m, "/")+"/")) && len(m) > len(best) {
			best = m
		}
	}
	if best == "" {
		return "", fmt.Errorf("%s is not under a cgroup2 mount (%v)", dir, mounts)
	}
	return best, nil
}

func cgroup2Mounts(mountinfo string) ([]string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("find cgroup2 mounts: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && i >= 5 {
				if fields[i+1] == "cgroup2" {
					out = append(out, unescapeMountPath(fields[4]))
				}
				break
			}
		}
	}
	return out, sc.Err()
}

func cgroup2RootFrom(mountinfo string) (string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && i >= 5 {
				if fields[i+1] == "cgroup2" {
					return unescapeMountPath(fields[4]), nil
				}
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read %s: %w", mountinfo, err)
	}
	return "", fmt.Errorf("no cgroup2 filesystem mounted (looked in %s): intransit needs cgroup v2", mountinfo)
}

// unescapeMountPath undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// CgroupID returns the id of a cgroup v2 directory: the inode number, which is
// what bpf_get_current_cgroup_id() reports.
func CgroupID(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup %s: %w", path, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, fmt.Errorf("statfs cgroup %s: %w", path, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("%s is not a cgroup v2 directory", path)
	}
	return st.Ino, nil
}

// ResolveCgroup returns the configured cgroup, or the cgroup2 root when empty.
func ResolveCgroup(configured string) (string, error) {
	if configured != "" {
		if _, err := CgroupID(configured); err != nil {
			return "", fmt.Errorf("cgroup %q: %w", configured, err)
		}
		return configured, nil
	}
	return Cgroup2Root()
}
