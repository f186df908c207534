package identity

import (
	"strings"
	"testing"

	"github.com/intransit/intransit/pkg/audit"
)

func TestContainerFromCgroup(t *testing.T) {
	const (
		id    = "4f2a9c1be7d3a8f0c6b5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9"
		inner = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		uid   = "1234abcd-5678-4def-8abc-0123456789ab"
		sdUID = "1234abcd_5678_4def_8abc_0123456789ab"
		sdPod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + sdUID + ".slice"
		fsPod = "/kubepods/burstable/pod" + uid
	)
	ctr := func(runtime, id string) *audit.Container { return &audit.Container{Runtime: runtime, ID: id} }
	for _, tc := range []struct {
		name, path string
		want       *audit.Container
	}{
		// systemd driver.
		{"containerd", sdPod + "/cri-containerd-" + id + ".scope", ctr("containerd", id)},
		{"containerd guaranteed", "/kubepods.slice/kubepods-pod" + sdUID + ".slice/cri-containerd-" + id + ".scope", ctr("containerd", id)},
		{"cri-o", sdPod + "/crio-" + id + ".scope", ctr("cri-o", id)},
		{"cri-dockerd", sdPod + "/docker-" + id + ".scope", ctr("docker", id)},
		{"docker", "/system.slice/docker-" + id + ".scope", ctr("docker", id)},
		{"rootless docker", "/user.slice/user-1000.slice/user@1000.service/user.slice/docker-" + id + ".scope", ctr("docker", id)},
		{"podman", "/machine.slice/libpod-" + id + ".scope", ctr("podman", id)},
		{"podman split cgroup", "/machine.slice/libpod-" + id + ".scope/container", ctr("podman", id)},
		{"podman in a pod", "/machine.slice/machine-libpod_pod_" + inner + ".slice/libpod-" + id + ".scope", ctr("podman", id)},
		{"systemd in a container", sdPod + "/cri-containerd-" + id + ".scope/init.scope", ctr("containerd", id)},
		{"container's own cgroups", "/system.slice/docker-" + id + ".scope/system.slice/nginx.service", ctr("docker", id)},
		{"trailing slash", "/system.slice/docker-" + id + ".scope/", ctr("docker", id)},
		{"relative", "system.slice/docker-" + id + ".scope", ctr("docker", id)},
		// cgroupfs driver.
		{"kubepods bare id", fsPod + "/" + id, ctr("cri", id)},
		{"kubepods guaranteed", "/kubepods/pod" + uid + "/" + id, ctr("cri", id)},
		{"kubepods cgroup root prefix", "/kubelet/kubepods/besteffort/pod" + uid + "/" + id, ctr("cri", id)},
		{"kubepods cri-o", fsPod + "/crio-" + id, ctr("cri-o", id)},
		{"docker cgroupfs", "/docker/" + id, ctr("docker", id)},
		{"podman cgroupfs", "/libpod_parent/libpod-" + id, ctr("podman", id)},
		{"nested below a bare id", "/docker/" + id + "/init", ctr("docker", id)},
		// Containers in containers: the innermost.
		{"kind node (systemd)", "/system.slice/docker-" + id + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + sdUID + ".slice/cri-containerd-" + inner + ".scope", ctr("containerd", inner)},
		{"kind node (cgroupfs)", "/docker/" + id + "/kubelet/kubepods/pod" + uid + "/" + inner, ctr("cri", inner)},
		{"docker in docker", "/docker/" + id + "/docker/" + inner, ctr("docker", inner)},
		{"docker in a pod", sdPod + "/cri-containerd-" + id + ".scope/docker/" + inner, ctr("docker", inner)},
		// A monitor scope inside a container is that container's, not the
		// monitored one's.
		{"conmon in a kind node", "/system.slice/docker-" + id + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + sdUID + ".slice/crio-conmon-" + inner + ".scope", ctr("docker", id)},

		// Not containers.
		{"root", "/", nil},
		{"empty", "", nil},
		{"host service", "/system.slice/containerd.service", nil},
		{"user session", "/user.slice/user-1000.slice/session-3.scope", nil},
		{"pod slice", sdPod, nil},
		{"pod dir", fsPod, nil},
		{"QoS", "/kubepods/burstable", nil},
		{"cri-o conmon", sdPod + "/crio-conmon-" + id + ".scope", nil},
		{"cri-o conmon cgroupfs", fsPod + "/crio-conmon-" + id, nil},
		{"podman conmon", "/machine.slice/libpod-conmon-" + id + ".scope", nil},
		{"podman pod slice", "/machine.slice/machine-libpod_pod_" + id + ".slice", nil},
		{"podman pod, old naming", "/machine.slice/libpod-pod-" + id + ".slice", nil},
		{"bare id outside a runtime's parent", "/system.slice/" + id, nil},
		{"bare id at the root", "/" + id, nil},
		{"bare id below QoS, no pod", "/kubepods/burstable/" + id, nil},
		{"bare id below a bad pod uid", "/kubepods/burstable/pod" + sdUID + "/" + id, nil},
		{"bare id below a pod outside kubepods", "/other/pod" + uid + "/" + id, nil},
		{"containerd without .scope", sdPod + "/cri-containerd-" + id, nil},
		{"docker without .scope", "/system.slice/docker-" + id, nil},
		{"docker service", "/system.slice/docker-" + id + ".service", nil},
		{"unknown runtime scope", "/system.slice/rkt-" + id + ".scope", nil},
		{"docker.service", "/system.slice/docker.service", nil},
		// Malformed ids.
		{"short id", sdPod + "/cri-containerd-" + id[:63] + ".scope", nil},
		{"long id", sdPod + "/cri-containerd-" + id + "0.scope", nil},
		{"12-digit short id", "/docker/" + id[:12], nil},
		{"uppercase id", "/system.slice/docker-" + strings.ToUpper(id) + ".scope", nil},
		{"uppercase bare id", fsPod + "/" + strings.ToUpper(id), nil},
		{"non-hex id", "/docker/" + strings.Repeat("g", 64), nil},
		{"empty id", "/system.slice/docker-.scope", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ContainerFromCgroup(tc.path)
			if tc.want == nil {
				if ok {
					t.Errorf("ContainerFromCgroup(%q) = %+v; want none", tc.path, got)
				}
				return
			}
			if !ok || got != *tc.want {
				t.Errorf("ContainerFromCgroup(%q) = %+v, %v; want %+v", tc.path, got, ok, *tc.want)
			}
		})
	}
}
