// Package deploy_test validates the deployment artifacts offline: the
// Kubernetes manifest, the Helm chart, the systemd unit and the Dockerfile.
// No cluster, helm binary, docker engine or network is needed.
package deploy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/intransit/intransit/pkg/config"
)

// Paths, relative to this package's directory.
const (
	manifestPath   = "kubernetes/intransit.yaml"
	chartDir       = "helm/intransit"
	unitPath       = "systemd/intransit.service"
	hostConfigPath = "systemd/intransit.yaml"
	dockerfilePath = "../Dockerfile"
	dockerignore   = "../.dockerignore"
	goModPath      = "../go.mod"
)

const (
	namespace      = "intransit-system"
	configKey      = "intransit.yaml"
	bpffsHostPath  = "/sys/fs/bpf"
	cgroupHostPath = "/sys/fs/cgroup"
)

// wantCaps is the documented capability set, without the CAP_ prefix. It must
// be the same in the DaemonSet, the Helm template and the systemd unit.
// CAP_DAC_OVERRIDE is deliberately absent: the agent runs as uid 0 and owns
// every path it writes.
var wantCaps = []string{"BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"}

// objects is the decoded manifest: one object of each kind.
type objects struct {
	ns      *corev1.Namespace
	sa      *corev1.ServiceAccount
	cm      *corev1.ConfigMap
	ds      *appsv1.DaemonSet
	role    *rbacv1.ClusterRole
	binding *rbacv1.ClusterRoleBinding
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitDocs splits a multi-document YAML stream, dropping documents that
// hold only comments and blank lines.
func splitDocs(data []byte) []string {
	var docs []string
	for _, d := range docSep.Split(string(data), -1) {
		for line := range strings.SplitSeq(d, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				docs = append(docs, d)
				break
			}
		}
	}
	return docs
}

// strict decodes one document into out, refusing unknown and duplicate
// fields, so a typo'd key fails the test instead of being dropped by the API
// server.
func strict(t *testing.T, doc string, out any) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(doc), out); err != nil {
		t.Fatalf("strict decode into %T: %v\n%s", out, err, doc)
	}
}

func loadManifest(t *testing.T) objects {
	t.Helper()
	var o objects
	seen := map[string]int{}
	for i, doc := range splitDocs(readFile(t, manifestPath)) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		gvk := tm.APIVersion + "/" + tm.Kind
		seen[tm.Kind]++
		switch gvk {
		case "v1/Namespace":
			o.ns = new(corev1.Namespace)
			strict(t, doc, o.ns)
		case "v1/ServiceAccount":
			o.sa = new(corev1.ServiceAccount)
			strict(t, doc, o.sa)
		case "v1/ConfigMap":
			o.cm = new(corev1.ConfigMap)
			strict(t, doc, o.cm)
		case "apps/v1/DaemonSet":
			o.ds = new(appsv1.DaemonSet)
			strict(t, doc, o.ds)
		case "rbac.authorization.k8s.io/v1/ClusterRole":
			o.role = new(rbacv1.ClusterRole)
			strict(t, doc, o.role)
		case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
			o.binding = new(rbacv1.ClusterRoleBinding)
			strict(t, doc, o.binding)
		default:
			t.Fatalf("document %d: unexpected %s (apiVersion %q, kind %q)", i, gvk, tm.APIVersion, tm.Kind)
		}
	}
	for _, kind := range []string{"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet", "ClusterRole", "ClusterRoleBinding"} {
		if seen[kind] != 1 {
			t.Fatalf("manifest has %d %s objects, want exactly 1", seen[kind], kind)
		}
	}
	return o
}

// parseConfig runs the agent's own loader on an intransit.yaml. Parse also
// checks that the audit file's directory exists, which on this machine it
// need not (it is a hostPath or systemd LogsDirectory on the node): that
// path is swapped for one in a temporary directory, and the original is
// returned for the callers to check against the mounts.
func parseConfig(t *testing.T, data []byte) (cfg *config.Config, auditFile string) {
	t.Helper()
	var peek config.Config
	if err := yaml.Unmarshal(data, &peek); err != nil {
		t.Fatalf("decode config: %v", err)
	}
	auditFile = peek.Audit.File
	if auditFile != "" && auditFile != config.AuditStdout {
		tmp := filepath.Join(t.TempDir(), filepath.Base(auditFile))
		data = []byte(strings.ReplaceAll(string(data), auditFile, tmp))
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatalf("config.Parse:\n%v\n--- config ---\n%s", err, data)
	}
	if auditFile == "" {
		auditFile = config.DefaultAuditFile
	}
	return cfg, auditFile
}

