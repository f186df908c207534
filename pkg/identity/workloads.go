package identity

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/intransit/intransit/pkg/audit"
)

// PodLookup is what Workloads needs from the pod informer: Pods implements
// it, tests use fakes.
type PodLookup interface {
	PodByUID(uid string) (audit.Pod, bool)
}

// A connection burst from one process reads /proc once: what was read is
// kept for procTTL per (pid, cgroup id). The cache holds at most procMax
// entries, so a flood of short-lived processes cannot grow it.
const (
	procTTL = 2 * time.Second
	procMax = 4096
)

// procKey names a process as the connect event does. A pid reused by a
// process in another cgroup is another key.
type procKey struct {
	pid    uint32
	cgroup uint64
}

// procEntry is what /proc told about a process, and what its cgroup path
// tells, parsed once per entry rather than per connection.
type procEntry struct {
	exe       string // audit.Unknown unless read and verified
	path      string // the cgroup path it was verified against, "" if none
	container audit.Container
	inCtr     bool   // container is set
	podUID    string // "" if path is no pod's
	expires   time.Time
}

// Workloads resolves the identity of a connecting process: executable,
// cgroup path, container and pod. It is safe for concurrent use.
type Workloads struct {
	cgroups  *Cgroups
	pods     PodLookup
	procRoot string
	ttl      time.Duration
	max      int
	now      func() time.Time

	mu    sync.Mutex
	procs map[procKey]procEntry
}

// NewWorkloads resolves cgroup ids with cgroups, pod UIDs with pods (nil
// off Kubernetes) and executables from procRoot ("/proc"; it must show the
// host's pids: connect events carry them).
func NewWorkloads(cgroups *Cgroups, pods PodLookup, procRoot string) *Workloads {
	return &Workloads{
		cgroups:  cgroups,
		pods:     pods,
		procRoot: procRoot,
		ttl:      procTTL,
		max:      procMax,
		now:      time.Now,
		procs:    make(map[procKey]procEntry),
	}
}

// Resolve fills in p.CgroupPath (when empty), p.Exe, p.Container and p.Pod
// from p.PID and p.Cgroup. What cannot be resolved is not guessed:
//
//   - Exe is audit.Unknown when the process is gone or unreadable, or is no
//     longer in cgroup p.Cgroup (its pid was reused);
//   - CgroupPath stays "" when the cgroup id is not found;
//   - Container is nil when the cgroup is no container's;
//   - Pod is nil when the cgroup is no pod's, and has only the UID (the
//     other fields audit.Unknown) when the pod is not known (yet).
func (w *Workloads) Resolve(p *audit.Process) {
	if w == nil || p == nil {
		return
	}
	if p.CgroupPath == "" {
		p.CgroupPath = w.cgroups.Path(p.Cgroup)
	}
	e := w.process(p.PID, p.Cgroup, p.CgroupPath)
	p.Exe, p.CgroupPath = e.exe, e.path
	p.Container, p.Pod = nil, nil
	if e.inCtr {
		c := e.container // a copy: callers may change theirs
		p.Container = &c
	}
	if e.podUID != "" {
		p.Pod = w.pod(e.podUID)
	}
}

// pod is the pod with uid, or one that says only its uid. Pods are looked up
// on every call, not cached here: the informer's cache is already in memory
// and follows label changes and new pods.
func (w *Workloads) pod(uid string) *audit.Pod {
	if w.pods != nil {
		if pod, ok := w.pods.PodByUID(uid); ok {
			return &pod
		}
	}
	return &audit.Pod{Namespace: audit.Unknown, Name: audit.Unknown, UID: uid, ServiceAccount: audit.Unknown}
}

// process returns what /proc tells about pid in cgroup, from the cache when
// it was read within ttl. path is the cgroup path of the connect, "" if not
// found.
func (w *Workloads) process(pid uint32, cgroup uint64, path string) procEntry {
	key := procKey{pid, cgroup}
	now := w.now()
	w.mu.Lock()
	e, ok := w.procs[key]
	w.mu.Unlock()
	if ok && now.Before(e.expires) && (path == "" || path == e.path) {
		return e
	}
	e = w.read(pid, cgroup, path)
	if e.path != "" {
		e.container, e.inCtr = ContainerFromCgroup(e.path)
		e.podUID, _ = PodUIDFromCgroup(e.path)
	}
	e.expires = now.Add(w.ttl)
	w.mu.Lock()
	if len(w.procs) >= w.max {
		w.evict(now)
	}
	w.procs[key] = e
	w.mu.Unlock()
	return e
}

// evict makes room: expired entries go first, then, if the cache is still
// full, a quarter of it, so that a full cache of live entries is not swept
// again on every insert.
func (w *Workloads) evict(now time.Time) {
	for k, e := range w.procs {
		if !now.Before(e.expires) {
			delete(w.procs, k)
		}
	}
	for k := range w.procs {
		if len(w.procs) < w.max*3/4 {
			break
		}
		delete(w.procs, k)
	}
}

// read reads pid's executable and checks that pid is still in cgroup: the
// connect event is recent, but the process may have exited and its pid been
// reused. The executable is read first, so a reuse between the two reads
// shows as a cgroup mismatch. When path is "" (the id was not found by a
// walk of the hierarchy yet), the cgroup /proc names is taken if its inode
// is cgroup.
func (w *Workloads) read(pid uint32, cgroup uint64, path string) procEntry {
	e := procEntry{exe: audit.Unknown, path: path}
	if pid == 0 || cgroup == 0 {
		return e // nothing to read, or nothing to check it against
	}
	dir := w.procRoot + "/" + strconv.FormatUint(uint64(pid), 10)
	exe, err := os.Readlink(dir + "/exe")
	cur, ok := procCgroup(dir + "/cgroup")
	switch {
	case !ok:
		return e
	case path == "":
		if !w.cgroups.learn(cgroup, cur) {
			return e
		}
		e.path = cur
	case !sameCgroup(path, cur):
		return e
	}
	if err == nil && exe != "" {
		e.exe = exe
	}
	return e
}

// procCgroup returns the cgroup v2 path in a /proc/PID/cgroup file, the
// "0::<path>" line (the last one on hybrid hosts).
func procCgroup(file string) (string, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", false
	}
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if path, ok := bytes.CutPrefix(line, []byte("0::")); ok && len(path) > 0 {
			return string(path), true
		}
	}
	return "", false
}

// sameCgroup reports whether cur, from /proc/PID/cgroup, is the cgroup at
// path, relative to the cgroup2 root. /proc gives paths relative to the
// reader's cgroup namespace: an agent in a container (with the host's
// cgroup2 root mounted) reads "/../../kubepods.slice/..." for processes
// outside its namespace. Those are compared by what follows the "/.."
// steps, which ends in the container's own cgroup name.
func sameCgroup(path, cur string) bool {
	if path == cur {
		return true
	}
	rest, outside := cur, false
	for strings.HasPrefix(rest, "/..") && (len(rest) == 3 || rest[3] == '/') {
		rest, outside = rest[3:], true
	}
	return outside && rest != "" && strings.HasSuffix(path, rest)
}
