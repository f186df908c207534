// Package api is the agent's local control API: HTTP over a unix socket,
// served by the agent and used by the CLI (status, audit tail).
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Status is what `intransit status` shows.
type Status struct {
	Version        string            `json:"version"`
	PID            int               `json:"pid"`
	Started        time.Time         `json:"started"`
	Ready          bool              `json:"ready"`
	Cgroup         string            `json:"cgroup"`
	PinPath        string            `json:"pinPath"`
	Proxy          []string          `json:"proxy"`
	Metrics        string            `json:"metrics,omitempty"`
	Programs       []Program         `json:"programs"`
	Rules          []Rule            `json:"rules"`
	Datapath       map[string]uint64 `json:"datapath"`
	Connections    map[string]uint64 `json:"connections"` // "rule/VERDICT" -> count
	Maps           []MapFill         `json:"maps"`
	ActiveSessions []Session         `json:"activeSessions"`
	RecentAudit    []json.RawMessage `json:"recentAudit,omitempty"`
}

// Program is one attached BPF program.
type Program struct {
	Name   string `json:"name"`
	Pinned string `json:"pinned"`
	Cgroup uint64 `json:"cgroupId"`
	ProgID uint32 `json:"progId,omitempty"`
}

// Rule summarises a configured rule.
type Rule struct {
	Name         string   `json:"name"`
	Mode         string   `json:"mode"`
	Ports        []int    `json:"ports"`
	Destinations []string `json:"destinations,omitempty"`
	Upstream     string   `json:"upstream,omitempty"`
}

// MapFill is a BPF map's fill level.
type MapFill struct {
	Map      string `json:"map"`
	Entries  int    `json:"entries"`
	Capacity int    `json:"capacity"`
}

// Session is an active proxied connection.
type Session struct {
	ID          string    `json:"id"`
	Rule        string    `json:"rule"`
	Source      string    `json:"source"`
	Destination string    `json:"destination"`
	Upstream    string    `json:"upstream"`
	Started     time.Time `json:"started"`
	PID         uint32    `json:"pid"`
	Comm        string    `json:"comm"`
	TLS         string    `json:"tls"`
}

// Serve listens on the unix socket (mode 0600: only root talks to the agent)
// and serves status until ctx is done.
func Serve(ctx context.Context, socket string, status func() Status, log *slog.Logger) (stop func(), err error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("api.socket %q: %w", socket, err)
	}
	// A socket file left by a killed agent would make bind fail.
	if fi, err := os.Lstat(socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return nil, fmt.Errorf("api.socket %q: another agent is serving it", socket)
		}
		_ = os.Remove(socket)
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("api.socket %q: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api.socket %q: %w", socket, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(status())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("local API stopped", "error", err)
		}
	}()
	stopCtx := context.AfterFunc(ctx, func() { srv.Close() })
	return func() {
		stopCtx()
		srv.Close()
		_ = os.Remove(socket)
	}, nil
}

// GetStatus asks the agent behind socket for its status.
func GetStatus(ctx context.Context, socket string) (Status, error) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://intransit/v1/status", nil)
	if err != nil {
		return Status{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("reach the agent at %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return Status{}, fmt.Errorf("agent status: %s: %s", resp.Status, b)
	}
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return Status{}, fmt.Errorf("decode agent status: %w", err)
	}
	return s, nil
}