func under(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestManifestObjects(t *testing.T) {
	o := loadManifest(t)

	if o.ns.Name != namespace {
		t.Errorf("Namespace is %q, want %q", o.ns.Name, namespace)
	}
	if got := o.ns.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("Namespace pod-security enforce label is %q, want privileged (hostNetwork, hostPath and capabilities are not baseline)", got)
	}
	for _, m := range []metav1.ObjectMeta{o.sa.ObjectMeta, o.cm.ObjectMeta, o.ds.ObjectMeta} {
		if m.Namespace != namespace {
			t.Errorf("%s is in namespace %q, want %q", m.Name, m.Namespace, namespace)
		}
	}
	for _, m := range []metav1.ObjectMeta{o.ns.ObjectMeta, o.sa.ObjectMeta, o.cm.ObjectMeta, o.ds.ObjectMeta, o.role.ObjectMeta, o.binding.ObjectMeta} {
		if m.Labels["app.kubernetes.io/name"] != "intransit" {
			t.Errorf("%s has no app.kubernetes.io/name=intransit label", m.Name)
		}
	}
}

func TestManifestRBAC(t *testing.T) {
	o := loadManifest(t)

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
	want := map[grant]bool{}
	for _, res := range []string{"pods", "namespaces"} {
		for _, v := range []string{"get", "list", "watch"} {
			want[grant{"", res, v}] = true
		}
	}
	want[grant{"", "serviceaccounts/token", "create"}] = true
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

// volumeFor returns the pod volume mounted at mountPath and the mount.
func volumeFor(t *testing.T, pod *corev1.PodSpec, c *corev1.Container, mountPath string) (*corev1.Volume, *corev1.VolumeMount) {
	t.Helper()
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if m.MountPath != mountPath {
			continue
		}
		for j := range pod.Volumes {
			if pod.Volumes[j].Name == m.Name {
				return &pod.Volumes[j], m
			}
		}
		t.Fatalf("volumeMount %q names no volume", m.Name)
	}
	return nil, nil
}

// hostPathMount returns the mount of the hostPath volume for hostPath.
func hostPathMount(pod *corev1.PodSpec, c *corev1.Container, hostPath string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		for _, vol := range pod.Volumes {
			if vol.Name == c.VolumeMounts[i].Name && vol.HostPath != nil && vol.HostPath.Path == hostPath {
				return &c.VolumeMounts[i]
			}
		}
	}
	return nil
}

// mountOf returns the writable or read-only mount whose path contains p.
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

