package identity

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/auth"
)

const testNode = "node-a"

func newPod(ns, name, uid, node, sa string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: sa},
	}
}

// startPods starts a Pods on testNode over client, stopped when t ends.
func startPods(t testing.TB, client *fake.Clientset) *Pods {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p := NewPods(client, testNode, slog.New(slog.DiscardHandler))
	// ctx is also the informer's lifetime: no timeout here.
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// eventually polls cond until it holds or 5s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

const (
	uidPlanner   = "6f1c0d2e-0000-4000-8000-000000000001"
	uidWorker    = "6f1c0d2e-0000-4000-8000-000000000002"
	uidElsewhere = "6f1c0d2e-0000-4000-8000-000000000003"
	uidLate      = "6f1c0d2e-0000-4000-8000-000000000004"
	uidLateElse  = "6f1c0d2e-0000-4000-8000-000000000005"
)

func TestPodsByUID(t *testing.T) {
	client := fake.NewClientset(
		newPod("agents", "planner-0", uidPlanner, testNode, "planner"),
		newPod("agents", "worker-0", uidWorker, testNode, ""),
		newPod("agents", "planner-1", uidElsewhere, "node-b", "planner"),
	)
	p := startPods(t, client)

	if got, ok := p.ByUID(uidPlanner); !ok || got != (auth.PodRef{Namespace: "agents", Name: "planner-0", UID: uidPlanner, ServiceAccount: "planner"}) {
		t.Errorf("ByUID(planner) = %+v, %v", got, ok)
	}
	if got, ok := p.ByUID(uidWorker); !ok || got.ServiceAccount != "default" {
		t.Errorf("ByUID(worker) = %+v, %v; want service account \"default\"", got, ok)
	}
	// The fake clientset ignores field selectors, so this checks the
	// node filter in the index.
	if got, ok := p.ByUID(uidElsewhere); ok {
		t.Errorf("pod on another node found: %+v", got)
	}
	if _, ok := p.ByUID("no-such-uid"); ok {
		t.Error("unknown uid found")
	}

	// The API server is asked for this node's pods only.
	var lists int
	for _, a := range client.Actions() {
		if a.GetResource().Resource != "pods" {
			continue
		}
		var fs string
		switch a := a.(type) {
		case k8stesting.ListActionImpl:
			lists++
			fs = a.ListRestrictions.Fields.String()
		case k8stesting.WatchActionImpl:
			fs = a.WatchRestrictions.Fields.String()
		default:
			continue
		}
		if fs != "spec.nodeName="+testNode {
			t.Errorf("%s pods with field selector %q", a.GetVerb(), fs)
		}
	}
	if lists == 0 {
		t.Error("pods were never listed")
	}
}

func TestPodsFollowEvents(t *testing.T) {
	client := fake.NewClientset(newPod("agents", "planner-0", uidPlanner, testNode, "planner"))
	p := startPods(t, client)
	ctx := context.Background()
	pods := client.CoreV1().Pods("agents")

	// Add: a pod on another node, then one on this node. Events arrive in
	// order, so once the second is seen the first was handled.
	if _, err := pods.Create(ctx, newPod("agents", "late-b", uidLateElse, "node-b", "planner"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, newPod("agents", "late-a", uidLate, testNode, "planner"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the added pod", func() bool { _, ok := p.ByUID(uidLate); return ok })
	if got, ok := p.ByUID(uidLateElse); ok {
		t.Errorf("pod added on another node found: %+v", got)
	}

	// Update. The API server forbids changing serviceAccountName, but it is
	// the one PodRef field an update could change: it shows updates land.
	pod := newPod("agents", "planner-0", uidPlanner, testNode, "planner-v2")
	if _, err := pods.Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the update", func() bool { got, _ := p.ByUID(uidPlanner); return got.ServiceAccount == "planner-v2" })

	// Delete.
	if err := pods.Delete(ctx, "planner-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deletion", func() bool { _, ok := p.ByUID(uidPlanner); return !ok })
	if _, ok := p.ByUID(uidLate); !ok {
		t.Error("deleting one pod dropped another")
	}
}

// syncBuffer is a bytes.Buffer safe for the informer's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPodsStartFailsWhenNeverSynced(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("apiserver unavailable")
	})
	var logs syncBuffer
	p := NewPods(client, testNode, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := p.Start(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), testNode) {
		t.Fatalf("Start = %v, want a deadline error naming the node", err)
	}
	if !strings.Contains(logs.String(), "apiserver unavailable") {
		t.Errorf("list failure not logged; logs:\n%s", logs.String())
	}
}

func TestPodsStartNeedsNode(t *testing.T) {
	p := NewPods(fake.NewClientset(), "", nil)
	if err := p.Start(context.Background()); err == nil {
		t.Fatal("Start with no node name succeeded")
	}
}

func TestPodByUIDFollowsInformer(t *testing.T) {
	labelled := func(p *corev1.Pod, labels map[string]string) *corev1.Pod {
		p.Labels = labels
		return p
	}
	client := fake.NewClientset(
		labelled(newPod("agents", "planner-0", uidPlanner, testNode, "planner"), map[string]string{"app": "planner", "tier": "agents"}),
		newPod("agents", "worker-0", uidWorker, testNode, ""),
		labelled(newPod("agents", "planner-1", uidElsewhere, "node-b", "planner"), map[string]string{"app": "planner"}),
	)
	p := startPods(t, client)
	var lookup PodLookup = p // Pods is what Workloads takes

	want := audit.Pod{Namespace: "agents", Name: "planner-0", UID: uidPlanner, ServiceAccount: "planner",
		Labels: map[string]string{"app": "planner", "tier": "agents"}}
	got, ok := lookup.PodByUID(uidPlanner)
	if !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("PodByUID(planner) = %+v, %v; want %+v", got, ok, want)
	}
	// The labels are a copy: changing them leaves the informer's cache alone.
	got.Labels["app"] = "changed"
	if again, _ := lookup.PodByUID(uidPlanner); again.Labels["app"] != "planner" {
		t.Errorf("changing returned labels changed the cache: %v", again.Labels)
	}
	if got, ok := lookup.PodByUID(uidWorker); !ok || got.ServiceAccount != "default" || got.Labels != nil {
		t.Errorf("PodByUID(worker) = %+v, %v; want service account \"default\", no labels", got, ok)
	}
	if got, ok := lookup.PodByUID(uidElsewhere); ok {
		t.Errorf("pod on another node found: %+v", got)
	}
	if _, ok := lookup.PodByUID("no-such-uid"); ok {
		t.Error("unknown uid found")
	}

	// A label change and a deletion reach the lookup.
	ctx := context.Background()
	pods := client.CoreV1().Pods("agents")
	relabelled := labelled(newPod("agents", "planner-0", uidPlanner, testNode, "planner"), map[string]string{"app": "planner", "tier": "gold"})
	if _, err := pods.Update(ctx, relabelled, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the label change", func() bool { got, _ := lookup.PodByUID(uidPlanner); return got.Labels["tier"] == "gold" })
	if err := pods.Delete(ctx, "planner-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deletion", func() bool { _, ok := lookup.PodByUID(uidPlanner); return !ok })
	if _, ok := lookup.PodByUID(uidWorker); !ok {
		t.Error("deleting one pod dropped another")
	}
}

// Workloads with the real informer: a connection from a pod's container
// is attributed to the pod, and to an unknown pod once it is deleted.
func TestResolveWithPodsInformer(t *testing.T) {
	client := fake.NewClientset(func() *corev1.Pod {
		p := newPod("agents", "planner-0", uidPlanner, testNode, "planner")
		p.Labels = map[string]string{"app": "planner"}
		return p
	}())
	f := newWorkloadsFixture(t)
	w := NewWorkloads(f.cgroups, startPods(t, client), f.proc)
	f.process(t, 100, "/usr/bin/curl", f.paths["planner"])

	p := &audit.Process{PID: 100, Cgroup: f.ids["planner"]}
	w.Resolve(p)
	if !reflect.DeepEqual(p.Pod, &plannerPod) || p.Exe != "/usr/bin/curl" || p.Workload() != "pod/agents/planner-0" {
		t.Fatalf("Resolve: %s (workload %s)", dump(p), p.Workload())
	}
	if err := client.CoreV1().Pods("agents").Delete(context.Background(), "planner-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want := &audit.Pod{Namespace: audit.Unknown, Name: audit.Unknown, UID: uidPlanner, ServiceAccount: audit.Unknown}
	eventually(t, "the deletion", func() bool {
		p := &audit.Process{PID: 100, Cgroup: f.ids["planner"]}
		w.Resolve(p)
		return reflect.DeepEqual(p.Pod, want)
	})
}
