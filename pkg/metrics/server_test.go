package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var notReady atomic.Pointer[error]
	startErr := errors.New("bpf programs not attached")
	notReady.Store(&startErr)
	ready := func() error {
		if p := notReady.Load(); p != nil {
			return *p
		}
		return nil
	}
	addr, err := Serve(ctx, "127.0.0.1:0", New(testRules), ready, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr.String()

	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	code, body := get(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "bpf programs not attached") {
		t.Errorf("/readyz = %d %q, want 503 with the error", code, body)
	}
	notReady.Store(nil)
	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after ready = %d, want 200", code)
	}
	code, body = get(t, base+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, `intransit_connections_total{rule="postgres",verdict="UPGRADED"} 0`) {
		t.Errorf("/metrics = %d, missing pre-set intransit_connections_total:\n%s", code, body)
	}
	if code, _ := get(t, base+"/nope"); code != http.StatusNotFound {
		t.Errorf("/nope = %d, want 404", code)
	}

	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr.String(), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("server still accepting connections after ctx was canceled")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServeNilReadyIsReady(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := Serve(ctx, "127.0.0.1:0", New(nil), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, "http://"+addr.String()+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d, want 200", code)
	}
}

func TestServeBindErrorNamesAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	_, err = Serve(context.Background(), taken, New(nil), nil, nil)
	if err == nil {
		t.Fatal("Serve on a taken port succeeded")
	}
	if !strings.Contains(err.Error(), taken) {
		t.Errorf("error %q does not name %s", err, taken)
	}
}
