package deploy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
)

var update = flag.Bool("update", false, "rewrite "+manifestPath+" from the chart")

// The release the committed manifest is rendered as.
const (
	releaseName      = "intransit"
	releaseNamespace = "intransit-system"
	manifestValues   = "namespace: {create: true}"
)

// manifestHeader precedes the rendering in the committed manifest.
const manifestHeader = `# intransit: node agent that upgrades plaintext TCP connects to TLS.
#
#   kubectl apply -f deploy/kubernetes/intransit.yaml
#
# Generated, do not edit. Below this header is exactly
#   helm template ` + releaseName + ` deploy/helm/intransit --namespace ` + releaseNamespace + ` \
#     --set namespace.create=true
# and deploy/deploy_test.go fails when the two differ: change the chart, then
#   go test ./deploy/ -run TestRenderedManifest -update
# Installing, values, audit to enforce, uninstalling: docs/kubernetes.md.
#
# Fail closed: programs, links and maps are pinned in the host's bpffs and
# outlive the pod. While no agent runs (restart, rollout, crash), enforced
# connects are refused instead of leaving the node in plaintext. Deleting
# these objects does not remove intransit from the nodes: see
# docs/kubernetes.md, "Uninstalling", first.
`

// rendering is one `helm template` of the chart.
type rendering struct {
	manifest string // the manifests, as helm template prints them
	notes    string // templates/NOTES.txt
}

// render is `helm template NAME deploy/helm/intransit --namespace NAMESPACE
// -f values.yaml` with valuesYAML as values.yaml: the steps of helm's
// action.Install in client-only mode (its renderResources), without the
// cluster client and release storage that package needs.
func render(name, namespace, valuesYAML string) (rendering, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return rendering{}, err
	}
	vals, err := chartutil.ReadValues([]byte(valuesYAML))
	if err != nil {
		return rendering{}, err
	}
	if err := chartutil.ProcessDependenciesWithMerge(ch, vals); err != nil {
		return rendering{}, err
	}
	caps := chartutil.DefaultCapabilities.Copy()
	opts := chartutil.ReleaseOptions{Name: name, Namespace: namespace, Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValuesWithSchemaValidation(ch, vals, opts, caps, false)
	if err != nil {
		return rendering{}, err
	}
	var e engine.Engine
	files, err := e.Render(ch, top)
	if err != nil {
		return rendering{}, err
	}
	var r rendering
	for k, v := range files {
		if strings.HasSuffix(k, "/NOTES.txt") {
			r.notes = v
			delete(files, k)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return rendering{}, err
	}
	if len(hooks) > 0 {
		return rendering{}, fmt.Errorf("the chart has %d hooks: helm template would print them too", len(hooks))
	}
	var b strings.Builder
	for _, m := range manifests {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Name, m.Content)
	}
	r.manifest = strings.TrimSpace(b.String()) + "\n"
	return r, nil
}

func mustRender(t *testing.T, name, namespace, valuesYAML string) rendering {
	t.Helper()
	r, err := render(name, namespace, valuesYAML)
	if err != nil {
		t.Fatalf("render with values\n%s\n: %v", valuesYAML, err)
	}
	return r
}

// The committed manifest is the chart's rendering: the two cannot drift.
func TestRenderedManifest(t *testing.T) {
	want := manifestHeader + mustRender(t, releaseName, releaseNamespace, manifestValues).manifest
	if *update {
		if err := os.WriteFile(manifestPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := string(readFile(t, manifestPath))
	if got == want {
		return
	}
	// Say which object differs before saying where the text does.
	a, b := decodeObjects(t, []byte(got)), decodeObjects(t, []byte(want))
	var ka, kb []string
	for _, k := range a.all {
		ka = append(ka, k.key)
	}
	for _, k := range b.all {
		kb = append(kb, k.key)
	}
	if !reflect.DeepEqual(ka, kb) {
		t.Errorf("%s has objects %v, the chart renders %v", manifestPath, ka, kb)
	} else {
		for i := range a.all {
			if ja, jb := jsonString(t, a.all[i].obj), jsonString(t, b.all[i].obj); ja != jb {
				t.Errorf("%s differs from the chart's rendering:\nfile:  %s\nchart: %s", a.all[i].key, ja, jb)
			}
		}
	}
	gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < max(len(gl), len(wl)); i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Errorf("%s line %d is %q, the chart renders %q", manifestPath, i+1, g, w)
			break
		}
	}
	t.Error("run: go test ./deploy/ -run TestRenderedManifest -update")
}