func TestManifestDaemonSet(t *testing.T) {
	o := loadManifest(t)
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
	if pod.HostPID || pod.HostIPC {
		t.Error("hostPID and hostIPC must be false")
	}
	if pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("dnsPolicy %q, want ClusterFirstWithHostNet", pod.DNSPolicy)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q, want system-node-critical", pod.PriorityClassName)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g != 30 {
		t.Errorf("terminationGracePeriodSeconds %v, want 30", g)
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

	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Fatalf("want exactly one container and no init containers, got %d and %d", len(pod.Containers), len(pod.InitContainers))
	}
	c := &pod.Containers[0]
	if c.Image == "" {
		t.Error("image is empty")
	}

	// Security context.
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("container has no securityContext")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged must not be true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("runAsUser must be 0: without ambient capabilities only root holds the added ones")
	}
	if sc.Capabilities == nil {
		t.Fatal("no capabilities section")
	}
	if drop := sc.Capabilities.Drop; len(drop) != 1 || drop[0] != "ALL" {
		t.Errorf("capabilities.drop %v, want [ALL]", drop)
	}
	var add []string
	for _, c := range sc.Capabilities.Add {
		add = append(add, string(c))
	}
	if !slices.Equal(sortedCopy(add), sortedCopy(wantCaps)) {
		t.Errorf("capabilities.add %v, want exactly %v", add, wantCaps)
	}
	if sp := sc.SeccompProfile; sp != nil && sp.Type == corev1.SeccompProfileTypeLocalhost && (sp.LocalhostProfile == nil || *sp.LocalhostProfile == "") {
		t.Error("seccompProfile Localhost without localhostProfile")
	}

	// Resources.
	lim, req := c.Resources.Limits, c.Resources.Requests
	if q, ok := lim[corev1.ResourceMemory]; !ok || q.IsZero() {
		t.Error("no memory limit")
	}
	if q, ok := req[corev1.ResourceCPU]; !ok || q.Cmp(resource.MustParse("100m")) != 0 {
		t.Errorf("cpu request %v, want 100m", req.Cpu())
	}
	if q, ok := req[corev1.ResourceMemory]; !ok || q.Cmp(resource.MustParse("64Mi")) != 0 {
		t.Errorf("memory request %v, want 64Mi", req.Memory())
	}
	if r, l := req[corev1.ResourceMemory], lim[corev1.ResourceMemory]; r.Cmp(l) > 0 {
		t.Errorf("memory request %v above limit %v", &r, &l)
	}

	// Host mounts.
	v, m := volumeFor(t, pod, c, bpffsHostPath)
	if v == nil || v.HostPath == nil || v.HostPath.Path != bpffsHostPath {
		t.Errorf("no hostPath %s mounted at %s", bpffsHostPath, bpffsHostPath)
	} else {
		if v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectory {
			t.Errorf("bpffs hostPath type %v, want Directory (it must already be a mounted bpffs)", v.HostPath.Type)
		}
		if m.ReadOnly {
			t.Error("the bpffs mount must be writable: the agent pins into it")
		}
		if p := m.MountPropagation; p != nil && *p == corev1.MountPropagationBidirectional {
			t.Error("Bidirectional propagation is only allowed for privileged containers")
		}
	}
	cgroupMount := hostPathMount(pod, c, cgroupHostPath)
	if cgroupMount == nil {
		t.Fatalf("hostPath %s is not mounted", cgroupHostPath)
	}
	if !cgroupMount.ReadOnly {
		t.Error("the host cgroup mount should be read-only: attaching needs only a directory fd")
	}
	if cgroupMount.MountPath == cgroupHostPath {
		t.Errorf("mounting the host cgroup2 at %s hides the container's own view; mount it elsewhere", cgroupHostPath)
	}

	// The container must be started as the agent with the ConfigMap's file.
	i := slices.Index(c.Args, "--config")
	if len(c.Command) != 0 || len(c.Args) < 3 || c.Args[0] != "agent" || i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("command %q args %q, want the image entrypoint with agent --config FILE", c.Command, c.Args)
	}
	cfgFile := c.Args[i+1]
	cv, _ := volumeFor(t, pod, c, path.Dir(cfgFile))
	if cv == nil || cv.ConfigMap == nil || cv.ConfigMap.Name != o.cm.Name {
		t.Fatalf("%s is not from ConfigMap %q", path.Dir(cfgFile), o.cm.Name)
	}
	if path.Base(cfgFile) != configKey {
		t.Errorf("--config %s: want the %s key of the ConfigMap", cfgFile, configKey)
	}

	// The config must fit the pod: paths on the right mounts, probes on the
	// metrics port.
	cfg, auditFile := parseConfig(t, []byte(o.cm.Data[configKey]))
	if cfg.Cgroup != cgroupMount.MountPath {
		t.Errorf("config cgroup %q, want the host cgroup mount %q (empty would be the container's own cgroup namespace root)", cfg.Cgroup, cgroupMount.MountPath)
	}
	if !under(cfg.BPF.PinPath, bpffsHostPath) || cfg.BPF.PinPath == bpffsHostPath {
		t.Errorf("bpf.pinPath %q is not a directory in the host bpffs mount %s", cfg.BPF.PinPath, bpffsHostPath)
	}
	for key, p := range map[string]string{"audit.file": auditFile, "api.socket": cfg.API.Socket} {
		if p == config.AuditStdout {
			continue
		}
		mt := mountOf(c, p)
		if mt == nil || mt.ReadOnly {
			t.Errorf("%s %q is not on a writable volume (the root filesystem is read-only)", key, p)
			continue
		}
		vol, _ := volumeFor(t, pod, c, mt.MountPath)
		if vol.HostPath == nil {
			t.Errorf("%s %q: want a hostPath volume (visible from the node), got %+v", key, p, vol.VolumeSource)
		}
	}

	metricsPort, err := cfg.MetricsPort()
	if err != nil || metricsPort == 0 {
		t.Fatalf("metrics.listen %q must be enabled for the probes: %v", cfg.Metrics.Listen, err)
	}
	metricsHost, _, _ := net.SplitHostPort(cfg.Metrics.Listen)
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
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
		if ip := net.ParseIP(metricsHost); ip != nil && ip.IsLoopback() && g.Host != metricsHost {
			t.Errorf("%s host %q: metrics listen on %s, the kubelet must probe %s", p.name, g.Host, cfg.Metrics.Listen, metricsHost)
		}
		if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s scheme %q, want HTTP", p.name, g.Scheme)
		}
	}
	if containerPortByName(c, "proxy") != cfg.Proxy.Port {
		t.Errorf("container port \"proxy\" is not proxy.port %d", cfg.Proxy.Port)
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

// The agent learns its node's name from the downward API: workload identity
// watches only that node's pods (pkg/identity.InCluster reads NODE_NAME).
func TestNodeNameEnv(t *testing.T) {
	c := loadManifest(t).ds.Spec.Template.Spec.Containers[0]
	var found bool
	for _, e := range c.Env {
		if e.Name != "NODE_NAME" {
			continue
		}
		found = true
		if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
			t.Errorf("NODE_NAME is %+v, want valueFrom fieldRef spec.nodeName", e)
		}
	}
	if !found {
		t.Error("DaemonSet container sets no NODE_NAME")
	}
	ds := string(readFile(t, filepath.Join(chartDir, "templates", "daemonset.yaml")))
	if !strings.Contains(ds, "- name: NODE_NAME\n              valueFrom:\n                fieldRef:\n                  fieldPath: spec.nodeName\n") {
		t.Error("templates/daemonset.yaml does not set NODE_NAME from fieldRef spec.nodeName")
	}
}

