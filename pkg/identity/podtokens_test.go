package identity

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/intransit/intransit/pkg/auth"
)

var errTokenAPI = errors.New("token API unavailable")

// tokenReactor stands in for the serviceaccounts/token subresource: the
// token names the service account and the pod it is bound to.
type tokenReactor struct {
	requests atomic.Int64
	fail     atomic.Bool
}

func (r *tokenReactor) react(action k8stesting.Action) (bool, runtime.Object, error) {
	if action.GetSubresource() != "token" {
		return false, nil, nil
	}
	r.requests.Add(1)
	if r.fail.Load() {
		return true, nil, errTokenAPI
	}
	create := action.(k8stesting.CreateActionImpl)
	req := create.GetObject().(*authenticationv1.TokenRequest)
	ref := req.Spec.BoundObjectRef
	if ref == nil || ref.Kind != "Pod" {
		return true, nil, fmt.Errorf("token not bound to a pod: %+v", ref)
	}
	return true, &authenticationv1.TokenRequest{
		Spec: req.Spec,
		Status: authenticationv1.TokenRequestStatus{
			Token:               fmt.Sprintf("token:%s/%s:pod=%s:uid=%s:aud=%s", action.GetNamespace(), create.Name, ref.Name, ref.UID, strings.Join(req.Spec.Audiences, ",")),
			ExpirationTimestamp: metav1.NewTime(time.Now().Add(time.Hour)),
		},
	}, nil
}

// cgroupTree makes a kubepods-style hierarchy (systemd driver) under a temp
// dir standing in for the cgroup2 root, and returns the root and the
// directories by name.
func cgroupTree(t *testing.T) (string, map[string]string) {
	t.Helper()
	root := t.TempDir()
	const ctr = "cri-containerd-4f2a9c1be7d3a8f0c6b5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9.scope"
	burstable := filepath.Join(root, "kubepods.slice", "kubepods-burstable.slice")
	slice := func(qos, uid string) string {
		return "kubepods-" + qos + "pod" + strings.ReplaceAll(uid, "-", "_") + ".slice"
	}
	dirs := map[string]string{
		"planner":     filepath.Join(burstable, slice("burstable-", uidPlanner), ctr),
		"plannerPod":  filepath.Join(burstable, slice("burstable-", uidPlanner)),
		"late":        filepath.Join(root, "kubepods.slice", slice("", uidLate), ctr),
		"unknownPod":  filepath.Join(root, "kubepods.slice", slice("", uidWorker), ctr),
		"hostService": filepath.Join(root, "system.slice", "containerd.service"),
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root, dirs
}

type podTokensFixture struct {
	root   string
	dirs   map[string]string
	tokens *PodTokens
	client *fake.Clientset
	api    *tokenReactor
	ids    map[string]uint64
}

func newPodTokensFixture(t *testing.T) podTokensFixture {
	t.Helper()
	root, dirs := cgroupTree(t)
	ids := map[string]uint64{}
	for name, d := range dirs {
		ids[name] = inode(t, d)
	}
	client := fake.NewClientset(
		newPod("agents", "planner-0", uidPlanner, testNode, "planner"),
		newPod("agents", "planner-1", uidElsewhere, "node-b", "planner"),
	)
	api := &tokenReactor{}
	client.PrependReactor("create", "serviceaccounts", api.react)
	pods := startPods(t, client)
	tokens := NewPodTokens(pods, NewCgroups(root), auth.NewKubernetesSource(client, "intransit", time.Hour))
	tokens.wait = 50 * time.Millisecond
	return podTokensFixture{root: root, dirs: dirs, tokens: tokens, client: client, api: api, ids: ids}
}

func TestTokenForCgroup(t *testing.T) {
	f := newPodTokensFixture(t)
	ctx := context.Background()
	wantPod := auth.PodRef{Namespace: "agents", Name: "planner-0", UID: uidPlanner, ServiceAccount: "planner"}
	wantToken := "token:agents/planner:pod=planner-0:uid=" + uidPlanner + ":aud=intransit"

	// A container's cgroup and the pod's own cgroup both give the pod.
	for _, name := range []string{"planner", "plannerPod"} {
		tok, pod, err := f.tokens.TokenForCgroup(ctx, f.ids[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if tok != wantToken || pod != wantPod {
			t.Errorf("%s: token %q for %+v; want %q for %+v", name, tok, pod, wantToken, wantPod)
		}
	}
	if n := f.api.requests.Load(); n != 1 {
		t.Errorf("%d token requests, want 1 (cached)", n)
	}
}

func TestTokenForCgroupErrors(t *testing.T) {
	f := newPodTokensFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		id   uint64
		want string
	}{
		{"host service", f.ids["hostService"], fmt.Sprintf("cgroup %d is not a pod's (path %q)", f.ids["hostService"], "/system.slice/containerd.service")},
		{"pod not on this node", f.ids["unknownPod"], "pod " + uidWorker + " not found on node " + testNode},
		{"unknown cgroup", 1 << 62, fmt.Sprintf("cgroup %d not found under the cgroup2 root", uint64(1<<62))},
		{"cgroup id 0", 0, "cgroup 0 not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, pod, err := f.tokens.TokenForCgroup(ctx, tc.id)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if tok != "" || pod != (auth.PodRef{}) {
				t.Errorf("token %q, pod %+v with an error", tok, pod)
			}
		})
	}
	if n := f.api.requests.Load(); n != 0 {
		t.Errorf("%d token requests for cgroups that are not known pods", n)
	}
}

