package identity

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

func TestInClusterNeedsNodeName(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	_, _, err := InCluster()
	if err == nil || !strings.Contains(err.Error(), "NODE_NAME") || !strings.Contains(err.Error(), "spec.nodeName") {
		t.Fatalf("err = %v, want one naming NODE_NAME and the downward API field", err)
	}
}

func TestInClusterOutsideACluster(t *testing.T) {
	t.Setenv("NODE_NAME", testNode)
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	_, _, err := InCluster()
	if !errors.Is(err, rest.ErrNotInCluster) {
		t.Fatalf("err = %v, want rest.ErrNotInCluster", err)
	}
}
