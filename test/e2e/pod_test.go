package e2e

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/intransit/intransit/internal/testutil"
)

// TestPodClientUpgraded: a client in another network namespace (a pod on
// the node) dials a protected port in plaintext; its connect goes to the
// agent on proxy.podAddress and leaves the node inside TLS.
func TestPodClientUpgraded(t *testing.T) {
	testutil.RequireRoot(t)
	pod := testutil.NewPeerNS(t, 99)
	p := newPKI(t)
	cert := p.ca.Issue(t, p.dir, testutil.Leaf{CommonName: "node-service", IPs: []net.IP{pod.HostIP}})
	srv := startTLSServer(t, "tcp4", pod.HostIP.String()+":0", cert.TLS, echo)
	port := freePort(t)
	r := startAgent(t, agentOpts{enter: true, podAddr: pod.HostIP.String(),
		rules: enforceRule("svc", port, srv.port, ", caFile: "+p.ca.File)})
	c, err := pod.Dial(fmt.Sprintf("%s:%d", pod.HostIP, port), 3*time.Second)
	if err != nil {
		t.Fatalf("pod connect: %v", err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "from the pod"); err != nil || got != "from the pod" {
		t.Fatalf("echo %q, %v", got, err)
	}
	if srv.accepted.Load() != 1 {
		t.Fatalf("TLS server saw %d TLS sessions, want 1", srv.accepted.Load())
	}
	evs := r.events(t, countAtLeast(1, "event", "session_start", "verdict", "UPGRADED"))
	if up := having(evs, "event", "session_start", "verdict", "UPGRADED"); len(up) != 1 {
		t.Fatalf("audit: %v", evs)
	}
}
