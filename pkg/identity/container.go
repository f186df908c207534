package identity

import (
	"strings"

	"github.com/intransit/intransit/pkg/audit"
)

// Container runtime names reported in audit.Container.Runtime.
const (
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "cri-o"
	RuntimeDocker     = "docker"
	RuntimePodman     = "podman"
	// RuntimeCRI is a Kubernetes container whose runtime the cgroup path
	// does not tell: with the cgroupfs driver both containerd and
	// cri-dockerd name the container's cgroup by its bare id below the pod's.
	RuntimeCRI = "cri"
)

// scopePrefixes are the systemd scope names ("<prefix><id>.scope") runtimes
// give containers with the systemd cgroup driver. The monitor scopes CRI-O
// and podman make ("crio-conmon-<id>.scope", "libpod-conmon-<id>.scope")
// name the container they watch but hold conmon, not the container: they
// fail the id check ("conmon-<id>" is not an id) and are no container.
var scopePrefixes = [...]struct{ prefix, runtime string }{
	{"cri-containerd-", RuntimeContainerd},
	{"crio-", RuntimeCRIO},
	{"docker-", RuntimeDocker},
	{"libpod-", RuntimePodman},
}

// ContainerFromCgroup finds the innermost container in a cgroup v2 path.
// Recognised container cgroups, with C a 64 lowercase hex digit id:
//
//   - systemd driver: "cri-containerd-C.scope" (containerd),
//     "crio-C.scope" (CRI-O), "docker-C.scope" (Docker, cri-dockerd),
//     "libpod-C.scope" (podman);
//   - cgroupfs driver: "crio-C" (CRI-O), "libpod-C" (podman,
//     "/libpod_parent/libpod-C"), "docker/C" (Docker), and
//     "kubepods[/<qos>]/pod<uid>/C" (containerd or cri-dockerd: RuntimeCRI).
//
// Cgroups a container makes below its own ("C.scope/init.scope", podman's
// "C.scope/container") belong to it; a container within a container (kind
// nodes, Docker in Docker) gives the inner one. Anything else is no
// container: the runtime is never guessed from a bare id.
func ContainerFromCgroup(path string) (audit.Container, bool) {
	rest := strings.TrimRight(path, "/")
	for rest != "" {
		parent, name := "", rest
		if i := strings.LastIndexByte(rest, '/'); i >= 0 {
			parent, name = rest[:i], rest[i+1:]
		}
		if c, ok := containerFromName(parent, name); ok {
			return c, true
		}
		rest = parent
	}
	return audit.Container{}, false
}

// containerFromName reports whether the cgroup name, below parent, is a
// container's.
func containerFromName(parent, name string) (audit.Container, bool) {
	if base, ok := strings.CutSuffix(name, ".scope"); ok {
		for _, s := range scopePrefixes {
			if id, ok := strings.CutPrefix(base, s.prefix); ok && validContainerID(id) {
				return audit.Container{Runtime: s.runtime, ID: id}, true
			}
		}
		return audit.Container{}, false
	}
	if id, ok := strings.CutPrefix(name, "crio-"); ok && validContainerID(id) {
		return audit.Container{Runtime: RuntimeCRIO, ID: id}, true
	}
	if id, ok := strings.CutPrefix(name, "libpod-"); ok && validContainerID(id) {
		return audit.Container{Runtime: RuntimePodman, ID: id}, true
	}
	if !validContainerID(name) {
		return audit.Container{}, false
	}
	// A bare id: only where a runtime is known to put one.
	grand, dir := "", parent
	if i := strings.LastIndexByte(parent, '/'); i >= 0 {
		grand, dir = parent[:i], parent[i+1:]
	}
	if dir == "docker" {
		return audit.Container{Runtime: RuntimeDocker, ID: name}, true
	}
	if _, ok := cgroupfsPodUID(strings.Split(grand, "/"), dir); ok {
		return audit.Container{Runtime: RuntimeCRI, ID: name}, true
	}
	return audit.Container{}, false
}

// validContainerID accepts the ids containerd, CRI-O, Docker and podman give
// containers: 64 lowercase hex digits.
func validContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if !isLowerHex(s[i]) {
			return false
		}
	}
	return true
}
