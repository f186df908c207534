// Package redirect loads, attaches and pins the BPF datapath and gives the
// agent its maps: rules in, original destinations and connect events out. It
// is the only package that imports cilium/ebpf.
package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/intransit/intransit/pkg/bpfobj"
)

// Options configure Install.
type Options struct {
	PinPath   string // bpffs directory, e.g. /sys/fs/bpf/intransit
	Cgroup    string // cgroup v2 directory to attach to
	MapSize   int    // capacity of the original-destination maps
	Mark      uint32 // SO_MARK of the proxy's own sockets
	ProxyPort uint16 // where enforced connects are sent
	// PodProxyIP, when valid (IPv4), is where connects from other network
	// namespaces (pods) are sent: a host address the proxy listens on, since
	// a pod cannot reach the host's loopback.
	PodProxyIP netip.Addr
	// IngressCgroup, when set, gets the inbound enforcement program
	// (cgroup_skb/ingress) for executor services; empty detaches it.
	IngressCgroup string
	// Groups is the cgroup id -> workload group table written with the
	// rules (see SetRulesAndGroups); nil: every cgroup in group 0.
	Groups map[uint64]uint32
	Logger *slog.Logger
}

// program is one attached BPF program and the name of its pinned link.
type program struct {
	name   string
	attach ebpf.AttachType
	prog   func(*bpfobj.RedirectObjects) *ebpf.Program
}

// Attach order matters: sockops and getpeername first, so every connect that
// connect4/6 redirects is already followed by the programs that track it.
var programs = []program{
	{"sockops", ebpf.AttachCGroupSockOps, func(o *bpfobj.RedirectObjects) *ebpf.Program { return o.IntransitSockops }},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername, func(o *bpfobj.RedirectObjects) *ebpf.Program { return o.IntransitGetpeername4 }},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername, func(o *bpfobj.RedirectObjects) *ebpf.Program { return o.IntransitGetpeername6 }},
	{"connect4", ebpf.AttachCGroupInet4Connect, func(o *bpfobj.RedirectObjects) *ebpf.Program { return o.IntransitConnect4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(o *bpfobj.RedirectObjects) *ebpf.Program { return o.IntransitConnect6 }},
}

// Datapath is the loaded and attached BPF side.
type Datapath struct {
	objs     bpfobj.RedirectObjects
	links    []link.Link
	opts     Options
	cgroupID uint64
	// Reused reports whether pinned links from an earlier agent were found and
	// updated in place rather than attached anew.
	Reused bool
}

func mapsDir(pin string) string  { return filepath.Join(pin, "maps") }
func linksDir(pin string) string { return filepath.Join(pin, "links") }

// Install loads the programs, reuses pinned maps, sets the rules and attaches
// (or, after a restart, atomically updates) the pinned cgroup links. Pins
// outlive the process: while no agent runs, enforced connects are sent to a
// port nobody listens on and fail (fail closed).
func Install(o Options, rules []Rule) (*Datapath, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.PinPath == "" || o.Cgroup == "" || o.ProxyPort == 0 || o.MapSize <= 0 {
		return nil, errors.New("install datapath: pin path, cgroup, proxy port and map size are required")
	}
	// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; a no-op after.
	// Failing here is not fatal: without privileges the load below fails
	// with the clearer capability message.
	if err := rlimit.RemoveMemlock(); err != nil {
		o.Logger.Debug("could not raise RLIMIT_MEMLOCK (needs CAP_SYS_RESOURCE on kernels before 5.11)", "error", err)
	}
	cgID, err := CgroupID(o.Cgroup)
	if err != nil {
		return nil, err
	}
	if err := ensureBPFFS(o.PinPath); err != nil {
		return nil, err
	}
	for _, dir := range []string{mapsDir(o.PinPath), linksDir(o.PinPath)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory %s: %w", dir, privilegeHint(err))
		}
	}

	d := &Datapath{opts: o, cgroupID: cgID}
	if err := d.load(); err != nil {
		return nil, err
	}
	if err := d.writeSettings(); err != nil {
		d.objs.Close()
		return nil, err
	}
	if err := d.SetRulesAndGroups(rules, o.Groups); err != nil {
		d.objs.Close()
		return nil, err
	}
	if err := d.attach(); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.attachIngress(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// ingressProgram is attached separately: to the executors' cgroup, and only
// on hosts that serve inbound tunnels.
var ingressProgram = program{"ingress", ebpf.AttachCGroupInetIngress, func(o *bpfobj.RedirectObjects) *ebpf.Program { return o.IntransitIngress }}

func (d *Datapath) attachIngress() error {
	pinned := filepath.Join(linksDir(d.opts.PinPath), ingressProgram.name)
	if d.opts.IngressCgroup == "" {
		return detachPinned(pinned)
	}
	id, err := CgroupID(d.opts.IngressCgroup)
	if err != nil {
		return err
	}
	l, _, err := d.attachOneTo(pinned, d.opts.IngressCgroup, id, ingressProgram.attach, d.objs.IntransitIngress)
	if err != nil {
		return fmt.Errorf("attach ingress to %s: %w", d.opts.IngressCgroup, privilegeHint(err))
	}
	d.links = append(d.links, l)
	return nil
}

// detachPinned removes a pinned link if there is one.
func detachPinned(pinned string) error {
	if _, err := os.Stat(pinned); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	l, err := link.LoadPinnedLink(pinned, nil)
	if err != nil {
		return fmt.Errorf("open pinned link %s: %w", pinned, privilegeHint(err))
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin %s: %w", pinned, err)
	}
	return nil
}

func (d *Datapath) load() error {
	spec, err := bpfobj.LoadRedirect()
	if err != nil {
		return fmt.Errorf("parse embedded BPF object: %w", err)
	}
	for name, m := range spec.Maps {
		switch name {
		case bpfobj.RedirectMapByCookie, bpfobj.RedirectMapByAddr:
			m.MaxEntries = uint32(d.opts.MapSize)
		}
		// Pinned maps carry state across agent restarts: in-flight entries,
		// rules (so the datapath keeps enforcing) and counters.
		if m.Type != ebpf.UnspecifiedMap && name[0] != '.' {
			m.Pinning = ebpf.PinByName
		}
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: mapsDir(d.opts.PinPath)}}
	err = spec.LoadAndAssign(&d.objs, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// A new map size or layout: start the maps afresh. Old links keep the
		// old maps alive until they are updated below.
		d.opts.Logger.Warn("pinned BPF maps differ from this version or config; recreating them", "error", err)
		if rmErr := removeMapPins(d.opts.PinPath); rmErr != nil {
			return rmErr
		}
		err = spec.LoadAndAssign(&d.objs, opts)
	}
	if err != nil {
		return fmt.Errorf("load BPF programs: %w", privilegeHint(err))
	}
	return nil
}

