package auth

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Kubernetes TokenRequest settings.
const (
	// DefaultKubernetesAudience is used when no audience is given: a token
	// without one would be accepted by the API server itself.
	DefaultKubernetesAudience = "intransit"
	DefaultKubernetesTTL      = time.Hour
	// minKubernetesTTL is the shortest expiration the API server accepts.
	minKubernetesTTL = 10 * time.Minute
	// requestTimeout bounds one TokenRequest.
	requestTimeout = 30 * time.Second
	// minSweep is the cache size below which expired entries are not swept.
	minSweep = 1024
)

// PodRef names the pod a token is minted for.
type PodRef struct {
	Namespace, Name, UID, ServiceAccount string
}

func (p PodRef) validate() error {
	if p.Namespace == "" || p.Name == "" || p.UID == "" || p.ServiceAccount == "" {
		return fmt.Errorf("pod %s/%s (uid %q, service account %q): namespace, name, uid and service account are all required",
			p.Namespace, p.Name, p.UID, p.ServiceAccount)
	}
	return nil
}

// key identifies pod for request sharing; Kubernetes names have no "/".
func (p PodRef) key() string {
	return p.Namespace + "/" + p.Name + "/" + p.UID + "/" + p.ServiceAccount
}

// KubernetesSource mints, with the TokenRequest API, a token for a pod's own
// service account, bound to the pod (it dies with the pod) and limited to
// one audience. Tokens are cached per pod until 80% of their lifetime; all
// callers for the same pod share one request. It is safe for concurrent use.
type KubernetesSource struct {
	client   kubernetes.Interface
	audience string
	ttl      time.Duration
	now      func() time.Time
	log      *slog.Logger
	group    singleflight.Group

	mu      sync.Mutex
	cache   map[PodRef]podToken
	sweepAt int
}

type podToken struct {
	token     string
	refreshAt time.Time // 80% of the lifetime
	expiry    time.Time
}

// NewKubernetesSource mints tokens for audience (default "intransit") that
// live ttl (default 1h, at least 10m as the API server requires; the server
// may still shorten or lengthen it).
func NewKubernetesSource(client kubernetes.Interface, audience string, ttl time.Duration) *KubernetesSource {
	if audience == "" {
		audience = DefaultKubernetesAudience
	}
	switch {
	case ttl <= 0:
		ttl = DefaultKubernetesTTL
	case ttl < minKubernetesTTL:
		ttl = minKubernetesTTL
	}
	return &KubernetesSource{
		client:   client,
		audience: audience,
		ttl:      ttl.Truncate(time.Second),
		now:      time.Now,
		log:      slog.Default(),
		cache:    make(map[PodRef]podToken),
		sweepAt:  minSweep,
	}
}

// TokenFor returns a token for pod's service account, bound to pod. When a
// renewal fails while the cached token is still valid, the cached token is
// returned and the failure logged.
func (k *KubernetesSource) TokenFor(ctx context.Context, pod PodRef) (string, error) {
	if err := pod.validate(); err != nil {
		return "", err
	}
	k.mu.Lock()
	cached, ok := k.cache[pod]
	k.mu.Unlock()
	if ok && k.now().Before(cached.refreshAt) {
		return cached.token, nil
	}

	// The request outlives a caller that gives up, so the others (and the
	// cache) still get its result.
	rctx := context.WithoutCancel(ctx)
	ch := k.group.DoChan(pod.key(), func() (any, error) { return k.request(rctx, pod) })
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case res := <-ch:
		if res.Err == nil {
			return res.Val.(string), nil
		}
		if ok && k.now().Before(cached.expiry) {
			k.log.Warn("token renewal failed, using the cached token", "pod", pod.Namespace+"/"+pod.Name, "err", res.Err)
			return cached.token, nil
		}
		return "", res.Err
	}
}

func (k *KubernetesSource) request(ctx context.Context, pod PodRef) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	seconds := int64(k.ttl / time.Second)
	req := &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{k.audience},
			ExpirationSeconds: &seconds,
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind:       "Pod",
				APIVersion: "v1",
				Name:       pod.Name,
				UID:        types.UID(pod.UID),
			},
		},
	}
	issued := k.now()
	resp, err := k.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.ServiceAccount, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token request for service account %s/%s (pod %s): %w", pod.Namespace, pod.ServiceAccount, pod.Name, err)
	}
	if resp.Status.Token == "" {
		return "", fmt.Errorf("token request for service account %s/%s (pod %s): empty token in response", pod.Namespace, pod.ServiceAccount, pod.Name)
	}
	expiry := resp.Status.ExpirationTimestamp.Time
	if expiry.IsZero() {
		expiry = issued.Add(k.ttl)
	}
	k.store(pod, podToken{
		token:     resp.Status.Token,
		refreshAt: issued.Add(expiry.Sub(issued) * 8 / 10),
		expiry:    expiry,
	})
	return resp.Status.Token, nil
}

// store caches t, first dropping expired entries (pods long gone) when the
// cache has grown past the last sweep.
func (k *KubernetesSource) store(pod PodRef, t podToken) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.cache) >= k.sweepAt {
		now := k.now()
		for p, c := range k.cache {
			if !now.Before(c.expiry) {
				delete(k.cache, p)
			}
		}
		k.sweepAt = max(minSweep, 2*len(k.cache))
	}
	k.cache[pod] = t
}
