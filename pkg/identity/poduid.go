package identity

import "strings"

// PodUIDFromCgroup extracts the pod UID from a cgroup v2 path as the kubelet
// names pod cgroups, with either cgroup driver:
//
//   - systemd: ".../kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_....slice/cri-containerd-<id>.scope"
//     (a slice name holds its whole hierarchy, "-" separated, so the UID's
//     dashes are written as underscores);
//   - cgroupfs: "/kubepods/burstable/pod1234abcd-5678-.../<container id>",
//     "/kubepods/pod<uid>/..." for guaranteed QoS.
//
// A kubelet --cgroup-root prefix ("kubelet.slice/kubelet-kubepods.slice/...",
// "/kubelet/kubepods/...") is accepted. The pod's own cgroup and any cgroup
// below it (containers, the sandbox) give the pod's UID.
func PodUIDFromCgroup(path string) (uid string, ok bool) {
	parts := strings.Split(path, "/")
	// The outermost pod cgroup wins: it is the one this node's kubelet
	// made, whatever nested kubelets (kind-style nodes in pods) made below.
	for i, part := range parts {
		if uid, ok := systemdPodUID(part); ok {
			return uid, true
		}
		if uid, ok := cgroupfsPodUID(parts[:i], part); ok {
			return uid, true
		}
	}
	return "", false
}

// systemdPodUID parses a pod slice name, "[<root>-]kubepods[-<qos>]-pod<uid>.slice".
func systemdPodUID(name string) (string, bool) {
	name, ok := strings.CutSuffix(name, ".slice")
	if !ok {
		return "", false
	}
	segs := strings.Split(name, "-")
	raw, ok := strings.CutPrefix(segs[len(segs)-1], "pod")
	if !ok || !underKubepods(segs[:len(segs)-1]) {
		return "", false
	}
	uid := strings.ReplaceAll(raw, "_", "-")
	return uid, validUID(uid)
}

// cgroupfsPodUID parses a pod directory name, "pod<uid>", below parents.
func cgroupfsPodUID(parents []string, name string) (string, bool) {
	uid, ok := strings.CutPrefix(name, "pod")
	if !ok || !underKubepods(parents) {
		return "", false
	}
	return uid, validUID(uid)
}

// underKubepods reports whether parents (path elements, or slice name
// segments) end where the kubelet puts pods: in "kubepods" (guaranteed QoS)
// or in its burstable or besteffort QoS child.
func underKubepods(parents []string) bool {
	n := len(parents)
	switch {
	case n >= 1 && parents[n-1] == "kubepods":
		return true
	case n >= 2 && parents[n-2] == "kubepods":
		return parents[n-1] == "burstable" || parents[n-1] == "besteffort"
	}
	return false
}

// validUID accepts the UIDs pod cgroups are named after: the API server's
// lowercase UUIDs, and the 32 hex digit hash the kubelet gives static pods.
func validUID(s string) bool {
	switch len(s) {
	case 36:
		for i := range len(s) {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				if s[i] != '-' {
					return false
				}
			} else if !isLowerHex(s[i]) {
				return false
			}
		}
		return true
	case 32:
		for i := range len(s) {
			if !isLowerHex(s[i]) {
				return false
			}
		}
		return true
	}
	return false
}

func isLowerHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f'
}
