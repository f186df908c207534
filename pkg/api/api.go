// Package api is the agent's local control API: HTTP over a unix socket,
// served by the agent and used by the CLI (status, audit tail).
package api

import (
	"bytes"
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
	"slices"
	"syscall"
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

// Recordings tells the CLI where the agent keeps session recordings, so it
// reads them directly (it runs as root on the same host), and which are
// still being written.
type Recordings struct {
	Dir     string   `json:"dir"`
	KeyFile string   `json:"keyFile,omitempty"`
	Active  []string `json:"active"` // ids of sessions still open
}

// Backend is what the agent provides to the API.
type Backend interface {
	Status() Status
	Recordings() (Recordings, error)
	// AuditRecent returns the last audit lines; AuditSubscribe follows new
	// ones until cancel is called (slow readers lose lines, counted).
	AuditRecent() [][]byte
	AuditSubscribe() (<-chan []byte, func())
}

// Serve listens on the unix socket (mode 0600: only root talks to the agent)
// and serves the API until ctx is done.
func Serve(ctx context.Context, socket string, b Backend, log *slog.Logger) (stop func(), err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("api.socket %q: %w", socket, err)
	}
	if err := removeStale(socket); err != nil {
		return nil, err
	}
	// The socket file is created by bind with the mode of the socket's
	// inode less the umask: set 0600 on the inode before bind, so there is
	// no moment when the file is open to others (a chmod after bind leaves
	// one). The chmod after bind stays for systems that ignore it.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var ferr error
		if err := c.Control(func(fd uintptr) { ferr = syscall.Fchmod(int(fd), 0o600) }); err != nil {
			return err
		}
		return ferr
	}}
	ln, err := lc.Listen(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("api.socket %q: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api.socket %q: %w", socket, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, b.Status())
	})
	mux.HandleFunc("GET /v1/recordings", func(w http.ResponseWriter, _ *http.Request) {
		r, err := b.Recordings()
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, r)
	})
	mux.HandleFunc("GET /v1/audit", func(w http.ResponseWriter, r *http.Request) {
		serveAudit(w, r, b)
	})
	// No write timeout: /v1/audit?follow=true streams for as long as the
	// client reads.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
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

// removeStale removes a socket file left by a killed agent (bind would
// fail on it). Only a socket that refuses connections is stale: one that
// accepts is another agent's, and one that cannot be probed (permissions,
// a full backlog) is left alone rather than stolen from a live agent.
// Anything else at the path is not ours to remove.
func removeStale(socket string) error {
	fi, err := os.Lstat(socket)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("api.socket %q: %w", socket, err)
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("api.socket %q: exists and is not a socket: refusing to replace it", socket)
	}
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("api.socket %q: another agent is serving it", socket)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("api.socket %q: cannot tell whether another agent is serving it: %w", socket, err)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("api.socket %q: remove the stale socket: %w", socket, err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// serveAudit writes the recent audit lines, then with follow=true streams
// new ones as JSON lines until the client goes away.
func serveAudit(w http.ResponseWriter, r *http.Request, b Backend) {
	follow := r.URL.Query().Get("follow") == "true"
	var sub <-chan []byte
	cancel := func() {}
	if follow {
		// Subscribe before reading the ring so no line falls in between.
		var unsubscribe func()
		sub, unsubscribe = b.AuditSubscribe()
		if unsubscribe != nil {
			cancel = unsubscribe
		}
	}
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	recent := b.AuditRecent()
	for _, l := range recent {
		if err := writeLine(w, l); err != nil {
			return
		}
	}
	if !follow {
		return
	}
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	// Lines logged between the subscription and the read of the ring are
	// in both: the subscription's first lines that repeat the end of the
	// recent ones, in order, are not sent twice.
	dup := recent
	for {
		select {
		case <-r.Context().Done():
			return
		case l, ok := <-sub:
			if !ok {
				return
			}
			if len(dup) > 0 {
				if i := slices.IndexFunc(dup, func(d []byte) bool { return bytes.Equal(d, l) }); i >= 0 {
					dup = dup[i+1:]
					continue
				}
				dup = nil
			}
			if err := writeLine(w, l); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
	}
}

// writeLine writes one JSON line, adding the newline if the line lacks it
// (two lines run together would be one unreadable line).
func writeLine(w io.Writer, l []byte) error {
	if len(l) == 0 {
		return nil
	}
	if _, err := w.Write(l); err != nil {
		return err
	}
	if l[len(l)-1] != '\n' {
		_, err := w.Write([]byte{'\n'})
		return err
	}
	return nil
}

// Client talks to the agent behind a socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the agent's socket.
//
// Every request uses its own connection: a Client makes one or two
// requests, and an idle kept-alive connection would stay open (holding a
// goroutine here and in the agent) for as long as the process runs, since
// nothing closes the Client's private transport.
func NewClient(socket string) *Client {
	return &Client{socket: socket, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}}
}

// get performs GET path; the caller closes the body.
func (c *Client) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://intransit"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach the agent at %s: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("agent %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	return resp, nil
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.get(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode agent %s: %w", path, err)
	}
	return nil
}

// Status asks the agent for its status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.getJSON(ctx, "/v1/status", &s)
	return s, err
}

// Recordings asks the agent where its recordings are.
func (c *Client) Recordings(ctx context.Context) (Recordings, error) {
	var r Recordings
	err := c.getJSON(ctx, "/v1/recordings", &r)
	return r, err
}

// Audit returns the audit stream: the recent lines, then with follow the
// new ones until ctx ends. The caller closes it.
func (c *Client) Audit(ctx context.Context, follow bool) (io.ReadCloser, error) {
	path := "/v1/audit"
	if follow {
		path += "?follow=true"
	}
	resp, err := c.get(ctx, path)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// GetStatus asks the agent behind socket for its status.
func GetStatus(ctx context.Context, socket string) (Status, error) {
	return NewClient(socket).Status(ctx)
}
