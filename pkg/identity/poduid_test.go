package identity

import "testing"

func TestPodUIDFromCgroup(t *testing.T) {
	const (
		uid     = "1234abcd-5678-4def-8abc-0123456789ab"
		sdUID   = "1234abcd_5678_4def_8abc_0123456789ab"
		static  = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
		ctrID   = "4f2a9c1be7d3a8f0c6b5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9"
		burst   = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + sdUID + ".slice"
		cfsBest = "/kubepods/besteffort/pod" + uid
	)
	for _, tc := range []struct {
		name, path, want string
	}{
		// systemd driver.
		{"systemd burstable container", burst + "/cri-containerd-" + ctrID + ".scope", uid},
		{"systemd burstable pod slice", burst, uid},
		{"systemd besteffort", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + sdUID + ".slice/crio-" + ctrID + ".scope", uid},
		{"systemd guaranteed", "/kubepods.slice/kubepods-pod" + sdUID + ".slice/cri-containerd-" + ctrID + ".scope", uid},
		{"systemd static pod", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + static + ".slice/cri-containerd-" + ctrID + ".scope", static},
		{"systemd cgroup root prefix (kind)", "/system.slice/docker-" + ctrID + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + sdUID + ".slice/cri-containerd-" + ctrID + ".scope", uid},
		{"systemd crio conmon", burst + "/crio-conmon-" + ctrID + ".scope", uid},
		// cgroupfs driver.
		{"cgroupfs besteffort container", cfsBest + "/" + ctrID, uid},
		{"cgroupfs besteffort pod", cfsBest, uid},
		{"cgroupfs burstable", "/kubepods/burstable/pod" + uid + "/" + ctrID, uid},
		{"cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + ctrID, uid},
		{"cgroupfs cgroup root prefix", "/kubelet/kubepods/burstable/pod" + uid + "/" + ctrID, uid},
		{"cgroupfs static pod", "/kubepods/pod" + static + "/" + ctrID, static},
		{"relative, trailing slash", "kubepods/pod" + uid + "/", uid},
		// Not pods.
		{"root", "/", ""},
		{"empty", "", ""},
		{"host service", "/system.slice/containerd.service", ""},
		{"user session", "/user.slice/user-1000.slice/session-3.scope", ""},
		{"systemd kubepods", "/kubepods.slice", ""},
		{"systemd QoS slice", "/kubepods.slice/kubepods-burstable.slice", ""},
		{"cgroupfs QoS", "/kubepods/burstable", ""},
		{"pod slice outside kubepods", "/system.slice/system-pod" + sdUID + ".slice", ""},
		{"pod dir outside kubepods", "/docker/pod" + uid + "/" + ctrID, ""},
		{"pod dir under unknown QoS", "/kubepods/gold/pod" + uid, ""},
		{"podman", "/machine.slice/libpod-pod-" + ctrID + ".slice", ""},
		// Malformed.
		{"systemd empty uid", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod.slice", ""},
		{"systemd uid with dashes", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid + ".slice", ""},
		{"systemd truncated uid", "/kubepods.slice/kubepods-pod1234abcd_5678.slice", ""},
		{"systemd uppercase uid", "/kubepods.slice/kubepods-podABCDEF01_5678_4def_8abc_0123456789ab.slice", ""},
		{"systemd not a slice", "/kubepods.slice/kubepods-pod" + sdUID + ".scope", ""},
		{"cgroupfs uid with underscores", "/kubepods/pod" + sdUID, ""},
		{"cgroupfs non-hex uid", "/kubepods/podzzzzzzzz-5678-4def-8abc-0123456789ab", ""},
		{"cgroupfs dashes misplaced", "/kubepods/pod1234abcd5-678-4def-8abc-0123456789ab", ""},
		{"cgroupfs empty uid", "/kubepods/burstable/pod", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := PodUIDFromCgroup(tc.path)
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("PodUIDFromCgroup(%q) = %q, %v; want %q, %v", tc.path, got, ok, tc.want, tc.want != "")
			}
		})
	}
}
