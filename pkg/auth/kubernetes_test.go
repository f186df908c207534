package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// tokenAPI stands in for the API server's serviceaccounts/token
// subresource, recording requests.
type tokenAPI struct {
	clock    *fakeClock
	requests atomic.Int64
	fail     atomic.Bool
	release  chan struct{} // if set, each request waits for it

	mu   sync.Mutex
	last k8stesting.CreateActionImpl
}

func (a *tokenAPI) react(action k8stesting.Action) (bool, runtime.Object, error) {
	if action.GetSubresource() != "token" {
		return false, nil, nil
	}
	n := a.requests.Add(1)
	create := action.(k8stesting.CreateActionImpl)
	a.mu.Lock()
	a.last = create
	a.mu.Unlock()
	if a.release != nil {
		<-a.release
	}
	if a.fail.Load() {
		return true, nil, errors.New("apiserver unavailable")
	}
	req := create.GetObject().(*authenticationv1.TokenRequest)
	return true, &authenticationv1.TokenRequest{
		Spec: req.Spec,
		Status: authenticationv1.TokenRequestStatus{
			Token:               fmt.Sprintf("%s-token-%d", create.Name, n),
			ExpirationTimestamp: metav1.NewTime(a.clock.Now().Add(time.Duration(*req.Spec.ExpirationSeconds) * time.Second)),
		},
	}, nil
}

func (a *tokenAPI) lastAction() k8stesting.CreateActionImpl {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

func newTestKubernetesSource(t *testing.T, ttl time.Duration) (*KubernetesSource, *tokenAPI, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	api := &tokenAPI{clock: clock}
	client := fake.NewClientset()
	client.PrependReactor("create", "serviceaccounts", api.react)
	k := NewKubernetesSource(client, "intransit", ttl)
	k.now = clock.Now
	k.log = slog.New(slog.DiscardHandler)
	return k, api, clock
}

// plannerPod is the pod most tests mint tokens for.
func plannerPod() PodRef {
	return PodRef{Namespace: "agents", Name: "planner-0", UID: "6f1c0d2e-0000-4000-8000-000000000001", ServiceAccount: "planner"}
}

func TestKubernetesSourceRequest(t *testing.T) {
	k, api, _ := newTestKubernetesSource(t, time.Hour)
	tok, err := k.TokenFor(context.Background(), plannerPod())
	if err != nil {
		t.Fatal(err)
	}
	if tok != "planner-token-1" {
		t.Fatalf("token %q", tok)
	}
	a := api.lastAction()
	if a.GetNamespace() != "agents" || a.Name != "planner" || a.GetResource().Resource != "serviceaccounts" {
		t.Errorf("request to %s/%s %s", a.GetNamespace(), a.Name, a.GetResource().Resource)
	}
	spec := a.GetObject().(*authenticationv1.TokenRequest).Spec
	if len(spec.Audiences) != 1 || spec.Audiences[0] != "intransit" {
		t.Errorf("audiences %q", spec.Audiences)
	}
	if spec.ExpirationSeconds == nil || *spec.ExpirationSeconds != 3600 {
		t.Errorf("expirationSeconds %v", spec.ExpirationSeconds)
	}
	want := authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: "planner-0", UID: "6f1c0d2e-0000-4000-8000-000000000001"}
	if spec.BoundObjectRef == nil || *spec.BoundObjectRef != want {
		t.Errorf("bound to %+v, want %+v", spec.BoundObjectRef, want)
	}
}

func TestKubernetesSourceCachesUntil80Percent(t *testing.T) {
	k, api, clock := newTestKubernetesSource(t, time.Hour)
	ctx := context.Background()
	for range 10 {
		if tok, err := k.TokenFor(ctx, plannerPod()); err != nil || tok != "planner-token-1" {
			t.Fatalf("token %q, %v", tok, err)
		}
	}
	clock.Advance(47 * time.Minute) // 78%
	if tok, _ := k.TokenFor(ctx, plannerPod()); tok != "planner-token-1" {
		t.Fatalf("token %q at 78%% of its lifetime", tok)
	}
	clock.Advance(2 * time.Minute) // 81%
	if tok, _ := k.TokenFor(ctx, plannerPod()); tok != "planner-token-2" {
		t.Fatalf("token %q at 81%% of its lifetime", tok)
	}
	if n := api.requests.Load(); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}

	// Another pod of the same service account gets its own bound token.
	other := plannerPod()
	other.Name, other.UID = "planner-1", "6f1c0d2e-0000-4000-8000-000000000002"
	if tok, _ := k.TokenFor(ctx, other); tok != "planner-token-3" {
		t.Fatalf("token %q for another pod", tok)
	}
}

func TestKubernetesSourceSharesOneRequest(t *testing.T) {
	k, api, _ := newTestKubernetesSource(t, time.Hour)
	api.release = make(chan struct{})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if tok, err := k.TokenFor(context.Background(), plannerPod()); err != nil || tok != "planner-token-1" {
				t.Errorf("token %q, %v", tok, err)
			}
		})
	}
	// Let the callers pile up on the one request before it returns.
	for api.requests.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(api.release)
	wg.Wait()
	if n := api.requests.Load(); n != 1 {
		t.Errorf("%d token requests for 20 concurrent callers, want 1", n)
	}
}

func TestKubernetesSourceFailures(t *testing.T) {
	k, api, clock := newTestKubernetesSource(t, time.Hour)
	ctx := context.Background()
	api.fail.Store(true)
	if _, err := k.TokenFor(ctx, plannerPod()); err == nil {
		t.Fatal("token while the API server fails")
	}
	api.fail.Store(false)
	if tok, err := k.TokenFor(ctx, plannerPod()); err != nil || tok != "planner-token-2" {
		t.Fatalf("token %q, %v", tok, err)
	}

	// A failed renewal keeps serving the still-valid token...
	api.fail.Store(true)
	clock.Advance(50 * time.Minute)
	if tok, err := k.TokenFor(ctx, plannerPod()); err != nil || tok != "planner-token-2" {
		t.Fatalf("token %q, %v during a failed renewal", tok, err)
	}
	// ...but never an expired one.
	clock.Advance(11 * time.Minute)
	if _, err := k.TokenFor(ctx, plannerPod()); err == nil {
		t.Fatal("expired token served")
	}

	if _, err := k.TokenFor(ctx, PodRef{Namespace: "agents", Name: "x"}); err == nil {
		t.Error("token for a pod without uid and service account")
	}
}

func TestNewKubernetesSourceDefaults(t *testing.T) {
	k := NewKubernetesSource(fake.NewClientset(), "", 0)
	if k.audience != "intransit" || k.ttl != time.Hour {
		t.Errorf("defaults: %q, %s", k.audience, k.ttl)
	}
	if k := NewKubernetesSource(fake.NewClientset(), "a", time.Minute); k.ttl != 10*time.Minute {
		t.Errorf("ttl %s, want the API server's 10m minimum", k.ttl)
	}
}

func TestKubernetesSourceSweepsExpired(t *testing.T) {
	k, _, clock := newTestKubernetesSource(t, 10*time.Minute)
	k.sweepAt = 4
	ctx := context.Background()
	for i := range 4 {
		p := plannerPod()
		p.UID = fmt.Sprint("uid-", i)
		if _, err := k.TokenFor(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(11 * time.Minute)
	if _, err := k.TokenFor(ctx, plannerPod()); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	n := len(k.cache)
	k.mu.Unlock()
	if n != 1 {
		t.Errorf("%d cached tokens after the sweep, want 1", n)
	}
}