// The chart's own defaults (no Namespace object: helm install
// --create-namespace) pass every check.
func TestChartDefaults(t *testing.T) {
	r := mustRender(t, releaseName, releaseNamespace, "")
	e := defaults
	e.createNS = false
	o := decodeObjects(t, []byte(r.manifest))
	checkRendering(t, o, e)
	for _, s := range []string{"pod-security.kubernetes.io/enforce=privileged", "/intransit uninstall", "audit tail -f"} {
		if !strings.Contains(r.notes, s) {
			t.Errorf("NOTES.txt lacks %q:\n%s", s, r.notes)
		}
	}
	if strings.Contains(r.notes, "WARNING") {
		t.Errorf("NOTES.txt warns with the defaults:\n%s", r.notes)
	}
	// An enforce rule for every workload, pods included, without a way to
	// reach pods: rendered (host processes are covered), with a warning.
	r = mustRender(t, releaseName, releaseNamespace, "config: {rules: [{name: all, ports: [8080], mode: enforce, upstream: {tls: {port: 8443}}}]}")
	if !strings.Contains(r.notes, "WARNING: rule all enforces") {
		t.Errorf("NOTES.txt does not warn about rule all:\n%s", r.notes)
	}
}

// selfSigned writes a self-signed certificate and its key into dir as the
// given names, for config.Parse to find.
func selfSigned(t *testing.T, dir, certName, keyName string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "intransit-test"},
		DNSNames:              []string{"intransit-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, certName), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if keyName != "" {
		if err := os.WriteFile(filepath.Join(dir, keyName), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// everything turns on every switch and sets most values.
const everything = `
privileged: true
podNetworkNamespaces: true
resolveExecutables: true
image: {repository: registry.example/intransit, tag: v9.9.9, pullPolicy: Always}
resources:
  requests: {cpu: 250m, memory: 128Mi}
  limits: {cpu: "2", memory: 1Gi}
terminationGracePeriodSeconds: 45
bpffsInit: {enabled: false}
serviceMonitor: {enabled: true, interval: 15s, labels: {release: prom}}
inbound: {tlsSecretName: intransit-inbound-tls}
podAnnotations: {example.com/team: security}
tolerations: [{operator: Exists}, {key: dedicated, operator: Equal, value: edge, effect: NoSchedule}]
extraVolumes:
  - name: upstream-ca
    secret: {secretName: upstream-ca}
extraVolumeMounts:
  - name: upstream-ca
    mountPath: /etc/intransit-secrets/upstream-ca
    readOnly: true
config:
  metrics: {listen: "0.0.0.0:9464", workloadLabels: true}
  identity:
    pods: auto
    token: {kubernetes: {}}
  inbound:
    listen: "0.0.0.0:15443"
    cgroup: /host/sys/fs/cgroup/kubepods.slice
    tls:
      certFile: /etc/intransit-secrets/inbound-tls/tls.crt
      keyFile: /etc/intransit-secrets/inbound-tls/tls.key
    oidc: {issuer: "https://issuer.example"}
    services:
      - name: executor
        port: 9090
        forward: "127.0.0.1:9090"
        allow: [{sub: "system:serviceaccount:agents:planner"}]
  rules:
    - name: payments-http
      ports: [8080]
      mode: enforce
      upstream: {tls: {port: 8443, caFile: /etc/intransit-secrets/upstream-ca/ca.crt}}
      workloads: [{namespace: payments}]
      record: metadata
    - name: http-to-https
      ports: [80]
      mode: audit
`

// Non-default values change what they should and nothing that must not.
func TestChartValues(t *testing.T) {
	tlsDir, caDir := t.TempDir(), t.TempDir()
	selfSigned(t, tlsDir, "tls.crt", "tls.key")
	selfSigned(t, caDir, "ca.crt", "")
	base := decodeObjects(t, []byte(mustRender(t, releaseName, releaseNamespace, "").manifest))

	for _, tc := range []struct {
		name, release, namespace, values string
		expect                           func(e *expect)
		more                             func(t *testing.T, o objects)
	}{{
		name: "everything", release: "edge", namespace: "security", values: everything,
		expect: func(e *expect) {
			e.namespace, e.fullname = "security", "edge-intransit"
			e.privileged, e.podNS, e.resolveExe, e.bpffsInit = true, true, true, false
			e.tokenRequest, e.serviceMonitor = true, true
			e.image = "registry.example/intransit:v9.9.9"
			e.gracePeriod = 45
			e.swap = map[string]string{inboundTLSDir: tlsDir, "/etc/intransit-secrets/upstream-ca": caDir}
		},
		more: func(t *testing.T, o objects) {
			pod := &o.ds.Spec.Template.Spec
			c := container(pod, agentName)
			if c.ImagePullPolicy != corev1.PullAlways {
				t.Errorf("imagePullPolicy %q, want Always", c.ImagePullPolicy)
			}
			for r, want := range map[string]string{"requests.cpu": "250m", "requests.memory": "128Mi", "limits.cpu": "2", "limits.memory": "1Gi"} {
				list := c.Resources.Requests
				if strings.HasPrefix(r, "limits.") {
					list = c.Resources.Limits
				}
				q := list[corev1.ResourceName(r[strings.Index(r, ".")+1:])]
				if q.Cmp(resource.MustParse(want)) != 0 {
					t.Errorf("resources %s %v, want %s", r, &q, want)
				}
			}
			if v := volumeNamed(pod, "inbound-tls"); v == nil || v.Secret == nil || v.Secret.SecretName != "intransit-inbound-tls" {
				t.Errorf("inbound-tls volume %+v, want Secret intransit-inbound-tls", v)
			}
			if m, v := mountAt(t, pod, c, "/etc/intransit-secrets/upstream-ca"); m == nil || v.Secret == nil || !m.ReadOnly {
				t.Error("extraVolumes/extraVolumeMounts: upstream-ca not mounted read-only")
			}
			if o.ds.Spec.Template.Annotations["example.com/team"] != "security" {
				t.Error("podAnnotations not on the pod template")
			}
			if len(pod.Tolerations) != 2 {
				t.Errorf("tolerations %+v, want the two given", pod.Tolerations)
			}
			if o.sm.Labels["release"] != "prom" || o.sm.Spec.Endpoints[0].Interval != "15s" {
				t.Errorf("ServiceMonitor labels %v interval %q, want release=prom and 15s", o.sm.Labels, o.sm.Spec.Endpoints[0].Interval)
			}
			if o.binding.Subjects[0].Namespace != "security" || o.sa.Name != "edge-intransit" {
				t.Errorf("ServiceAccount %s/%s, binding %+v", o.sa.Namespace, o.sa.Name, o.binding.Subjects)
			}
			if a, b := o.ds.Spec.Template.Annotations["checksum/config"], base.ds.Spec.Template.Annotations["checksum/config"]; a == b {
				t.Error("checksum/config did not change with the config")
			}
		},
	}, {
		name: "resolveExecutables", release: releaseName, namespace: releaseNamespace, values: "resolveExecutables: true",
		expect: func(e *expect) { e.resolveExe = true },
	}, {
		name: "podNetworkNamespaces", release: releaseName, namespace: releaseNamespace,
		values: "podNetworkNamespaces: true\nconfig:\n  rules: [{name: payments, ports: [8080], mode: enforce, upstream: {tls: {port: 8443}}, workloads: [{namespace: payments}]}]",
		expect: func(e *expect) { e.podNS = true },
	}, {
		name: "podAddress instead", release: releaseName, namespace: releaseNamespace,
		values: "config:\n  proxy: {podAddress: 10.0.0.5}\n  rules: [{name: payments, ports: [8080], mode: enforce, upstream: {tls: {port: 8443}}, workloads: [{namespace: payments}]}]",
		expect: func(e *expect) {},
	}, {
		name: "privileged", release: releaseName, namespace: releaseNamespace, values: "privileged: true",
		expect: func(e *expect) { e.privileged = true },
		more: func(t *testing.T, o objects) {
			// Only the security context and the bpffs propagation change.
			if a, b := o.ds.Spec.Template.Annotations["checksum/config"], base.ds.Spec.Template.Annotations["checksum/config"]; a != b {
				t.Error("checksum/config changed without a config change")
			}
		},
	}, {
		name: "no rbac, hybrid cgroup, no roll", release: releaseName, namespace: releaseNamespace,
		values: "rbac: {create: false}\nhostCgroupPath: /sys/fs/cgroup/unified\nimage: {tag: \"\"}\nrollOnConfigChange: false",
		expect: func(e *expect) {
			e.rbac, e.hostCgroupPath, e.noRoll = false, "/sys/fs/cgroup/unified", true
			e.image = "ghcr.io/intransit/intransit:" + chartAppVersion(t)
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := defaults
			e.createNS = false
			tc.expect(&e)
			o := decodeObjects(t, []byte(mustRender(t, tc.release, tc.namespace, tc.values).manifest))
			checkRendering(t, o, e)
			if tc.more != nil {
				tc.more(t, o)
			}
		})
	}
}

func chartAppVersion(t *testing.T) string {
	t.Helper()
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(readFile(t, filepath.Join(chartDir, "Chart.yaml")), &chart); err != nil {
		t.Fatal(err)
	}
	return chart.AppVersion
}

// Values that would render a pod that runs without doing its job, or a
// misspelt switch, fail the rendering instead.
func TestChartRefuses(t *testing.T) {
	for _, tc := range []struct{ values, want string }{
		{"config: {cgroup: \"\"}", "config.cgroup"},
		{"config: {cgroup: null}", "cgroup"},
		{"config: {cgroup: /sys/fs/cgroup}", "config.cgroup"},
		{"config: {bpf: {pinPath: /run/intransit/bpf}}", "config.bpf.pinPath"},
		{"config: {metrics: {listen: \"off\"}}", "config.metrics.listen"},
		{"serviceMonitor: {enabled: true}", "loopback"},
		{"config: {inbound: {listen: \"0.0.0.0:15008\"}}", "config.inbound.cgroup"},
		{"privilged: true", "privilged"},
		{"privileged: \"yes\"", "privileged"},
		{"bpffsInit: {enable: false}", "enable"},
		{"terminationGracePeriodSeconds: 5", "terminationGracePeriodSeconds"},
		{"config: {rules: [{name: payments, ports: [8080], mode: enforce, upstream: {tls: {port: 8443}}, workloads: [{labels: {app: pay}}]}]}", "podNetworkNamespaces"},
	} {
		_, err := render(releaseName, releaseNamespace, tc.values)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("values %s: error %v, want one naming %s", tc.values, err, tc.want)
		}
	}
}

var valuesRef = regexp.MustCompile(`\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)`)

// Chart.yaml is well-formed, and every .Values.a.b a template names has a
// default in values.yaml (a typo would otherwise render as empty).
func TestChartMetadata(t *testing.T) {
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

	var values map[string]any
	if err := yaml.UnmarshalStrict(readFile(t, filepath.Join(chartDir, "values.yaml")), &values); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	tmpls, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil || len(tmpls) == 0 {
		t.Fatalf("no templates: %v", err)
	}
	for _, f := range tmpls {
		for _, m := range valuesRef.FindAllStringSubmatch(string(readFile(t, f)), -1) {
			if strings.HasPrefix(m[1], ".config.") {
				continue // the agent's own config: free-form, checked by the agent
			}
			if err := lookupValue(values, strings.Split(m[1][1:], ".")); err != nil {
				t.Errorf("%s: %s: %v", filepath.Base(f), m[0], err)
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