func TestManifestConfig(t *testing.T) {
	o := loadManifest(t)
	data, ok := o.cm.Data[configKey]
	if !ok || len(o.cm.Data) != 1 || len(o.cm.BinaryData) != 0 {
		t.Fatalf("ConfigMap %s: want exactly the key %s", o.cm.Name, configKey)
	}
	cfg, _ := parseConfig(t, []byte(data))
	audit := false
	for _, r := range cfg.Rules {
		if r.Mode == config.ModeAudit {
			audit = true
		}
	}
	if !audit {
		t.Error("the sample config should have a rule in audit mode")
	}
	if cfg.BPF.PinPath != config.DefaultPinPath {
		t.Errorf("bpf.pinPath %q, want %q", cfg.BPF.PinPath, config.DefaultPinPath)
	}
}

// unit is a parsed systemd unit: section -> key -> values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, data []byte) unit {
	t.Helper()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			if strings.HasSuffix(line, `\`) {
				t.Fatalf("line %d: continuation lines are not supported by this check", n)
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("line %d: %q is not key=value in a section", n, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	return u
}

// one returns the single value of key, failing if it is absent or repeated.
func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Errorf("[%s] %s: %d values %q, want exactly one", section, key, len(v), v)
		return ""
	}
	return v[0]
}

func TestSystemdUnit(t *testing.T) {
	u := parseUnit(t, readFile(t, unitPath))
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			t.Fatalf("no [%s] section", s)
		}
	}
	want := map[string]string{
		"Type":             "exec",
		"ExecStart":        "/usr/local/bin/intransit agent --config /etc/intransit/intransit.yaml",
		"ExecReload":       "/bin/kill -HUP $MAINPID",
		"Restart":          "always",
		"RestartSec":       "1",
		"NoNewPrivileges":  "yes",
		"ProtectSystem":    "strict",
		"ProtectHome":      "yes",
		"PrivateTmp":       "yes",
		"RuntimeDirectory": "intransit",
		"LogsDirectory":    "intransit",
		"LimitNOFILE":      "1048576",
		"LimitMEMLOCK":     "infinity",
	}
	for k, v := range want {
		if got := u.one(t, "Service", k); got != v {
			t.Errorf("[Service] %s=%q, want %q", k, got, v)
		}
	}
	if got := u.one(t, "Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("WantedBy=%q", got)
	}

	// Fail closed: nothing may uninstall the datapath when the service stops.
	for _, k := range []string{"ExecStop", "ExecStopPost"} {
		for _, v := range u["Service"][k] {
			if strings.Contains(v, "uninstall") {
				t.Errorf("%s=%s: stopping the service must not uninstall (fail closed)", k, v)
			}
		}
	}

	var wantSet []string
	for _, c := range wantCaps {
		wantSet = append(wantSet, "CAP_"+c)
	}
	for _, k := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		got := strings.Fields(u.one(t, "Service", k))
		if !slices.Equal(sortedCopy(got), sortedCopy(wantSet)) {
			t.Errorf("%s=%v, want the DaemonSet's set %v", k, got, wantSet)
		}
	}

	var rw []string
	for _, v := range u["Service"]["ReadWritePaths"] {
		rw = append(rw, strings.Fields(v)...)
	}
	for _, p := range []string{"/sys/fs/bpf", "/var/log/intransit", "/run/intransit"} {
		if !slices.Contains(rw, p) {
			t.Errorf("ReadWritePaths %v lacks %s", rw, p)
		}
	}

	// The example host config parses, and what it writes is writable.
	cfg, auditFile := parseConfig(t, readFile(t, hostConfigPath))
	writable := func(p string) bool {
		for _, d := range rw {
			if under(p, d) {
				return true
			}
		}
		return false
	}
	if !writable(cfg.BPF.PinPath) {
		t.Errorf("bpf.pinPath %q is not under ReadWritePaths %v", cfg.BPF.PinPath, rw)
	}
	if auditFile != config.AuditStdout && !writable(auditFile) {
		t.Errorf("audit.file %q is not under ReadWritePaths %v", auditFile, rw)
	}
	if !writable(cfg.API.Socket) {
		t.Errorf("api.socket %q is not under ReadWritePaths %v", cfg.API.Socket, rw)
	}
	if cfg.Cgroup != "" {
		t.Errorf("host example cgroup %q: leave it empty for the whole host", cfg.Cgroup)
	}
}

var valuesRef = regexp.MustCompile(`\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)`)

func TestHelmChart(t *testing.T) {
	var chart struct {
		APIVersion  string   `json:"apiVersion"`
		Name        string   `json:"name"`
		Description string   `json:"description"`
		Type        string   `json:"type"`
		Version     string   `json:"version"`
		AppVersion  string   `json:"appVersion"`
		Home        string   `json:"home"`
		Sources     []string `json:"sources"`
		Keywords    []string `json:"keywords"`
	}
	strict(t, string(readFile(t, filepath.Join(chartDir, "Chart.yaml"))), &chart)
	if chart.APIVersion != "v2" || chart.Name != "intransit" || chart.Version == "" || chart.AppVersion == "" {
		t.Errorf("Chart.yaml: apiVersion %q name %q version %q appVersion %q", chart.APIVersion, chart.Name, chart.Version, chart.AppVersion)
	}
	if chart.Type != "" && chart.Type != "application" {
		t.Errorf("Chart.yaml type %q", chart.Type)
	}

	valuesYAML := readFile(t, filepath.Join(chartDir, "values.yaml"))
	var values map[string]any
	if err := yaml.UnmarshalStrict(valuesYAML, &values); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}

	// Every .Values.a.b reference in the templates names a key in values.yaml.
	tmpls, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil || len(tmpls) == 0 {
		t.Fatalf("no templates: %v", err)
	}
	names := map[string]bool{}
	for _, f := range tmpls {
		names[filepath.Base(f)] = true
		text := string(readFile(t, f))
		if strings.Count(text, "{{") != strings.Count(text, "}}") {
			t.Errorf("%s: unbalanced {{ }}", f)
		}
		for _, m := range valuesRef.FindAllStringSubmatch(text, -1) {
			if err := lookupValue(values, strings.Split(m[1][1:], ".")); err != nil {
				t.Errorf("%s: %s: %v", filepath.Base(f), m[0], err)
			}
		}
	}
	parseTemplates(t, tmpls)
	for _, n := range []string{"_helpers.tpl", "NOTES.txt", "daemonset.yaml", "configmap.yaml", "serviceaccount.yaml", "rbac.yaml"} {
		if !names[n] {
			t.Errorf("templates/%s is missing", n)
		}
	}

	// values.config is a valid agent config, identical to the manifest's.
	cfgYAML, err := yaml.Marshal(values["config"])
	if err != nil {
		t.Fatal(err)
	}
	parseConfig(t, cfgYAML)
	o := loadManifest(t)
	if a, b := canonical(t, cfgYAML), canonical(t, []byte(o.cm.Data[configKey])); a != b {
		t.Errorf("values.yaml config differs from the manifest's ConfigMap:\nchart:    %s\nmanifest: %s", a, b)
	}

	// The defaults match the manifest's DaemonSet.
	pod := o.ds.Spec.Template.Spec
	c := pod.Containers[0]
	if values["priorityClassName"] != pod.PriorityClassName {
		t.Errorf("values priorityClassName %v, manifest %q", values["priorityClassName"], pod.PriorityClassName)
	}
	if values["hostCgroupPath"] != cgroupHostPath {
		t.Errorf("values hostCgroupPath %v, want %s", values["hostCgroupPath"], cgroupHostPath)
	}
	var vals struct {
		Image struct {
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
		} `json:"image"`
		Tolerations    []corev1.Toleration            `json:"tolerations"`
		NodeSelector   map[string]string              `json:"nodeSelector"`
		Resources      corev1.ResourceRequirements    `json:"resources"`
		UpdateStrategy appsv1.DaemonSetUpdateStrategy `json:"updateStrategy"`
		SeccompProfile *corev1.SeccompProfile         `json:"seccompProfile"`
	}
	if err := yaml.Unmarshal(valuesYAML, &vals); err != nil {
		t.Fatal(err)
	}
	if vals.Image.Repository+":"+vals.Image.Tag != c.Image {
		t.Errorf("values image %s:%s, manifest %s", vals.Image.Repository, vals.Image.Tag, c.Image)
	}
	for name, pair := range map[string][2]any{
		"tolerations":    {vals.Tolerations, pod.Tolerations},
		"nodeSelector":   {vals.NodeSelector, pod.NodeSelector},
		"resources":      {vals.Resources, c.Resources},
		"updateStrategy": {vals.UpdateStrategy, o.ds.Spec.UpdateStrategy},
		"seccompProfile": {vals.SeccompProfile, c.SecurityContext.SeccompProfile},
	} {
		if a, b := jsonString(t, pair[0]), jsonString(t, pair[1]); a != b {
			t.Errorf("values %s %s, manifest %s", name, a, b)
		}
	}

	// helm is not available here: check the security-relevant literal text
	// of the DaemonSet template instead of rendering it.
	ds := string(readFile(t, filepath.Join(chartDir, "templates", "daemonset.yaml")))
	for _, s := range []string{
		"kind: DaemonSet",
		"hostNetwork: true",
		"hostPID: false",
		"dnsPolicy: ClusterFirstWithHostNet",
		"privileged: false",
		"allowPrivilegeEscalation: false",
		"readOnlyRootFilesystem: true",
		"runAsUser: 0",
		`drop: ["ALL"]`,
		"path: /healthz",
		"path: /readyz",
		"host: 127.0.0.1",
		"mountPath: /sys/fs/bpf",
		"mountPath: " + hostPathMount(&pod, &c, cgroupHostPath).MountPath,
		"path: /sys/fs/bpf",
		"path: /var/log/intransit",
		"path: /run/intransit",
		`args: ["agent", "--config", "/etc/intransit/intransit.yaml"]`,
	} {
		if !strings.Contains(ds, s) {
			t.Errorf("templates/daemonset.yaml lacks %q", s)
		}
	}
	if got := templateCaps(ds); !slices.Equal(sortedCopy(got), sortedCopy(wantCaps)) {
		t.Errorf("templates/daemonset.yaml adds capabilities %v, want %v", got, wantCaps)
	}
}

// helmFuncs names the Helm and Sprig functions the templates may use. Only
// the names matter: the templates are parsed, not executed, which catches
// unbalanced actions, a missing {{ end }} and misspelt functions.
var helmFuncs = strings.Fields(`
	include tpl required lookup toYaml fromYaml toJson fromJson toString
	nindent indent default empty coalesce ternary quote squote dig hasKey
	get set dict list keys values first last has trunc trimSuffix trimPrefix
	trim upper lower title replace contains hasPrefix hasSuffix regexFind
	regexMatch regexReplaceAll split splitList join sha256sum b64enc int
	int64 float64 semverCompare toStrings uniq sortAlpha merge mergeOverwrite
	deepCopy fail kindIs typeOf`)

func parseTemplates(t *testing.T, files []string) {
	t.Helper()
	funcs := template.FuncMap{}
	for _, f := range helmFuncs {
		funcs[f] = func(...any) any { return nil }
	}
	root := template.New("chart").Funcs(funcs)
	for _, f := range files {
		if _, err := root.New(filepath.Base(f)).Parse(string(readFile(t, f))); err != nil {
			t.Errorf("parse %s: %v", f, err)
		}
	}
	// Every include/template names a defined template.
	defined := map[string]bool{}
	for _, tm := range root.Templates() {
		defined[tm.Name()] = true
	}
	ref := regexp.MustCompile(`(?:include|template) "([^"]+)"`)
	for _, f := range files {
		for _, m := range ref.FindAllStringSubmatch(string(readFile(t, f)), -1) {
			if !defined[m[1]] {
				t.Errorf("%s: %s names no defined template", filepath.Base(f), m[0])
			}
		}
	}
}