func removeMapPins(pin string) error {
	entries, err := os.ReadDir(mapsDir(pin))
	if err != nil {
		return fmt.Errorf("read %s: %w", mapsDir(pin), err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(mapsDir(pin), e.Name())); err != nil {
			return fmt.Errorf("remove stale map pin: %w", err)
		}
	}
	return nil
}

func (d *Datapath) writeSettings() error {
	s := bpfobj.RedirectSettings{
		Mark:      d.opts.Mark,
		ProxyPort: htons(d.opts.ProxyPort),
		ProxyIp4:  ipv4Loopback(),
		ProxyIp6:  ipv6Loopback(),
	}
	// The host's netns cookie tells pods (other namespaces) apart. Needed
	// for proxy.podAddress and for per-namespace proxy addresses.
	cookie, cookieErr := hostNetnsCookie()
	if cookieErr == nil {
		s.HostNetnsCookie = cookie
	}
	if ip := d.opts.PodProxyIP.Unmap(); ip.Is4() {
		if cookieErr != nil {
			return cookieErr
		}
		a4 := ip.As4()
		s.PodProxyIp4 = binary.NativeEndian.Uint32(a4[:]) // bytes already in network order
	}
	if err := d.objs.SettingsMap.Put(uint32(0), &s); err != nil {
		return fmt.Errorf("write datapath settings: %w", err)
	}
	return nil
}

func (d *Datapath) attach() error {
	for _, p := range programs {
		pinned := filepath.Join(linksDir(d.opts.PinPath), p.name)
		prog := p.prog(&d.objs)
		l, reused, err := d.attachOne(pinned, p.attach, prog)
		if err != nil {
			return fmt.Errorf("attach %s to %s: %w", p.name, d.opts.Cgroup, privilegeHint(err))
		}
		d.Reused = d.Reused || reused
		d.links = append(d.links, l)
	}
	return nil
}

// attachOne updates the pinned link in place when it is attached to the same
// cgroup (no second attachment, no window without a program), and otherwise
// attaches afresh and pins.
func (d *Datapath) attachOne(pinned string, at ebpf.AttachType, prog *ebpf.Program) (link.Link, bool, error) {
	return d.attachOneTo(pinned, d.opts.Cgroup, d.cgroupID, at, prog)
}