func TestTokenForCgroupNotAPodFailsFast(t *testing.T) {
	f := newPodTokensFixture(t)
	f.tokens.wait = time.Minute
	start := time.Now()
	if _, _, err := f.tokens.TokenForCgroup(context.Background(), f.ids["hostService"]); err == nil {
		t.Fatal("no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a host cgroup took %v: it must not wait for a pod", d)
	}
}

// A pod's first connect may come before the pod watch event: the lookup
// waits for it.
func TestTokenForCgroupWaitsForNewPod(t *testing.T) {
	f := newPodTokensFixture(t)
	f.tokens.wait = 10 * time.Second
	go func() {
		time.Sleep(200 * time.Millisecond)
		_, _ = f.client.CoreV1().Pods("agents").Create(context.Background(),
			newPod("agents", "late-0", uidLate, testNode, "late"), metav1.CreateOptions{})
	}()
	tok, pod, err := f.tokens.TokenForCgroup(context.Background(), f.ids["late"])
	if err != nil {
		t.Fatal(err)
	}
	if pod.Name != "late-0" || pod.ServiceAccount != "late" || !strings.HasPrefix(tok, "token:agents/late:pod=late-0:") {
		t.Errorf("token %q for %+v", tok, pod)
	}
}

// A new container's cgroup may be created just after a walk of the
// hierarchy, which is rate limited: the lookup waits for the next walk.
func TestTokenForCgroupWaitsForNewCgroup(t *testing.T) {
	f := newPodTokensFixture(t)
	f.tokens.wait = 10 * time.Second
	ctx := context.Background()
	if _, _, err := f.tokens.TokenForCgroup(ctx, f.ids["planner"]); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(f.dirs["plannerPod"], "cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, pod, err := f.tokens.TokenForCgroup(ctx, inode(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	if pod.Name != "planner-0" {
		t.Errorf("pod %+v", pod)
	}
}

func TestTokenForCgroupWaitEndsWithContext(t *testing.T) {
	f := newPodTokensFixture(t)
	f.tokens.wait = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	_, _, err := f.tokens.TokenForCgroup(ctx, f.ids["unknownPod"])
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not found on node") {
		t.Fatalf("err = %v, want the lookup failure and the deadline", err)
	}
}

func TestTokenForCgroupTokenRequestFails(t *testing.T) {
	f := newPodTokensFixture(t)
	f.api.fail.Store(true)
	tok, pod, err := f.tokens.TokenForCgroup(context.Background(), f.ids["planner"])
	if !errors.Is(err, errTokenAPI) || !strings.Contains(err.Error(), "agents/planner-0") {
		t.Fatalf("err = %v, want the token API error naming the pod", err)
	}
	if tok != "" || pod.Name != "planner-0" {
		t.Errorf("token %q, pod %+v: want no token and the pod", tok, pod)
	}
}
