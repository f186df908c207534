package identity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	corev1informers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/auth"
)

// uidIndex is the informer index of this node's pods by UID.
const uidIndex = "uid"

// defaultServiceAccount is what the API server assigns a pod that names none.
const defaultServiceAccount = "default"

// Pods resolves pod UIDs to the identity of pods on this node, from an
// informer on the pods whose spec.nodeName is the node. It is safe for
// concurrent use.
type Pods struct {
	node     string
	log      *slog.Logger
	informer cache.SharedIndexInformer
}

// NewPods watches the pods on node; call Start before ByUID finds any.
func NewPods(client kubernetes.Interface, node string, log *slog.Logger) *Pods {
	if log == nil {
		log = slog.Default()
	}
	p := &Pods{node: node, log: log}
	selector := fields.OneTermEqualSelector("spec.nodeName", node).String()
	p.informer = corev1informers.NewFilteredPodInformer(client, metav1.NamespaceAll, 0,
		cache.Indexers{uidIndex: p.indexUID},
		func(o *metav1.ListOptions) { o.FieldSelector = selector })
	// Fails only once the informer runs, which it does not yet.
	_ = p.informer.SetWatchErrorHandlerWithContext(p.watchError)
	return p
}

// Start runs the informer until ctx ends and returns once its cache holds
// the node's pods, or with an error if ctx ends first.
func (p *Pods) Start(ctx context.Context) error {
	if p.node == "" {
		return errors.New("pods: no node name (an empty one would select the unscheduled pods)")
	}
	go p.informer.RunWithContext(ctx)
	select {
	case <-p.informer.HasSyncedChecker().Done():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pods on node %s: cache not synced: %w", p.node, context.Cause(ctx))
	}
}

// ByUID returns the pod with uid if it runs on this node. Static pods are
// not found: their cgroups carry the kubelet's hash, not the mirror pod's
// UID, and they cannot have a service account anyway.
func (p *Pods) ByUID(uid string) (auth.PodRef, bool) {
	pod, ok := p.byUID(uid)
	if !ok {
		return auth.PodRef{}, false
	}
	return auth.PodRef{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID), ServiceAccount: serviceAccount(pod)}, true
}

// PodByUID is ByUID for the audit trail: the pod's identity and labels. The
// labels are a copy, so callers may keep or change them. A nil Pods finds
// nothing, so a nil *Pods can stand for "off Kubernetes" in a PodLookup.
func (p *Pods) PodByUID(uid string) (audit.Pod, bool) {
	pod, ok := p.byUID(uid)
	if !ok {
		return audit.Pod{}, false
	}
	return audit.Pod{
		Namespace:      pod.Namespace,
		Name:           pod.Name,
		UID:            string(pod.UID),
		ServiceAccount: serviceAccount(pod),
		Labels:         maps.Clone(pod.Labels),
	}, true
}

// byUID looks uid up in the informer's cache. The pod is the cache's own
// object: read it, never change it.
func (p *Pods) byUID(uid string) (*corev1.Pod, bool) {
	if p == nil {
		return nil, false
	}
	objs, err := p.informer.GetIndexer().ByIndex(uidIndex, uid)
	if err != nil || len(objs) == 0 {
		return nil, false
	}
	pod, ok := objs[0].(*corev1.Pod)
	return pod, ok
}

// serviceAccount is the pod's service account, as the API server defaults it.
func serviceAccount(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName == "" {
		return defaultServiceAccount
	}
	return pod.Spec.ServiceAccountName
}

// indexUID indexes this node's pods by UID. The API server already filters
// on spec.nodeName; checking again keeps other nodes' pods out where the
// selector is not applied (client-go's fake clientset ignores it).
func (p *Pods) indexUID(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.NodeName != p.node || pod.UID == "" {
		return nil, nil
	}
	return []string{string(pod.UID)}, nil
}

// watchError logs list and watch failures; the informer retries them itself.
func (p *Pods) watchError(_ context.Context, _ *cache.Reflector, err error) {
	switch {
	case errors.Is(err, io.EOF):
		// The server closed the watch: normal, it is re-established.
	case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
		p.log.Debug("pod watch expired, relisting", "node", p.node, "err", err)
	default:
		p.log.Warn("pod list/watch failed, retrying", "node", p.node, "err", err)
	}
}
