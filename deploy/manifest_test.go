package deploy_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/intransit/intransit/pkg/config"
)

// Fixed by the chart (not values): where the pod sees the host's
// directories, and the agent's config file.
const (
	configKey      = "intransit.yaml"
	configFile     = "/etc/intransit/intransit.yaml"
	bpffsPath      = "/sys/fs/bpf"
	cgroupMount    = "/host/sys/fs/cgroup"
	inboundTLSDir  = "/etc/intransit-secrets/inbound-tls"
	defaultCgroup  = "/sys/fs/cgroup"
	bpfFSMagic     = "cafe4a11"
	agentName      = "agent"
	initName       = "mount-bpffs"
	drainSpare     = 10 * time.Second // beyond proxy.drainTimeout: audit trail, recordings
	minStartupSecs = 60               // startup probe budget: waiting for the API server's pod list
)

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor
// (monitoring.coreos.com/v1) that the chart sets. The operator's Go types
// are not a dependency: strict decoding into this struct still catches any
// field the chart renders that is not listed here.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
			Relabelings   []struct {
				SourceLabels []string `json:"sourceLabels"`
				TargetLabel  string   `json:"targetLabel"`
			} `json:"relabelings"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// objects is one rendering of the chart, or the committed manifest, decoded.
type objects struct {
	ns      *corev1.Namespace
	sa      *corev1.ServiceAccount
	cm      *corev1.ConfigMap
	ds      *appsv1.DaemonSet
	role    *rbacv1.ClusterRole
	binding *rbacv1.ClusterRoleBinding
	svc     *corev1.Service
	sm      *serviceMonitor
	// all holds every object in document order, keyed "Kind/name".
	all []keyed
}

type keyed struct {
	key string
	obj any
}

// decodeObjects strictly decodes every document of a rendering into its
// Kubernetes API type. An unexpected kind, or two objects of one kind, fails.
func decodeObjects(t *testing.T, data []byte) objects {
	t.Helper()
	var o objects
	for i, doc := range splitDocs(data) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var obj any
		switch gvk := tm.APIVersion + "/" + tm.Kind; gvk {
		case "v1/Namespace":
			obj = once(t, &o.ns, gvk)
		case "v1/ServiceAccount":
			obj = once(t, &o.sa, gvk)
		case "v1/ConfigMap":
			obj = once(t, &o.cm, gvk)
		case "apps/v1/DaemonSet":
			obj = once(t, &o.ds, gvk)
		case "rbac.authorization.k8s.io/v1/ClusterRole":
			obj = once(t, &o.role, gvk)
		case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
			obj = once(t, &o.binding, gvk)
		case "v1/Service":
			obj = once(t, &o.svc, gvk)
		case "monitoring.coreos.com/v1/ServiceMonitor":
			obj = once(t, &o.sm, gvk)
		default:
			t.Fatalf("document %d: unexpected %s\n%s", i, gvk, doc)
		}
		strict(t, doc, obj)
		var meta struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		o.all = append(o.all, keyed{tm.Kind + "/" + meta.Metadata.Name, obj})
	}
	for _, p := range []any{o.sa, o.cm, o.ds} {
		if reflect.ValueOf(p).IsNil() {
			t.Fatalf("no %T in the rendering", p)
		}
	}
	return o
}

// once allocates *p, failing if an object of that kind was already seen.
func once[T any](t *testing.T, p **T, gvk string) *T {
	t.Helper()
	if *p != nil {
		t.Fatalf("two %s objects", gvk)
	}
	*p = new(T)
	return *p
}

// expect is what a rendering must look like for the values it came from.
type expect struct {
	namespace      string // the release namespace
	fullname       string // DaemonSet, ClusterRole, ...
	createNS       bool   // namespace.create
	privileged     bool
	podNS          bool // podNetworkNamespaces
	resolveExe     bool // resolveExecutables
	bpffsInit      bool
	rbac           bool
	tokenRequest   bool // config.identity.token.kubernetes
	serviceMonitor bool
	noRoll         bool // rollOnConfigChange: false
	image          string
	hostCgroupPath string
	gracePeriod    int64
	// swap maps paths in the config to files the test created, for
	// config.Parse (see parseConfig).
	swap map[string]string
}

// defaults is what the chart's default values render, with
// namespace.create on: the committed manifest.
var defaults = expect{
	namespace:      "intransit-system",
	fullname:       "intransit",
	createNS:       true,
	bpffsInit:      true,
	rbac:           true,
	image:          "ghcr.io/intransit/intransit:latest",
	hostCgroupPath: defaultCgroup,
	gracePeriod:    30,
}

// checkRendering runs every check on a decoded rendering.
func checkRendering(t *testing.T, o objects, e expect) {
	t.Helper()
	checkMeta(t, o, e)
	checkRBAC(t, o, e)
	cfg := checkDaemonSet(t, o, e)
	checkServiceMonitor(t, o, e, cfg)
}

func checkMeta(t *testing.T, o objects, e expect) {
	t.Helper()
	if e.createNS {
		if o.ns == nil {
			t.Fatal("no Namespace")
		}
		if o.ns.Name != e.namespace {
			t.Errorf("Namespace %q, want %q", o.ns.Name, e.namespace)
		}
		for _, mode := range []string{"enforce", "warn", "audit"} {
			if got := o.ns.Labels["pod-security.kubernetes.io/"+mode]; got != "privileged" {
				t.Errorf("Namespace label pod-security.kubernetes.io/%s=%q, want privileged (hostNetwork, hostPath and capabilities are not baseline)", mode, got)
			}
		}
	} else if o.ns != nil {
		t.Errorf("Namespace %q rendered with namespace.create off", o.ns.Name)
	}
	for _, k := range o.all {
		m := reflect.ValueOf(k.obj).Elem().FieldByName("ObjectMeta").Interface().(metav1.ObjectMeta)
		if m.Labels["app.kubernetes.io/name"] != "intransit" || m.Labels["app.kubernetes.io/part-of"] != "intransit" {
			t.Errorf("%s lacks the app.kubernetes.io/name and part-of labels: %v", k.key, m.Labels)
		}
		switch k.obj.(type) {
		case *corev1.Namespace, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
			if m.Namespace != "" {
				t.Errorf("cluster-scoped %s has namespace %q", k.key, m.Namespace)
			}
		default:
			if m.Namespace != e.namespace {
				t.Errorf("%s is in namespace %q, want %q", k.key, m.Namespace, e.namespace)
			}
		}
	}
	if o.ds.Name != e.fullname {
		t.Errorf("DaemonSet %q, want %q", o.ds.Name, e.fullname)
	}
}

// checkRBAC: exactly the grants the agent uses, nothing cluster-wide beyond.
func checkRBAC(t *testing.T, o objects, e expect) {
	t.Helper()
	if !e.rbac {
		if o.role != nil || o.binding != nil {
			t.Error("ClusterRole or binding rendered with rbac.create off")
		}
		return
	}
	if o.role == nil || o.binding == nil {
		t.Fatal("no ClusterRole or ClusterRoleBinding")
	}
	type grant struct{ group, resource, verb string }
	got := map[grant]bool{}
	for _, r := range o.role.Rules {
		if len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
			t.Errorf("unexpected rule %+v", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if g == "*" || res == "*" || v == "*" {
						t.Errorf("wildcard in ClusterRole rule %+v", r)
					}
					got[grant{g, res, v}] = true
				}
			}
		}
	}
	want := map[grant]bool{
		{"", "pods", "get"}:   true,
		{"", "pods", "list"}:  true,
		{"", "pods", "watch"}: true,
	}
	if e.tokenRequest {
		want[grant{"", "serviceaccounts/token", "create"}] = true
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ClusterRole grants %v, want exactly %v", got, want)
	}

	b := o.binding
	if b.RoleRef.APIGroup != rbacv1.GroupName || b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != o.role.Name {
		t.Errorf("ClusterRoleBinding roleRef %+v does not name ClusterRole %q", b.RoleRef, o.role.Name)
	}
	if len(b.Subjects) != 1 || b.Subjects[0].Kind != rbacv1.ServiceAccountKind ||
		b.Subjects[0].Name != o.sa.Name || b.Subjects[0].Namespace != o.sa.Namespace {
		t.Errorf("ClusterRoleBinding subjects %+v, want ServiceAccount %s/%s", b.Subjects, o.sa.Namespace, o.sa.Name)
	}
}

// hostMount is how the agent container must see one host directory.
type hostMount struct {
	mountPath string
	readOnly  bool
	typ       corev1.HostPathType
	why       string
}

// agentHostPaths is every hostPath the pod may use, keyed by host path (the
// cgroup one is hostCgroupPath). Anything else, the host's / above all, fails.
func agentHostPaths(hostCgroupPath string) map[string]hostMount {
	return map[string]hostMount{
		bpffsPath:            {bpffsPath, false, corev1.HostPathDirectory, "pins live in the host's bpffs"},
		hostCgroupPath:       {cgroupMount, true, corev1.HostPathDirectory, "attaching needs only a directory fd"},
		"/var/log/intransit": {"/var/log/intransit", false, corev1.HostPathDirectoryOrCreate, "audit.file"},
		"/run/intransit":     {"/run/intransit", false, corev1.HostPathDirectoryOrCreate, "api.socket"},
		"/var/lib/intransit": {"/var/lib/intransit", false, corev1.HostPathDirectoryOrCreate, "recordings.dir"},
	}
}

// volumeNamed returns the pod volume called name.
func volumeNamed(pod *corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

// mountAt returns the container's mount at exactly mountPath and its volume.
func mountAt(t *testing.T, pod *corev1.PodSpec, c *corev1.Container, mountPath string) (*corev1.VolumeMount, *corev1.Volume) {
	t.Helper()
	for i := range c.VolumeMounts {
		if m := &c.VolumeMounts[i]; m.MountPath == mountPath {
			v := volumeNamed(pod, m.Name)
			if v == nil {
				t.Fatalf("volumeMount %q names no volume", m.Name)
			}
			return m, v
		}
	}
	return nil, nil
}

// mountOf returns the mount whose path holds p (the deepest one).
func mountOf(c *corev1.Container, p string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if under(p, m.MountPath) && (best == nil || len(m.MountPath) > len(best.MountPath)) {
			best = m
		}
	}
	return best
}

func container(pod *corev1.PodSpec, name string) *corev1.Container {
	for i := range pod.Containers {
		if pod.Containers[i].Name == name {
			return &pod.Containers[i]
		}
	}
	return nil
}

func capNames(cs []corev1.Capability) []string {
	var out []string
	for _, c := range cs {
		out = append(out, string(c))
	}
	return out
}

func isTrue(b *bool) bool { return b != nil && *b }

// checkDaemonSet checks the pod and its config, and returns the parsed
// config.
func checkDaemonSet(t *testing.T, o objects, e expect) *config.Config {
	t.Helper()
	ds := o.ds
	pod := &ds.Spec.Template.Spec

	// Selection and rollout.
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || sel.Empty() {
		t.Fatalf("selector %v: %v", ds.Spec.Selector, err)
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector label %s=%s is not on the pod template", k, v)
		}
	}
	if us := ds.Spec.UpdateStrategy; us.Type != appsv1.RollingUpdateDaemonSetStrategyType ||
		us.RollingUpdate == nil || us.RollingUpdate.MaxUnavailable == nil ||
		*us.RollingUpdate.MaxUnavailable != intstr.FromInt32(1) {
		t.Errorf("updateStrategy %+v, want RollingUpdate with maxUnavailable 1", us)
	}

	// Pod level.
	if pod.ServiceAccountName != o.sa.Name {
		t.Errorf("serviceAccountName %q, want %q", pod.ServiceAccountName, o.sa.Name)
	}
	if !pod.HostNetwork {
		t.Error("hostNetwork must be true: the proxy must be in the host network namespace")
	}
	// The agent reads /proc/PID of the host pids that connect events carry,
	// and cgroup.procs, which shows 0 for every pid outside the reader's pid
	// namespace.
	if !pod.HostPID {
		t.Error("hostPID must be true: connect events carry host pids, and cgroup.procs lists only the pod's own")
	}
	if pod.HostIPC {
		t.Error("hostIPC must be false")
	}
	if pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("dnsPolicy %q, want ClusterFirstWithHostNet", pod.DNSPolicy)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q, want system-node-critical", pod.PriorityClassName)
	}
	tolerateAll := false
	for _, tol := range pod.Tolerations {
		if tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == "" {
			tolerateAll = true
		}
	}
	if !tolerateAll {
		t.Errorf("tolerations %+v: want one with operator Exists and no key or effect (every node)", pod.Tolerations)
	}

	// Containers: the agent, and the bpffs init container when enabled.
	if len(pod.Containers) != 1 || pod.Containers[0].Name != agentName {
		t.Fatalf("want exactly the container %q, got %d", agentName, len(pod.Containers))
	}
	c := &pod.Containers[0]
	if c.Image != e.image {
		t.Errorf("image %q, want %q", c.Image, e.image)
	}
	checkInit(t, pod, e)
	for _, ctr := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		sc := ctr.SecurityContext
		for _, m := range ctr.VolumeMounts {
			if p := m.MountPropagation; p != nil && *p == corev1.MountPropagationBidirectional && (sc == nil || !isTrue(sc.Privileged)) {
				t.Errorf("container %s: Bidirectional propagation on %s is only allowed for privileged containers", ctr.Name, m.MountPath)
			}
		}
		if sc != nil && isTrue(sc.Privileged) && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: privileged with allowPrivilegeEscalation false is refused by the API server", ctr.Name)
		}
	}

	checkAgentSecurity(t, c, e)
	checkResources(t, c)
	checkHostMounts(t, pod, c, e)

	// The container must be started as the agent with the ConfigMap's file.
	if len(c.Command) != 0 || !slices.Equal(c.Args, []string{"agent", "--config", configFile}) {
		t.Fatalf("command %q args %q, want the image entrypoint with agent --config %s", c.Command, c.Args, configFile)
	}
	cm, cv := mountAt(t, pod, c, path.Dir(configFile))
	if cv == nil || cv.ConfigMap == nil || cv.ConfigMap.Name != o.cm.Name || !cm.ReadOnly {
		t.Fatalf("%s is not ConfigMap %q mounted read-only", path.Dir(configFile), o.cm.Name)
	}
	if len(o.cm.Data) != 1 || len(o.cm.BinaryData) != 0 {
		t.Errorf("ConfigMap %s: want exactly the key %s", o.cm.Name, configKey)
	}
	data, ok := o.cm.Data[configKey]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", o.cm.Name, configKey)
	}
	sum := sha256.Sum256([]byte(data))
	got, roll := ds.Spec.Template.Annotations["checksum/config"]
	if want := hex.EncodeToString(sum[:]); roll != !e.noRoll || (roll && got != want) {
		t.Errorf("pod annotation checksum/config %q (rollOnConfigChange %v), want sha256 of the ConfigMap's %s %q", got, !e.noRoll, configKey, want)
	}

	cfg, auditFile := parseConfig(t, []byte(data), e.swap)
	checkConfigFits(t, pod, c, cfg, auditFile, e.swap)
	checkProbesAndPorts(t, c, cfg)
	checkEnv(t, c)

	// Termination: longer than the drain, with room for closing up.
	g := pod.TerminationGracePeriodSeconds
	if g == nil || *g != e.gracePeriod {
		t.Errorf("terminationGracePeriodSeconds %v, want %d", g, e.gracePeriod)
	} else if d := cfg.Proxy.DrainTimeout.Duration; time.Duration(*g)*time.Second < d+drainSpare {
		t.Errorf("terminationGracePeriodSeconds %d does not cover proxy.drainTimeout %v + %v", *g, d, drainSpare)
	}
	return cfg
}

// checkInit: the bpffs init container, privileged, with nothing but bpffs.
func checkInit(t *testing.T, pod *corev1.PodSpec, e expect) {
	t.Helper()
	if !e.bpffsInit {
		if len(pod.InitContainers) != 0 {
			t.Errorf("init containers %d with bpffsInit off", len(pod.InitContainers))
		}
		return
	}
	if len(pod.InitContainers) != 1 || pod.InitContainers[0].Name != initName {
		t.Fatalf("want exactly the init container %q, got %d", initName, len(pod.InitContainers))
	}
	ic := &pod.InitContainers[0]
	if ic.SecurityContext == nil || !isTrue(ic.SecurityContext.Privileged) {
		t.Error("the bpffs init container must be privileged (Bidirectional propagation)")
	}
	if ic.SecurityContext == nil || !isTrue(ic.SecurityContext.ReadOnlyRootFilesystem) {
		t.Error("the bpffs init container should have a read-only root filesystem")
	}
	if len(ic.VolumeMounts) != 1 {
		t.Fatalf("bpffs init container mounts %+v, want only bpffs", ic.VolumeMounts)
	}
	m := ic.VolumeMounts[0]
	v := volumeNamed(pod, m.Name)
	if v == nil || v.HostPath == nil || v.HostPath.Path != bpffsPath || m.MountPath != bpffsPath || m.ReadOnly {
		t.Errorf("bpffs init container mount %+v, want the host's %s, writable", m, bpffsPath)
	}
	if m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional {
		t.Error("the bpffs init container's mount must be Bidirectional: its bpffs must reach the host")
	}
	script := strings.Join(append(slices.Clone(ic.Command), ic.Args...), " ")
	for _, s := range []string{"stat -f -c %t " + bpffsPath, bpfFSMagic, "mount -n -t bpf -o mode=0700 bpf " + bpffsPath} {
		if !strings.Contains(script, s) {
			t.Errorf("bpffs init script lacks %q:\n%s", s, script)
		}
	}
	if strings.Contains(script, "mountpoint") {
		t.Error("mountpoint(1) is always true on a hostPath bind mount: check the filesystem type instead")
	}
	if lim := ic.Resources.Limits.Memory(); lim.IsZero() {
		t.Error("bpffs init container has no memory limit")
	}
}

// checkAgentSecurity: drop ALL and add back exactly the documented set.
func checkAgentSecurity(t *testing.T, c *corev1.Container, e expect) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("agent container has no securityContext capabilities")
	}
	if isTrue(sc.Privileged) != e.privileged {
		t.Errorf("privileged %v, want %v", isTrue(sc.Privileged), e.privileged)
	}
	if !e.privileged && (sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation) {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("runAsUser must be 0: without ambient capabilities only root holds the added ones")
	}
	if drop := capNames(sc.Capabilities.Drop); !slices.Equal(drop, []string{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", drop)
	}
	want := slices.Clone(wantCaps)
	if e.resolveExe || e.podNS {
		want = append(want, "SYS_PTRACE")
	}
	if e.privileged || e.podNS {
		want = append(want, "SYS_ADMIN")
	}
	add := capNames(sc.Capabilities.Add)
	if !slices.Equal(sortedCopy(add), sortedCopy(want)) {
		t.Errorf("capabilities.add %v, want exactly %v", add, want)
	}
	if !e.privileged && !e.podNS && slices.Contains(add, "SYS_ADMIN") {
		t.Error("SYS_ADMIN without privileged or podNetworkNamespaces")
	}
	if sp := sc.SeccompProfile; sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile %+v, want RuntimeDefault", sp)
	}
}

func checkResources(t *testing.T, c *corev1.Container) {
	t.Helper()
	req, lim := c.Resources.Requests, c.Resources.Limits
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := req[r]; !ok || q.IsZero() {
			t.Errorf("no %s request", r)
		}
	}
	l, ok := lim[corev1.ResourceMemory]
	if !ok || l.IsZero() {
		t.Fatal("no memory limit")
	}
	if r := req[corev1.ResourceMemory]; r.Cmp(l) > 0 {
		t.Errorf("memory request %v above limit %v", &r, &l)
	}
}

// checkHostMounts: only the listed host directories, each where and how the
// agent needs it.
func checkHostMounts(t *testing.T, pod *corev1.PodSpec, c *corev1.Container, e expect) {
	t.Helper()
	allowed := agentHostPaths(e.hostCgroupPath)
	for _, v := range pod.Volumes {
		if v.HostPath == nil {
			continue
		}
		want, ok := allowed[v.HostPath.Path]
		if !ok {
			t.Errorf("volume %s: hostPath %s is not one the agent needs", v.Name, v.HostPath.Path)
			continue
		}
		if v.HostPath.Type == nil || *v.HostPath.Type != want.typ {
			t.Errorf("hostPath %s type %v, want %s", v.HostPath.Path, v.HostPath.Type, want.typ)
		}
	}
	for hostPath, want := range allowed {
		m, v := mountAt(t, pod, c, want.mountPath)
		if m == nil || v.HostPath == nil || v.HostPath.Path != hostPath {
			t.Errorf("host %s is not mounted at %s (%s)", hostPath, want.mountPath, want.why)
			continue
		}
		if m.ReadOnly != want.readOnly {
			t.Errorf("mount %s: readOnly %v, want %v (%s)", want.mountPath, m.ReadOnly, want.readOnly, want.why)
		}
		wantProp := corev1.MountPropagationNone
		if hostPath == bpffsPath {
			// HostToContainer picks up a bpffs mounted on the host later;
			// Bidirectional (privileged only) lets the agent's own mount
			// reach the host.
			wantProp = corev1.MountPropagationHostToContainer
			if e.privileged {
				wantProp = corev1.MountPropagationBidirectional
			}
		}
		got := corev1.MountPropagationNone
		if m.MountPropagation != nil {
			got = *m.MountPropagation
		}
		if got != wantProp {
			t.Errorf("mount %s: propagation %s, want %s", want.mountPath, got, wantProp)
		}
	}
}

// checkConfigFits: the config's paths are on the right mounts.
func checkConfigFits(t *testing.T, pod *corev1.PodSpec, c *corev1.Container, cfg *config.Config, auditFile string, swap map[string]string) {
	t.Helper()
	if !under(cfg.Cgroup, cgroupMount) {
		t.Errorf("config cgroup %q, want the host cgroup mount %q or below (empty would be the container's own cgroup namespace root)", cfg.Cgroup, cgroupMount)
	}
	if cfg.Inbound != nil && !under(cfg.Inbound.Cgroup, cgroupMount) {
		t.Errorf("config inbound.cgroup %q, want %q or below", cfg.Inbound.Cgroup, cgroupMount)
	}
	if !under(cfg.BPF.PinPath, bpffsPath) || cfg.BPF.PinPath == bpffsPath {
		t.Errorf("bpf.pinPath %q is not a directory in the host bpffs mount %s", cfg.BPF.PinPath, bpffsPath)
	}
	writable := map[string]string{"api.socket": cfg.API.Socket, "recordings.dir": cfg.Recordings.Dir}
	if auditFile != config.AuditStdout {
		writable["audit.file"] = auditFile
	}
	for key, p := range writable {
		m := mountOf(c, p)
		if m == nil || m.ReadOnly {
			t.Errorf("%s %q is not on a writable volume (the root filesystem is read-only)", key, p)
			continue
		}
		if v := volumeNamed(pod, m.Name); v == nil || v.HostPath == nil {
			t.Errorf("%s %q: want a hostPath volume (kept on the node)", key, p)
		}
	}
	if cfg.Inbound != nil {
		for key, p := range map[string]string{"inbound.tls.certFile": cfg.Inbound.TLS.CertFile, "inbound.tls.keyFile": cfg.Inbound.TLS.KeyFile} {
			p = unswap(p, swap)
			m := mountOf(c, p)
			if m == nil || !m.ReadOnly {
				t.Errorf("%s %q is not on a read-only mount", key, p)
				continue
			}
			if v := volumeNamed(pod, m.Name); v == nil || v.Secret == nil {
				t.Errorf("%s %q: want a Secret volume", key, p)
			}
		}
	}
}

// unswap undoes parseConfig's swap on a path of the parsed config.
func unswap(p string, swap map[string]string) string {
	for from, to := range swap {
		if rest, ok := strings.CutPrefix(p, to); ok {
			return from + rest
		}
	}
	return p
}

// checkProbesAndPorts: startup and liveness on /healthz, readiness on
// /readyz, all on the metrics port at the address it listens on.
func checkProbesAndPorts(t *testing.T, c *corev1.Container, cfg *config.Config) {
	t.Helper()
	metricsPort, err := cfg.MetricsPort()
	if err != nil || metricsPort == 0 {
		t.Fatalf("metrics.listen %q must be enabled for the probes: %v", cfg.Metrics.Listen, err)
	}
	host, _, _ := net.SplitHostPort(cfg.Metrics.Listen)
	wantHost := host
	if host == "" || host == "0.0.0.0" || host == "::" {
		wantHost = "" // the pod IP, which is the node's
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", c.StartupProbe, "/healthz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe", p.name)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path {
			t.Errorf("%s path %q, want %q", p.name, g.Path, p.path)
		}
		if port := containerPort(t, c, g.Port); port != metricsPort {
			t.Errorf("%s port %v (%d), want the metrics port %d", p.name, g.Port.String(), port, metricsPort)
		}
		if g.Host != wantHost {
			t.Errorf("%s host %q: metrics listen on %s, the kubelet must probe %q", p.name, g.Host, cfg.Metrics.Listen, wantHost)
		}
		if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s scheme %q, want HTTP", p.name, g.Scheme)
		}
	}
	if s := c.StartupProbe; s != nil && s.PeriodSeconds*s.FailureThreshold < minStartupSecs {
		t.Errorf("startupProbe allows %ds, want at least %ds (the agent waits for the API server first)", s.PeriodSeconds*s.FailureThreshold, minStartupSecs)
	}

	names := map[string]bool{}
	for _, p := range c.Ports {
		if names[p.Name] {
			t.Errorf("container port name %q twice", p.Name)
		}
		names[p.Name] = true
	}
	if containerPortByName(c, "proxy") != cfg.Proxy.Port {
		t.Errorf("container port \"proxy\" is not proxy.port %d", cfg.Proxy.Port)
	}
	inbound := containerPortByName(c, "inbound")
	switch {
	case cfg.Inbound == nil && inbound != 0:
		t.Errorf("container port \"inbound\" %d without config.inbound", inbound)
	case cfg.Inbound != nil:
		_, p, _ := net.SplitHostPort(cfg.Inbound.Listen)
		if want, _ := strconv.Atoi(p); inbound != want {
			t.Errorf("container port \"inbound\" %d, want inbound.listen's %d", inbound, want)
		}
	}
}

func containerPortByName(c *corev1.Container, name string) int {
	for _, p := range c.Ports {
		if p.Name == name {
			return int(p.ContainerPort)
		}
	}
	return 0
}

func containerPort(t *testing.T, c *corev1.Container, port intstr.IntOrString) int {
	t.Helper()
	if port.Type == intstr.Int {
		return port.IntValue()
	}
	n := containerPortByName(c, port.StrVal)
	if n == 0 {
		t.Errorf("probe port %q names no container port", port.StrVal)
	}
	return n
}

// checkEnv: the node's name for workload identity (pkg/identity.InCluster
// reads NODE_NAME), and GOMEMLIMIT from the memory limit.
func checkEnv(t *testing.T, c *corev1.Container) {
	t.Helper()
	want := map[string]string{"NODE_NAME": "fieldRef spec.nodeName", "GOMEMLIMIT": "resourceFieldRef limits.memory"}
	for _, e := range c.Env {
		var got string
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			got = "fieldRef " + e.ValueFrom.FieldRef.FieldPath
		case e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil:
			got = "resourceFieldRef " + e.ValueFrom.ResourceFieldRef.Resource
		}
		if w, ok := want[e.Name]; ok {
			if got != w {
				t.Errorf("env %s is %+v, want valueFrom %s", e.Name, e, w)
			}
			delete(want, e.Name)
		}
	}
	for name := range want {
		t.Errorf("agent container sets no %s", name)
	}
}

// checkServiceMonitor: the Service and ServiceMonitor exist only when
// enabled, and point at the metrics port.
func checkServiceMonitor(t *testing.T, o objects, e expect, cfg *config.Config) {
	t.Helper()
	if !e.serviceMonitor {
		if o.svc != nil || o.sm != nil {
			t.Error("Service or ServiceMonitor rendered with serviceMonitor.enabled off")
		}
		return
	}
	if o.svc == nil || o.sm == nil {
		t.Fatal("serviceMonitor.enabled: no Service or ServiceMonitor")
	}
	metricsPort, _ := cfg.MetricsPort()
	s := o.svc.Spec
	if s.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("metrics Service clusterIP %q, want None (one endpoint per node)", s.ClusterIP)
	}
	if !reflect.DeepEqual(s.Selector, o.ds.Spec.Selector.MatchLabels) {
		t.Errorf("metrics Service selector %v, want the DaemonSet's %v", s.Selector, o.ds.Spec.Selector.MatchLabels)
	}
	if len(s.Ports) != 1 || s.Ports[0].Name != "metrics" || int(s.Ports[0].Port) != metricsPort || s.Ports[0].TargetPort != intstr.FromString("metrics") {
		t.Errorf("metrics Service ports %+v, want metrics %d -> metrics", s.Ports, metricsPort)
	}
	sm := o.sm.Spec
	svcSel, err := metav1.LabelSelectorAsSelector(&sm.Selector)
	if err != nil || svcSel.Empty() {
		t.Errorf("ServiceMonitor selector %+v: %v", sm.Selector, err)
	} else if !svcSel.Matches(labels.Set(o.svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select the metrics Service %v", svcSel, o.svc.Labels)
	}
	if !slices.Equal(sm.NamespaceSelector.MatchNames, []string{e.namespace}) {
		t.Errorf("ServiceMonitor namespaceSelector %v, want [%s]", sm.NamespaceSelector.MatchNames, e.namespace)
	}
	if len(sm.Endpoints) != 1 || sm.Endpoints[0].Port != "metrics" || sm.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v, want port metrics, path /metrics", sm.Endpoints)
	}
}

// The committed manifest (what `kubectl apply -f` installs) passes every
// check; TestRenderedManifest keeps it equal to the chart's rendering.
func TestManifest(t *testing.T) {
	checkRendering(t, decodeObjects(t, readFile(t, manifestPath)), defaults)
}

var capItem = regexp.MustCompile(`^\s*-\s*([A-Z_]+)\s*$`)

// addedCaps returns the "- NAME" items under capabilities' add:, each with
// the comment lines right above it (template actions skipped).
func addedCaps(text string) map[string][]string {
	caps := map[string][]string{}
	in := false
	var comment []string
	for line := range strings.SplitSeq(text, "\n") {
		l := strings.TrimSpace(line)
		if l == "add:" {
			in, comment = true, nil
			continue
		}
		if !in || strings.HasPrefix(l, "{{") {
			continue
		}
		if strings.HasPrefix(l, "#") {
			comment = append(comment, l)
			continue
		}
		m := capItem.FindStringSubmatch(line)
		if m == nil {
			in = false
			continue
		}
		caps[m[1]] = comment
		comment = nil
	}
	return caps
}

// Every added capability has its own comment saying why, in the template
// and therefore in the rendered manifest; the template can add nothing but
// the documented set and the two switched ones (SYS_ADMIN only with
// privileged or podNetworkNamespaces).
func TestCapabilityComments(t *testing.T) {
	for _, f := range []string{chartDir + "/templates/daemonset.yaml", manifestPath} {
		caps := addedCaps(string(readFile(t, f)))
		for c, comment := range caps {
			if len(comment) == 0 {
				t.Errorf("%s: capability %s has no comment of its own", f, c)
			}
		}
		var names []string
		for c := range caps {
			names = append(names, c)
		}
		want := wantCaps
		if f != manifestPath {
			want = append(slices.Clone(wantCaps), "SYS_PTRACE", "SYS_ADMIN")
		}
		if !slices.Equal(sortedCopy(names), sortedCopy(want)) {
			t.Errorf("%s adds capabilities %v, want %v", f, names, want)
		}
	}
	tmpl := string(readFile(t, chartDir+"/templates/daemonset.yaml"))
	for c, cond := range map[string]string{
		"SYS_PTRACE": "{{- if or .Values.podNetworkNamespaces .Values.resolveExecutables }}",
		"SYS_ADMIN":  "{{- if or .Values.podNetworkNamespaces .Values.privileged }}",
	} {
		i := strings.Index(tmpl, "- "+c+"\n")
		j := strings.LastIndex(tmpl[:max(i, 0)], cond)
		if i < 0 || j < 0 || strings.Contains(tmpl[j:i], "{{- end }}") {
			t.Errorf("templates/daemonset.yaml: %s is not added under %s only", c, cond)
		}
	}
}
