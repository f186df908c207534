package identity

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/intransit/intransit/internal/testutil"
	"github.com/intransit/intransit/pkg/audit"
)

// mkCgroups makes the cgroup rel (and its missing parents) below base, each
// removed when the test ends, innermost first. It returns the leaf.
func mkCgroups(t *testing.T, base, rel string) string {
	t.Helper()
	dir := base
	for _, name := range strings.Split(rel, "/") {
		dir = filepath.Join(dir, name)
		if err := os.Mkdir(dir, 0o755); errors.Is(err, os.ErrExist) {
			continue
		} else if err != nil {
			t.Fatalf("create cgroup: %v", err)
		}
		made := dir
		t.Cleanup(func() { rmCgroup(t, filepath.Dir(base), made) })
	}
	return dir
}

// rmCgroup removes dir, first moving any process still there to the root
// (a killed process can linger a moment).
func rmCgroup(t *testing.T, root, dir string) {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, pid := range strings.Fields(string(procs)) {
			_ = os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(pid), 0)
		}
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("remove cgroup %s: %v", dir, err)
			return
		}
	}
}

// cgroupID is the id the kernel gives cgroup dir (what
// bpf_get_current_cgroup_id reports), from its file handle.
func cgroupID(t *testing.T, dir string) uint64 {
	t.Helper()
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, dir, 0)
	if err != nil {
		t.Fatalf("cgroup id of %s: %v", dir, err)
	}
	if len(h.Bytes()) != 8 {
		t.Fatalf("cgroup %s: file handle of %d bytes, want 8", dir, len(h.Bytes()))
	}
	return binary.NativeEndian.Uint64(h.Bytes())
}

func randomContainerID(t *testing.T) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// A process in Kubernetes-style cgroups of the real cgroup2 hierarchy,
// with both cgroup drivers, resolved through the real /proc.
func TestResolveRealCgroups(t *testing.T) {
	base := testutil.NewCgroup(t)
	root := filepath.Dir(base)
	rel := func(dir string) string { return strings.TrimPrefix(dir, root) }

	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	wantExe, err := filepath.EvalSymlinks(sleep)
	if err != nil {
		t.Fatal(err)
	}

	const uid = "7d3c5a1e-9b2f-4c8d-a6e0-1f2b3c4d5e6f"
	sdUID := strings.ReplaceAll(uid, "-", "_")
	ctrSystemd, ctrCgroupfs, ctrLate := randomContainerID(t), randomContainerID(t), randomContainerID(t)
	systemd := mkCgroups(t, base, "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"+sdUID+".slice/cri-containerd-"+ctrSystemd+".scope")
	cgroupfs := mkCgroups(t, base, "kubepods/burstable/pod"+uid+"/"+ctrCgroupfs)

	cmd := exec.Command(sleep, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Registered after the cgroups, so run before their removal.
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	pid := uint32(cmd.Process.Pid)
	moveTo := func(dir string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			t.Fatalf("move sleep into %s: %v", dir, err)
		}
	}

	pod := audit.Pod{Namespace: "agents", Name: "planner-0", UID: uid, ServiceAccount: "planner", Labels: map[string]string{"app": "planner"}}
	pods := &fakePods{pods: map[string]audit.Pod{uid: pod}}
	cgroups := NewCgroups(root)
	resolve := func(id uint64) *audit.Process {
		// A new Workloads each time: no cached /proc reads.
		p := &audit.Process{PID: pid, TGID: pid, Comm: "sleep", Cgroup: id}
		NewWorkloads(cgroups, pods, "/proc").Resolve(p)
		return p
	}
	check := func(t *testing.T, leaf string, ctr audit.Container) {
		t.Helper()
		id := cgroupID(t, leaf)
		if ino := inode(t, leaf); ino != id {
			t.Fatalf("cgroup %s: inode %d, cgroup id %d: Cgroups relies on them being equal", leaf, ino, id)
		}
		moveTo(leaf)
		p := resolve(id)
		want := audit.Process{PID: pid, TGID: pid, Comm: "sleep", Cgroup: id, CgroupPath: rel(leaf), Exe: wantExe, Container: &ctr, Pod: &pod}
		if !reflect.DeepEqual(*p, want) {
			t.Errorf("Resolve:\n got %s\nwant %s", dump(p), dump(&want))
		}
	}

	t.Run("systemd", func(t *testing.T) {
		check(t, systemd, audit.Container{Runtime: "containerd", ID: ctrSystemd})
	})
	t.Run("cgroupfs", func(t *testing.T) {
		check(t, cgroupfs, audit.Container{Runtime: "cri", ID: ctrCgroupfs})
	})
	// The process has left the systemd leaf: as if its pid had been reused.
	t.Run("moved away", func(t *testing.T) {
		p := resolve(cgroupID(t, systemd))
		if p.Exe != audit.Unknown || p.CgroupPath != rel(systemd) || p.Pod == nil || p.Pod.Name != "planner-0" {
			t.Errorf("Resolve: %s; want Exe %q and the connect's cgroup and pod", dump(p), audit.Unknown)
		}
	})
	// A container cgroup made after the last walk is found through /proc.
	t.Run("new cgroup", func(t *testing.T) {
		cgroups.minRewalk = time.Hour
		late := mkCgroups(t, base, "kubepods/burstable/pod"+uid+"/"+ctrLate)
		if got := cgroups.Path(cgroupID(t, late)); got != "" {
			t.Fatalf("walked again: Path = %q", got)
		}
		check(t, late, audit.Container{Runtime: "cri", ID: ctrLate})
		moveTo(cgroupfs) // out of late, which this subtest's cleanup removes
	})
	// The process is gone.
	t.Run("exited", func(t *testing.T) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		p := resolve(cgroupID(t, cgroupfs))
		if p.Exe != audit.Unknown || p.CgroupPath != rel(cgroupfs) || p.Container == nil || p.Pod == nil {
			t.Errorf("Resolve: %s; want Exe %q and the connect's cgroup, container and pod", dump(p), audit.Unknown)
		}
	})
}
