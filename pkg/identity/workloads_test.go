package identity

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/redirect"
)

// fakePods is a PodLookup over a map, safe for concurrent reads.
type fakePods struct {
	mu   sync.Mutex
	pods map[string]audit.Pod
}

func (f *fakePods) PodByUID(uid string) (audit.Pod, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pods[uid]
	return p, ok
}

func (f *fakePods) set(p audit.Pod) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pods[p.UID] = p
}

const (
	ctrPlanner = "4f2a9c1be7d3a8f0c6b5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9"
	ctrDocker  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// workloadsFixture is a fake cgroup2 root (plain directories: only inodes
// matter) and a fake /proc.
type workloadsFixture struct {
	root, proc string
	paths      map[string]string // cgroup paths by name, relative to root
	ids        map[string]uint64
	cgroups    *Cgroups
	pods       *fakePods
	w          *Workloads
}

var plannerPod = audit.Pod{Namespace: "agents", Name: "planner-0", UID: uidPlanner, ServiceAccount: "planner", Labels: map[string]string{"app": "planner"}}

func newWorkloadsFixture(t testing.TB) *workloadsFixture {
	t.Helper()
	slice := func(qos, uid string) string {
		return "kubepods-" + qos + "pod" + strings.ReplaceAll(uid, "-", "_") + ".slice"
	}
	f := &workloadsFixture{
		root: t.TempDir(),
		proc: t.TempDir(),
		paths: map[string]string{
			"planner":     "/kubepods.slice/kubepods-burstable.slice/" + slice("burstable-", uidPlanner) + "/cri-containerd-" + ctrPlanner + ".scope",
			"unknownPod":  "/kubepods.slice/" + slice("", uidWorker) + "/cri-containerd-" + ctrPlanner + ".scope",
			"cgroupfsPod": "/kubepods/besteffort/pod" + uidPlanner + "/" + ctrPlanner,
			"docker":      "/system.slice/docker-" + ctrDocker + ".scope",
			"hostService": "/system.slice/containerd.service",
		},
		ids:  map[string]uint64{},
		pods: &fakePods{pods: map[string]audit.Pod{uidPlanner: plannerPod}},
	}
	for name, p := range f.paths {
		d := filepath.Join(f.root, p)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		f.ids[name] = inode(t, d)
	}
	f.cgroups = NewCgroups(f.root)
	f.w = NewWorkloads(f.cgroups, f.pods, f.proc)
	return f
}

// process makes /proc/PID in the fake /proc: an exe link (none if exe is
// "") and a cgroup file with the v2 line last, as on hybrid hosts.
func (f *workloadsFixture) process(t testing.TB, pid uint32, exe, cgroup string) {
	t.Helper()
	dir := filepath.Join(f.proc, strconv.FormatUint(uint64(pid), 10))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(dir, "exe"))
	if exe != "" {
		if err := os.Symlink(exe, filepath.Join(dir, "exe")); err != nil {
			t.Fatal(err)
		}
	}
	lines := "9:name=systemd:/\n4:memory:/x\n0::" + cgroup + "\n"
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestResolve(t *testing.T) {
	f := newWorkloadsFixture(t)
	ctr := func(runtime, id string) *audit.Container { return &audit.Container{Runtime: runtime, ID: id} }
	unknownPod := func(uid string) *audit.Pod {
		return &audit.Pod{Namespace: audit.Unknown, Name: audit.Unknown, UID: uid, ServiceAccount: audit.Unknown}
	}
	const curl = "/usr/bin/curl"
	for _, tc := range []struct {
		name     string
		pid      uint32
		exe      string // "" for none
		procCg   string // the process's cgroup in /proc; "" for no /proc entry
		cgroup   uint64 // of the connect event
		callerCg string // CgroupPath set by the caller
		want     audit.Process
	}{
		{
			name: "pod found", pid: 100, exe: curl, procCg: f.paths["planner"], cgroup: f.ids["planner"],
			want: audit.Process{CgroupPath: f.paths["planner"], Exe: curl, Container: ctr("containerd", ctrPlanner), Pod: &plannerPod},
		},
		{
			name: "pod found, cgroupfs driver", pid: 101, exe: curl, procCg: f.paths["cgroupfsPod"], cgroup: f.ids["cgroupfsPod"],
			want: audit.Process{CgroupPath: f.paths["cgroupfsPod"], Exe: curl, Container: ctr("cri", ctrPlanner), Pod: &plannerPod},
		},
		{
			name: "pod not in the informer", pid: 102, exe: curl, procCg: f.paths["unknownPod"], cgroup: f.ids["unknownPod"],
			want: audit.Process{CgroupPath: f.paths["unknownPod"], Exe: curl, Container: ctr("containerd", ctrPlanner), Pod: unknownPod(uidWorker)},
		},
		{
			name: "container, no pod", pid: 103, exe: "/app/server", procCg: f.paths["docker"], cgroup: f.ids["docker"],
			want: audit.Process{CgroupPath: f.paths["docker"], Exe: "/app/server", Container: ctr("docker", ctrDocker)},
		},
		{
			name: "host service", pid: 104, exe: "/usr/bin/containerd", procCg: f.paths["hostService"], cgroup: f.ids["hostService"],
			want: audit.Process{CgroupPath: f.paths["hostService"], Exe: "/usr/bin/containerd"},
		},
		{
			// The cgroup still names the workload; only the exe is lost.
			name: "process gone", pid: 105, cgroup: f.ids["planner"],
			want: audit.Process{CgroupPath: f.paths["planner"], Exe: audit.Unknown, Container: ctr("containerd", ctrPlanner), Pod: &plannerPod},
		},
		{
			name: "pid reused in another cgroup", pid: 106, exe: "/usr/bin/containerd", procCg: f.paths["hostService"], cgroup: f.ids["planner"],
			want: audit.Process{CgroupPath: f.paths["planner"], Exe: audit.Unknown, Container: ctr("containerd", ctrPlanner), Pod: &plannerPod},
		},
		{
			name: "exe unreadable", pid: 107, procCg: f.paths["docker"], cgroup: f.ids["docker"],
			want: audit.Process{CgroupPath: f.paths["docker"], Exe: audit.Unknown, Container: ctr("docker", ctrDocker)},
		},
		{
			name: "unknown cgroup id", pid: 108, exe: curl, procCg: "/gone.scope", cgroup: 1 << 62,
			want: audit.Process{Exe: audit.Unknown},
		},
		{
			// Nothing to check the pid against: the exe could be anyone's.
			name: "no cgroup id", pid: 109, exe: curl, procCg: f.paths["planner"], cgroup: 0,
			want: audit.Process{Exe: audit.Unknown},
		},
		{
			name: "pid 0", pid: 0, cgroup: f.ids["docker"],
			want: audit.Process{CgroupPath: f.paths["docker"], Exe: audit.Unknown, Container: ctr("docker", ctrDocker)},
		},
		{
			// An agent in a container with its own cgroup namespace.
			name: "cgroup namespace view", pid: 110, exe: curl, procCg: "/../../.." + f.paths["planner"], cgroup: f.ids["planner"],
			want: audit.Process{CgroupPath: f.paths["planner"], Exe: curl, Container: ctr("containerd", ctrPlanner), Pod: &plannerPod},
		},
		{
			name: "cgroup namespace view, other cgroup", pid: 111, exe: curl, procCg: "/../.." + f.paths["docker"], cgroup: f.ids["planner"],
			want: audit.Process{CgroupPath: f.paths["planner"], Exe: audit.Unknown, Container: ctr("containerd", ctrPlanner), Pod: &plannerPod},
		},
		{
			name: "cgroup namespace view, a suffix of the name", pid: 112, exe: curl, procCg: "/../containerd.service", cgroup: f.ids["hostService"],
			want: audit.Process{CgroupPath: f.paths["hostService"], Exe: curl},
		},
		{
			name: "cgroup namespace view, not at a name boundary", pid: 113, exe: curl, procCg: "/../ontainerd.service", cgroup: f.ids["hostService"],
			want: audit.Process{CgroupPath: f.paths["hostService"], Exe: audit.Unknown},
		},
		{
			name: "caller's cgroup path kept", pid: 114, exe: curl, procCg: f.paths["docker"], cgroup: f.ids["docker"], callerCg: f.paths["docker"],
			want: audit.Process{CgroupPath: f.paths["docker"], Exe: curl, Container: ctr("docker", ctrDocker)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.procCg != "" {
				f.process(t, tc.pid, tc.exe, tc.procCg)
			}
			p := &audit.Process{PID: tc.pid, TGID: tc.pid, Comm: "curl", UID: 1000, GID: 1000, Cgroup: tc.cgroup, CgroupPath: tc.callerCg}
			f.w.Resolve(p)
			want := tc.want
			want.PID, want.TGID, want.Comm, want.UID, want.GID, want.Cgroup = tc.pid, tc.pid, "curl", 1000, 1000, tc.cgroup
			if !reflect.DeepEqual(*p, want) {
				t.Errorf("Resolve:\n got %s\nwant %s", dump(p), dump(&want))
			}
		})
	}
}

func dump(p *audit.Process) string {
	s := fmt.Sprintf("%+v", *p)
	if p.Container != nil {
		s += fmt.Sprintf(" container=%+v", *p.Container)
	}
	if p.Pod != nil {
		s += fmt.Sprintf(" pod=%+v", *p.Pod)
	}
	return s
}

// A cgroup made after the last walk of the hierarchy is found through
// /proc, checked by its inode.
func TestResolveCgroupSinceLastWalk(t *testing.T) {
	f := newWorkloadsFixture(t)
	f.cgroups.minRewalk = time.Hour
	f.cgroups.Path(f.ids["docker"]) // the walk
	const path = "/kubepods/pod" + uidPlanner + "/" + ctrDocker
	if err := os.MkdirAll(filepath.Join(f.root, path), 0o755); err != nil {
		t.Fatal(err)
	}
	id := inode(t, filepath.Join(f.root, path))
	if got := f.cgroups.Path(id); got != "" {
		t.Fatalf("walked again: Path = %q", got)
	}

	// A process whose /proc cgroup is not the connect's: no path, no exe.
	f.process(t, 200, "/usr/bin/curl", f.paths["docker"])
	p := &audit.Process{PID: 200, Cgroup: id}
	f.w.Resolve(p)
	if p.CgroupPath != "" || p.Exe != audit.Unknown || p.Container != nil || p.Pod != nil {
		t.Errorf("cgroup of another process taken: %s", dump(p))
	}

	f.process(t, 201, "/usr/bin/curl", path)
	p = &audit.Process{PID: 201, Cgroup: id}
	f.w.Resolve(p)
	want := audit.Process{PID: 201, Cgroup: id, CgroupPath: path, Exe: "/usr/bin/curl",
		Container: &audit.Container{Runtime: "cri", ID: ctrDocker}, Pod: &plannerPod}
	if !reflect.DeepEqual(*p, want) {
		t.Errorf("Resolve:\n got %s\nwant %s", dump(p), dump(&want))
	}
	if got := f.cgroups.Path(id); got != path {
		t.Errorf("the learnt path is not cached: Path = %q", got)
	}
}

func TestCgroupsLearnRefuses(t *testing.T) {
	f := newWorkloadsFixture(t)
	id := f.ids["docker"]
	for _, rel := range []string{
		"",
		"system.slice/docker-" + ctrDocker + ".scope", // not absolute
		"/../system.slice/docker-" + ctrDocker + ".scope",
		"/system.slice/../system.slice/docker-" + ctrDocker + ".scope",
		f.paths["docker"] + "/",
		f.paths["hostService"], // another cgroup's inode
		"/no/such/cgroup",
	} {
		if f.cgroups.learn(id, rel) {
			t.Errorf("learn(%d, %q) accepted", id, rel)
		}
	}
	if f.cgroups.learn(0, f.paths["docker"]) {
		t.Error("learn(0) accepted")
	}
	var nilCgroups *Cgroups
	if nilCgroups.learn(id, f.paths["docker"]) {
		t.Error("nil Cgroups learnt")
	}
	if !f.cgroups.learn(id, f.paths["docker"]) {
		t.Error("learn refused the right path")
	}
}

func TestResolveOffKubernetes(t *testing.T) {
	f := newWorkloadsFixture(t)
	f.process(t, 300, "/usr/bin/curl", f.paths["planner"])
	want := &audit.Pod{Namespace: audit.Unknown, Name: audit.Unknown, UID: uidPlanner, ServiceAccount: audit.Unknown}
	for name, pods := range map[string]PodLookup{"nil": nil, "nil *Pods": (*Pods)(nil)} {
		w := NewWorkloads(f.cgroups, pods, f.proc)
		p := &audit.Process{PID: 300, Cgroup: f.ids["planner"]}
		w.Resolve(p)
		if !reflect.DeepEqual(p.Pod, want) || p.Exe != "/usr/bin/curl" || p.Container == nil {
			t.Errorf("%s: %s", name, dump(p))
		}
	}
}

func TestResolveNil(t *testing.T) {
	var w *Workloads
	w.Resolve(&audit.Process{PID: 1})
	newWorkloadsFixture(t).w.Resolve(nil)
}

func TestResolveCache(t *testing.T) {
	f := newWorkloadsFixture(t)
	now := time.Unix(1_000_000, 0)
	f.w.now = func() time.Time { return now }
	resolve := func(pid uint32, cgroup string) *audit.Process {
		p := &audit.Process{PID: pid, Cgroup: f.ids[cgroup]}
		f.w.Resolve(p)
		return p
	}

	f.process(t, 400, "/usr/bin/curl", f.paths["planner"])
	if p := resolve(400, "planner"); p.Exe != "/usr/bin/curl" {
		t.Fatalf("Exe = %q", p.Exe)
	}
	// Within the TTL /proc is not read again.
	f.process(t, 400, "/usr/bin/wget", f.paths["planner"])
	now = now.Add(procTTL - time.Millisecond)
	if p := resolve(400, "planner"); p.Exe != "/usr/bin/curl" {
		t.Errorf("within the TTL Exe = %q, want the cached /usr/bin/curl", p.Exe)
	}
	// The same pid connecting from another cgroup is another process.
	f.process(t, 400, "/usr/bin/containerd", f.paths["hostService"])
	if p := resolve(400, "hostService"); p.Exe != "/usr/bin/containerd" {
		t.Errorf("pid reused in another cgroup: Exe = %q", p.Exe)
	}
	// Pods are not cached: a label change shows at once.
	relabelled := plannerPod
	relabelled.Labels = map[string]string{"app": "planner", "v": "2"}
	f.pods.set(relabelled)
	if p := resolve(400, "planner"); !reflect.DeepEqual(p.Pod, &relabelled) {
		t.Errorf("Pod = %+v, want the relabelled pod", p.Pod)
	}
	// After the TTL /proc is read again; the process has left the cgroup.
	now = now.Add(time.Millisecond)
	if p := resolve(400, "planner"); p.Exe != audit.Unknown {
		t.Errorf("after the TTL Exe = %q, want %q", p.Exe, audit.Unknown)
	}
	// A process that was gone stays unknown for the TTL, then is read again.
	if p := resolve(401, "docker"); p.Exe != audit.Unknown {
		t.Fatalf("Exe = %q", p.Exe)
	}
	f.process(t, 401, "/app/server", f.paths["docker"])
	if p := resolve(401, "docker"); p.Exe != audit.Unknown {
		t.Errorf("within the TTL Exe = %q, want the cached %q", p.Exe, audit.Unknown)
	}
	now = now.Add(procTTL)
	if p := resolve(401, "docker"); p.Exe != "/app/server" {
		t.Errorf("after the TTL Exe = %q", p.Exe)
	}
}

func TestResolveCacheBounded(t *testing.T) {
	f := newWorkloadsFixture(t)
	f.w.max = 16
	now := time.Unix(1_000_000, 0)
	f.w.now = func() time.Time { return now }
	for pid := uint32(1); pid <= 1000; pid++ {
		f.w.Resolve(&audit.Process{PID: pid, Cgroup: f.ids["docker"]})
		if n := len(f.w.procs); n > f.w.max {
			t.Fatalf("after pid %d the cache holds %d entries, max %d", pid, n, f.w.max)
		}
		if pid%100 == 0 {
			now = now.Add(time.Second)
		}
	}

	// Expired entries go first: a full cache of expired ones is emptied.
	f.w = NewWorkloads(f.cgroups, f.pods, f.proc)
	f.w.max = 16
	f.w.now = func() time.Time { return now }
	for pid := range uint32(16) {
		f.w.Resolve(&audit.Process{PID: pid + 1, Cgroup: f.ids["docker"]})
	}
	now = now.Add(procTTL)
	f.w.Resolve(&audit.Process{PID: 5000, Cgroup: f.ids["docker"]})
	if n := len(f.w.procs); n != 1 {
		t.Errorf("after expiry the cache holds %d entries, want 1", n)
	}
}

func TestResolveConcurrent(t *testing.T) {
	f := newWorkloadsFixture(t)
	f.w.max = 32
	for pid := uint32(1); pid <= 64; pid++ {
		f.process(t, pid, "/usr/bin/curl", f.paths["planner"])
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				pid := uint32((g*500+i)%64 + 1)
				p := &audit.Process{PID: pid, Cgroup: f.ids["planner"]}
				f.w.Resolve(p)
				if p.Exe != "/usr/bin/curl" || p.Pod == nil || p.Pod.Name != "planner-0" {
					t.Errorf("pid %d: %s", pid, dump(p))
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestSameCgroup(t *testing.T) {
	const path = "/kubepods.slice/kubepods-pod1.slice/cri-containerd-x.scope"
	for _, tc := range []struct {
		cur  string
		want bool
	}{
		{path, true},
		{"/../" + path[1:], true},
		{"/../../cri-containerd-x.scope", true},
		{"/..", false},
		{"/../", false},
		{"/cri-containerd-x.scope", false}, // inside the namespace: must be exact
		{"/../i-containerd-x.scope", false},
		{"/..cri-containerd-x.scope", false},
		{"/../kubepods.slice", false},
		{"", false},
	} {
		if got := sameCgroup(path, tc.cur); got != tc.want {
			t.Errorf("sameCgroup(%q, %q) = %v, want %v", path, tc.cur, got, tc.want)
		}
	}
}

func BenchmarkResolve(b *testing.B) {
	f := newWorkloadsFixture(b)
	f.process(b, 100, "/usr/bin/curl", f.paths["planner"])
	run := func(b *testing.B, w *Workloads, pid uint32, cgroup uint64) {
		b.ReportAllocs()
		for b.Loop() {
			p := audit.Process{PID: pid, Cgroup: cgroup}
			w.Resolve(&p)
			if p.Exe == audit.Unknown || p.Pod == nil {
				b.Fatalf("not resolved: %s", dump(&p))
			}
		}
	}
	// The usual case: a burst of connections from one process.
	b.Run("cached", func(b *testing.B) { run(b, f.w, 100, f.ids["planner"]) })
	// The same with the real informer's cache (labels copied each time).
	b.Run("cached-informer", func(b *testing.B) {
		pod := newPod(plannerPod.Namespace, plannerPod.Name, uidPlanner, testNode, plannerPod.ServiceAccount)
		pod.Labels = map[string]string{"app": "planner", "app.kubernetes.io/name": "planner", "pod-template-hash": "5d4c7b9f8"}
		w := NewWorkloads(f.cgroups, startPods(b, fake.NewClientset(pod)), f.proc)
		run(b, w, 100, f.ids["planner"])
	})
	// Every connection from a new process: /proc is read each time.
	b.Run("uncached", func(b *testing.B) {
		w := NewWorkloads(f.cgroups, f.pods, f.proc)
		w.ttl = 0
		run(b, w, 100, f.ids["planner"])
	})
	// The same with the real /proc and cgroup2 root (this process).
	b.Run("uncached-real-proc", func(b *testing.B) {
		root, err := redirect.Cgroup2Root()
		if err != nil {
			b.Skip(err)
		}
		cur, ok := procCgroup("/proc/self/cgroup")
		if !ok {
			b.Skip("no cgroup2 line in /proc/self/cgroup")
		}
		w := NewWorkloads(NewCgroups(root), f.pods, "/proc")
		w.ttl = 0
		id := inode(b, filepath.Join(root, cur))
		b.ReportAllocs()
		for b.Loop() {
			p := audit.Process{PID: uint32(os.Getpid()), Cgroup: id}
			w.Resolve(&p)
			if p.Exe == audit.Unknown {
				b.Fatalf("not resolved: %s", dump(&p))
			}
		}
	})
}