func (d *Datapath) attachOneTo(pinned, cgroup string, cgroupID uint64, at ebpf.AttachType, prog *ebpf.Program) (link.Link, bool, error) {
	if _, err := os.Stat(pinned); err == nil {
		old, err := link.LoadPinnedLink(pinned, nil)
		if err != nil {
			return nil, false, fmt.Errorf("open pinned link %s: %w", pinned, err)
		}
		info, err := old.Info()
		if err == nil && info.Cgroup() != nil && info.Cgroup().CgroupId == cgroupID {
			if err := old.Update(prog); err != nil {
				old.Close()
				return nil, false, fmt.Errorf("update pinned link %s: %w", pinned, err)
			}
			return old, true, nil
		}
		// Attached elsewhere (the config names another cgroup): detach it.
		d.opts.Logger.Info("detaching pinned link from a previous cgroup", "link", pinned)
		if err := old.Unpin(); err != nil {
			old.Close()
			return nil, false, fmt.Errorf("unpin %s: %w", pinned, err)
		}
		old.Close()
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: at, Program: prog})
	if err != nil {
		return nil, false, err
	}
	if err := l.Pin(pinned); err != nil {
		l.Close()
		return nil, false, fmt.Errorf("pin link at %s: %w", pinned, err)
	}
	return l, false, nil
}

// Close releases this process's handles. Pinned links and maps stay: the
// datapath keeps running without the agent and refuses enforced connects.
func (d *Datapath) Close() error {
	var errs []error
	for _, l := range d.links {
		errs = append(errs, l.Close())
	}
	d.links = nil
	errs = append(errs, d.objs.Close())
	return errors.Join(errs...)
}

// hostNetnsCookie identifies the agent's own network namespace, the one
// whose clients reach the proxy on loopback.
func hostNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socket for SO_NETNS_COOKIE: %w", err)
	}
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("read SO_NETNS_COOKIE (kernel 5.14+ needed for pod clients): %w", err)
	}
	return cookie, nil
}

// CgroupPath is the cgroup the programs are attached to.
func (d *Datapath) CgroupPath() string { return d.opts.Cgroup }

// Uninstall detaches every pinned program and removes the pins under pin.
func Uninstall(pin string) error {
	var errs []error
	for _, p := range append(programs[:len(programs):len(programs)], ingressProgram) {
		pinned := filepath.Join(linksDir(pin), p.name)
		if _, err := os.Stat(pinned); errors.Is(err, os.ErrNotExist) {
			continue
		}
		l, err := link.LoadPinnedLink(pinned, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("open pinned link %s: %w", pinned, privilegeHint(err)))
			continue
		}
		// Unpinning drops the last reference once our fd closes: detached.
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", pinned, err))
		}
		errs = append(errs, l.Close())
	}
	if _, err := os.Stat(mapsDir(pin)); err == nil {
		errs = append(errs, removeMapPins(pin))
	}
	for _, dir := range []string{linksDir(pin), mapsDir(pin), pin} {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// DefaultBPFFS is where bpffs lives; it is mounted there when missing, as
// Cilium does, since fresh hosts do not always have it.
const DefaultBPFFS = "/sys/fs/bpf"

// ensureBPFFS checks that pin lives on a bpffs mount, so pins don't silently
// land on a tmpfs and vanish, mounting bpffs at /sys/fs/bpf if needed.
func ensureBPFFS(pin string) error {
	err := checkBPFFS(pin)
	if err == nil || !strings.HasPrefix(filepath.Clean(pin)+"/", DefaultBPFFS+"/") || isBPFFS(DefaultBPFFS) {
		return err
	}
	if mErr := unix.Mount("bpf", DefaultBPFFS, "bpf", 0, "mode=0700"); mErr != nil {
		return fmt.Errorf("%w; mounting bpffs at %s failed: %w", err, DefaultBPFFS, privilegeHint(mErr))
	}
	return checkBPFFS(pin)
}

func isBPFFS(dir string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(dir, &fs) == nil && fs.Type == unix.BPF_FS_MAGIC
}

func checkBPFFS(pin string) error {
	dir := pin
	for {
		var fs unix.Statfs_t
		err := unix.Statfs(dir, &fs)
		if err == nil {
			if fs.Type != unix.BPF_FS_MAGIC {
				return fmt.Errorf("bpf.pinPath %q is not on a bpf filesystem (mount one: mount -t bpf bpf /sys/fs/bpf)", pin)
			}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("check bpf.pinPath %q: %w", pin, privilegeHint(err))
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return fmt.Errorf("bpf.pinPath %q: no existing parent directory", pin)
		}
		dir = parent
	}
}

// privilegeHint replaces the usual misleading memlock advice with the real
// cause when the kernel says EPERM.
func privilegeHint(err error) error {
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		return err
	}
	if errors.Is(err, unix.EPERM) || (errors.Is(err, os.ErrPermission) && os.Geteuid() != 0) {
		return fmt.Errorf("%w (needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON: run as root or grant them)", err)
	}
	return err
}

func ipv4Loopback() uint32 {
	return htonl(0x7f000001)
}

func ipv6Loopback() [4]uint32 {
	return [4]uint32{0, 0, 0, htonl(1)}
}
