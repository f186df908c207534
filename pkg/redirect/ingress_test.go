package redirect_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/intransit/intransit/internal/testutil"
	"github.com/intransit/intransit/pkg/redirect"
)

// TestIngressEnforcement (threat T15): a service port on this host is
// reachable over loopback (where the local agent forwards) but plaintext from
// another host is dropped (enforce) or reported (audit), with one event per
// connection attempt naming the off-host peer.
func TestIngressEnforcement(t *testing.T) {
	for _, tc := range []struct {
		mode    redirect.Mode
		verdict redirect.Verdict
		reach   bool
	}{
		{redirect.ModeEnforce, redirect.VerdictIngressDrop, false},
		{redirect.ModeAudit, redirect.VerdictIngressAudit, true},
	} {
		t.Run(tc.verdict.String(), func(t *testing.T) {
			testutil.RequireRoot(t)
			peer := testutil.NewPeerNS(t, 93)
			cg := testutil.NewCgroup(t)
			pin := testutil.PinPath(t)
			// The executor's socket belongs to the cgroup it was created in.
			testutil.EnterCgroup(t, cg)
			ln, err := net.Listen("tcp4", "0.0.0.0:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			port := uint16(ln.Addr().(*net.TCPAddr).Port)
			dp, err := redirect.Install(redirect.Options{
				PinPath: pin, Cgroup: cg, IngressCgroup: cg, MapSize: 1024, Mark: 0x1e7a0001, ProxyPort: port + 1,
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer dp.Close()
			if err := dp.SetServices([]redirect.Service{{ID: 7, Port: port, Mode: tc.mode}}); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var events []redirect.Event
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				_ = dp.ReadEvents(ctx, func(e redirect.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }, nil)
			}()

			if c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err != nil {
				t.Fatalf("loopback must pass: %v", err)
			} else {
				c.Close()
			}
			c, err := peer.Dial(fmt.Sprintf("%s:%d", peer.HostIP, port), 700*time.Millisecond)
			if tc.reach != (err == nil) {
				t.Fatalf("off-host dial: err %v, want reachable=%v", err, tc.reach)
			}
			if c != nil {
				c.Close()
			}
			deadline := time.Now().Add(2 * time.Second)
			for {
				mu.Lock()
				n := len(events)
				mu.Unlock()
				if n > 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(events) == 0 {
				t.Fatal("no ingress event")
			}
			e := events[0]
			if e.Verdict != tc.verdict || e.ServiceID != 7 || e.LocalPort != port || e.Peer.Addr().String() != peer.RemoteIP.String() {
				t.Errorf("event = %+v, want %s from %s to port %d", e, tc.verdict, peer.RemoteIP, port)
			}
		})
	}
}