// lookupValue walks values along keys.
func lookupValue(values map[string]any, keys []string) error {
	var cur any = values
	for i, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return fmt.Errorf("%s is not a mapping in values.yaml", strings.Join(keys[:i], "."))
		}
		if cur, ok = m[k]; !ok {
			return fmt.Errorf("%s is not in values.yaml", strings.Join(keys[:i+1], "."))
		}
	}
	return nil
}

// canonical is the JSON form of a YAML document, with sorted keys.
func canonical(t *testing.T, y []byte) string {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(y, &v); err != nil {
		t.Fatal(err)
	}
	return jsonString(t, v)
}

func jsonString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var capItem = regexp.MustCompile(`^\s*-\s*([A-Z_]+)\s*(#.*)?$`)

// templateCaps returns the "- NAME" items under capabilities.add.
func templateCaps(text string) []string {
	var caps []string
	in := false
	for line := range strings.SplitSeq(text, "\n") {
		if strings.TrimSpace(line) == "add:" {
			in = true
			continue
		}
		if !in {
			continue
		}
		m := capItem.FindStringSubmatch(line)
		if m == nil {
			break
		}
		caps = append(caps, m[1])
	}
	return caps
}

// dockerStage is one FROM ... stage of the Dockerfile.
type dockerStage struct {
	from         string // image, and "AS name" if any
	instructions [][2]string
}

