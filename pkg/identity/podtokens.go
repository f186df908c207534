package identity

import (
	"context"
	"fmt"
	"time"

	"github.com/intransit/intransit/pkg/auth"
)

// A pod's first connect can come before the agent knows the pod: new
// cgroups are found by a rate-limited walk (Cgroups) and new pods by a watch
// event that may lag the kubelet's. TokenForCgroup retries those misses for
// up to lookupWait rather than failing the connection at once.
const (
	lookupWait = 2 * time.Second
	lookupPoll = 100 * time.Millisecond
)

// PodTokens gives the token for the pod a connecting process belongs to.
type PodTokens struct {
	pods    *Pods
	cgroups *Cgroups
	source  *auth.KubernetesSource
	wait    time.Duration // lookupWait; shorter in tests
}

// NewPodTokens resolves cgroups to pods on pods' node and mints with src.
func NewPodTokens(pods *Pods, cgroups *Cgroups, src *auth.KubernetesSource) *PodTokens {
	return &PodTokens{pods: pods, cgroups: cgroups, source: src, wait: lookupWait}
}

// TokenForCgroup returns a token for the service account of the pod whose
// cgroup (or a cgroup below it) has cgroupID, and that pod.
func (t *PodTokens) TokenForCgroup(ctx context.Context, cgroupID uint64) (string, auth.PodRef, error) {
	pod, err := t.lookup(ctx, cgroupID)
	if err != nil {
		return "", auth.PodRef{}, err
	}
	tok, err := t.source.TokenFor(ctx, pod)
	if err != nil {
		return "", pod, fmt.Errorf("token for pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return tok, pod, nil
}

// lookup resolves cgroupID to its pod, retrying misses that time may fix.
func (t *PodTokens) lookup(ctx context.Context, cgroupID uint64) (auth.PodRef, error) {
	deadline := time.Now().Add(t.wait)
	for {
		pod, retry, err := t.resolve(cgroupID)
		if err == nil || !retry || !time.Now().Before(deadline) {
			return pod, err
		}
		select {
		case <-ctx.Done():
			return auth.PodRef{}, fmt.Errorf("%w (gave up: %w)", err, context.Cause(ctx))
		case <-time.After(lookupPoll):
		}
	}
}

// resolve maps cgroupID to its pod once; retry tells whether a miss may be
// a cgroup or pod too new to be known yet.
func (t *PodTokens) resolve(cgroupID uint64) (pod auth.PodRef, retry bool, err error) {
	path := t.cgroups.Path(cgroupID)
	if path == "" {
		return auth.PodRef{}, cgroupID != 0, fmt.Errorf("cgroup %d not found under the cgroup2 root", cgroupID)
	}
	uid, ok := PodUIDFromCgroup(path)
	if !ok {
		return auth.PodRef{}, false, fmt.Errorf("cgroup %d is not a pod's (path %q)", cgroupID, path)
	}
	pod, ok = t.pods.ByUID(uid)
	if !ok {
		return auth.PodRef{}, true, fmt.Errorf("pod %s not found on node %s (cgroup %q)", uid, t.pods.node, path)
	}
	return pod, false, nil
}
