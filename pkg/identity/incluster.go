package identity

import (
	"fmt"
	"os"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// nodeNameEnv names the environment variable the DaemonSet sets to the
// node's name from the downward API (fieldRef spec.nodeName).
const nodeNameEnv = "NODE_NAME"

// Client-side rate limits: client-go's defaults (5 QPS, burst 10) would
// queue the TokenRequests of a node's pods when they all connect at once,
// as they do when the agent starts.
const (
	clientQPS   = 20
	clientBurst = 50
)

// InCluster returns a clientset for the API server from the in-cluster
// config (the pod's service account) and this node's name from $NODE_NAME.
func InCluster() (kubernetes.Interface, string, error) {
	node := os.Getenv(nodeNameEnv)
	if node == "" {
		return nil, "", fmt.Errorf("%s is not set: the DaemonSet must set it from the downward API (env valueFrom fieldRef fieldPath spec.nodeName)", nodeNameEnv)
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, "", fmt.Errorf("in-cluster API server config: %w", err)
	}
	cfg.UserAgent = "intransit-agent"
	cfg.QPS, cfg.Burst = clientQPS, clientBurst
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("API server client: %w", err)
	}
	return client, node, nil
}
