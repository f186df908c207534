package agent

import (
	"context"
	"errors"

	"github.com/intransit/intransit/pkg/api"
)

func (a *Agent) serveAPI(ctx context.Context, socket string) (func(), error) {
	return api.Serve(ctx, socket, apiBackend{a}, a.log)
}

// apiBackend adapts the agent to api.Backend.
type apiBackend struct{ a *Agent }

func (b apiBackend) Status() api.Status { return b.a.Status() }

func (b apiBackend) AuditRecent() [][]byte { return b.a.audit.Recent() }

func (b apiBackend) AuditSubscribe() (<-chan []byte, func()) { return b.a.audit.Subscribe(1024) }

func (b apiBackend) Recordings() (api.Recordings, error) {
	a := b.a
	if a.store == nil {
		return api.Recordings{}, errors.New("no rule records sessions (rules[].record), so there are no recordings")
	}
	cfg := a.state.Load().cfg
	r := api.Recordings{Dir: a.store.Dir(), KeyFile: cfg.Recordings.KeyFile, Active: []string{}}
	a.mu.Lock()
	for id := range a.sessions {
		r.Active = append(r.Active, id)
	}
	a.mu.Unlock()
	return r, nil
}
