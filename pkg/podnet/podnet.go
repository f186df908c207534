// Package podnet finds the network namespaces of the pods (or any other
// netns) whose processes live under a cgroup, and for each the address of
// this host it can reach: where the proxy must be for that namespace's
// redirected connects (a pod cannot reach the host's loopback).
package podnet

import (
	"bufio"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Namespace is one pod network namespace.
type Namespace struct {
	Inode  uint64     // of /proc/PID/ns/net
	Cookie uint64     // SO_NETNS_COOKIE: what the BPF programs see
	PID    int        // a process in it, when found
	Via    netip.Addr // the namespace's IPv4 default gateway, if it is an address of this host
}

// Finder discovers namespaces, caching what it learned per namespace.
type Finder struct {
	procRoot  string
	hostInode uint64
	hostLocal func(netip.Addr) bool

	mu    sync.Mutex
	known map[uint64]Namespace // by netns inode

	// byCgroup remembers each cgroup's namespace so a scan reads
	// cgroup.procs only for new cgroups; every revalidate-th scan checks
	// them all again (a reused cgroup path, a process moved).
	byCgroup map[string]uint64
	scans    int
}

// revalidate is how many scans a cgroup's remembered namespace is trusted.
const revalidate = 10

// NewFinder prepares discovery. hostLocal reports whether an address is
// one of this host's (nil: checked against the host's interfaces).
func NewFinder(procRoot string, hostLocal func(netip.Addr) bool) (*Finder, error) {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(procRoot, "self/ns/net"), &st); err != nil {
		return nil, fmt.Errorf("host network namespace: %w", err)
	}
	if hostLocal == nil {
		hostLocal = isHostAddr
	}
	return &Finder{procRoot: procRoot, hostInode: st.Ino, hostLocal: hostLocal, known: map[uint64]Namespace{}, byCgroup: map[string]uint64{}}, nil
}

// Find walks the cgroups under dir and returns the distinct network
// namespaces (other than the host's) of the processes in them. Namespaces
// no process holds any more are forgotten.
func (f *Finder) Find(dir string) []Namespace {
	seen := map[uint64]bool{}
	cgSeen := map[string]bool{}
	var out []Namespace
	f.mu.Lock()
	f.scans++
	fresh := f.scans%revalidate == 0
	f.mu.Unlock()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		cgSeen[p] = true
		f.mu.Lock()
		ino, cached := f.byCgroup[p]
		ns, known := f.known[ino]
		f.mu.Unlock()
		if cached && !fresh && (ino == f.hostInode || known) {
			if ino != f.hostInode && !seen[ino] {
				seen[ino] = true
				out = append(out, ns)
			}
			return nil
		}
		for _, pid := range firstPIDs(filepath.Join(p, "cgroup.procs"), 1) {
			ino, ok := f.netnsInode(pid)
			if !ok {
				continue
			}
			f.mu.Lock()
			f.byCgroup[p] = ino
			f.mu.Unlock()
			if ino == f.hostInode || seen[ino] {
				continue
			}
			seen[ino] = true
			if ns, ok := f.learn(ino, pid); ok {
				out = append(out, ns)
			}
		}
		return nil
	})
	f.mu.Lock()
	for ino := range f.known {
		if !seen[ino] {
			delete(f.known, ino)
		}
	}
	for p := range f.byCgroup {
		if !cgSeen[p] {
			delete(f.byCgroup, p)
		}
	}
	f.mu.Unlock()
	return out
}

func (f *Finder) netnsInode(pid int) (uint64, bool) {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(f.procRoot, strconv.Itoa(pid), "ns/net"), &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

// learn returns the cached namespace, or enters it once to read its cookie
// and default gateway.
func (f *Finder) learn(ino uint64, pid int) (Namespace, bool) {
	f.mu.Lock()
	ns, ok := f.known[ino]
	f.mu.Unlock()
	if ok {
		return ns, true
	}
	h, err := netns.GetFromPath(filepath.Join(f.procRoot, strconv.Itoa(pid), "ns/net"))
	if err != nil {
		return Namespace{}, false
	}
	defer h.Close()
	// The handle pins the namespace: check it is still the one we saw.
	var st unix.Stat_t
	if unix.Fstat(int(h), &st) != nil || st.Ino != ino {
		return Namespace{}, false
	}
	cookie, err := cookieOf(h)
	if err != nil {
		return Namespace{}, false
	}
	ns = Namespace{Inode: ino, Cookie: cookie, PID: pid}
	if gw, ok := defaultGateway(h); ok && f.hostLocal(gw) {
		ns.Via = gw
	}
	f.mu.Lock()
	f.known[ino] = ns
	f.mu.Unlock()
	return ns, true
}

// cookieOf reads SO_NETNS_COOKIE from a socket made inside the namespace,
// on a thread that enters it and comes back.
func cookieOf(h netns.NsHandle) (uint64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		return 0, err
	}
	fd, serr := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err := netns.Set(orig); err != nil {
		// A thread stuck in another namespace must not be reused.
		runtime.UnlockOSThread()
		panic(fmt.Sprintf("podnet: cannot return to the host network namespace: %v", err))
	}
	if serr != nil {
		return 0, serr
	}
	defer unix.Close(fd)
	return unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
}

func defaultGateway(h netns.NsHandle) (netip.Addr, bool) {
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return netip.Addr{}, false
	}
	defer nh.Close()
	routes, err := nh.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil {
			if a, ok := netip.AddrFromSlice(r.Gw.To4()); ok {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}

func isHostAddr(a netip.Addr) bool {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, ad := range addrs {
		if b, ok := netip.AddrFromSlice(ad.IP.To4()); ok && b == a {
			return true
		}
	}
	return false
}

// firstPIDs reads up to n pids from a cgroup.procs file.
func firstPIDs(path string, n int) []int {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []int
	sc := bufio.NewScanner(f)
	for sc.Scan() && len(out) < n {
		if pid, err := strconv.Atoi(sc.Text()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}