func parseDockerfile(t *testing.T, data []byte) []dockerStage {
	t.Helper()
	var stages []dockerStage
	var logical []string
	cur := ""
	for line := range strings.SplitSeq(string(data), "\n") {
		trim := strings.TrimSpace(line)
		if cur == "" && (trim == "" || strings.HasPrefix(trim, "#")) {
			continue
		}
		if strings.HasPrefix(trim, "#") {
			continue // comment inside a continued instruction
		}
		if strings.HasSuffix(trim, `\`) {
			cur += strings.TrimSuffix(trim, `\`) + " "
			continue
		}
		logical = append(logical, cur+trim)
		cur = ""
	}
	if cur != "" {
		t.Fatal("Dockerfile ends in a line continuation")
	}
	for _, l := range logical {
		op, args, _ := strings.Cut(l, " ")
		op = strings.ToUpper(op)
		args = strings.TrimSpace(args)
		if op == "FROM" {
			stages = append(stages, dockerStage{from: args})
			continue
		}
		if len(stages) == 0 {
			if op != "ARG" {
				t.Fatalf("%s before the first FROM", op)
			}
			continue
		}
		s := &stages[len(stages)-1]
		s.instructions = append(s.instructions, [2]string{op, args})
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, readFile(t, dockerfilePath))
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stages", len(stages))
	}

	build, final := stages[0], stages[len(stages)-1]
	fields := strings.Fields(build.from)
	image := ""
	for _, f := range fields {
		if !strings.HasPrefix(f, "--") {
			image = f
			break
		}
	}
	if !strings.HasPrefix(image, "golang:") || !strings.Contains(strings.ToLower(build.from), " as build") {
		t.Errorf("first stage FROM %q, want golang:... AS build", build.from)
	}
	// The builder's Go must be the go.mod toolchain line.
	goVersion := ""
	for line := range strings.SplitSeq(string(readFile(t, goModPath)), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go "); ok {
			goVersion = strings.TrimSpace(v)
		}
	}
	parts := strings.SplitN(goVersion, ".", 3)
	if len(parts) < 2 || !strings.HasPrefix(image, "golang:"+parts[0]+"."+parts[1]) {
		t.Errorf("build image %q does not match go.mod's go %s", image, goVersion)
	}

	var buildRun string
	for _, s := range stages {
		for _, in := range s.instructions {
			if in[0] != "RUN" {
				continue
			}
			low := strings.ToLower(in[1])
			for _, banned := range []string{"clang", "llvm", "bpf2go", "go generate"} {
				if strings.Contains(low, banned) {
					t.Errorf("RUN %s: the BPF objects are committed, the image must not need %s", in[1], banned)
				}
			}
			if strings.Contains(in[1], "go build") {
				buildRun = in[1]
			}
		}
	}
	for _, s := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/intransit", "github.com/intransit/intransit/pkg/version.Version="} {
		if !strings.Contains(buildRun, s) {
			t.Errorf("go build step %q lacks %s", buildRun, s)
		}
	}

	if strings.Contains(strings.ToLower(final.from), "golang") {
		t.Errorf("final stage FROM %q: must not ship the Go toolchain", final.from)
	}
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %q, want a distroless static image", final.from)
	}
	var entrypoint, cmd string
	copied := false
	for _, in := range final.instructions {
		switch in[0] {
		case "ENTRYPOINT":
			entrypoint = in[1]
		case "CMD":
			cmd = in[1]
		case "COPY":
			copied = copied || strings.Contains(in[1], "--from=build")
		case "RUN":
			t.Errorf("final stage RUN %q: distroless has no shell", in[1])
		case "USER":
			t.Errorf("final stage USER %s: the agent must run as root to hold its capabilities", in[1])
		}
	}
	var ep, args []string
	if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || len(ep) != 1 || ep[0] != "/intransit" {
		t.Errorf("final ENTRYPOINT %q, want [\"/intransit\"] in exec form (%v)", entrypoint, err)
	}
	if err := json.Unmarshal([]byte(cmd), &args); err != nil ||
		!slices.Equal(args, []string{"agent", "--config", "/etc/intransit/intransit.yaml"}) {
		t.Errorf("final CMD %q, want agent --config /etc/intransit/intransit.yaml in exec form", cmd)
	}
	if !copied {
		t.Error("final stage does not COPY --from=build")
	}

	// .dockerignore must not drop what the build needs.
	var patterns []string
	for line := range strings.SplitSeq(string(readFile(t, dockerignore)), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimSuffix(l, "/"))
		}
	}
	for _, p := range []string{".git", "bin"} {
		if !slices.Contains(patterns, p) {
			t.Errorf(".dockerignore does not exclude %s", p)
		}
	}
	needed := []string{"go.mod", "go.sum", "cmd/intransit", "pkg/bpfobj"}
	if objs, _ := filepath.Glob("../pkg/bpfobj/*.o"); len(objs) > 0 {
		needed = append(needed, "pkg/bpfobj/"+filepath.Base(objs[0]))
	}
	for _, n := range needed {
		for _, p := range patterns {
			if ignores(p, n) {
				t.Errorf(".dockerignore pattern %q excludes %s, which the build needs", p, n)
			}
		}
	}
}

// ignores approximates .dockerignore matching: a pattern matches a path or
// one of its parents; a leading **/ matches at any depth.
func ignores(pattern, name string) bool {
	if strings.HasPrefix(pattern, "!") {
		return false
	}
	elems := strings.Split(name, "/")
	for i := 1; i <= len(elems); i++ {
		prefix := strings.Join(elems[:i], "/")
		if ok, _ := path.Match(pattern, prefix); ok {
			return true
		}
		if rest, found := strings.CutPrefix(pattern, "**/"); found {
			if ok, _ := path.Match(rest, elems[i-1]); ok {
				return true
			}
		}
	}
	return false
}
