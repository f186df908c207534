package agent

import (
	"context"

	"github.com/intransit/intransit/pkg/api"
)

func (a *Agent) serveAPI(ctx context.Context, socket string) (func(), error) {
	return api.Serve(ctx, socket, a.Status, a.log)
}
