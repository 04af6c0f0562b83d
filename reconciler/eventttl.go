package reconciler

import (
	"context"

	"github.com/flotilla-dev/flotilla/cluster/events"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
)

// eventTTL runs the events.Collector beside the controllers: Events last
// seen more than Config.EventTTL ago are deleted. It has no keys; its work
// is its Start loop, on the manager's clock.
type eventTTL struct{ c *events.Collector }

var (
	_ controller.Controller = eventTTL{}
	_ controller.Starter    = eventTTL{}
)

func (eventTTL) Reconcile(context.Context, string) (controller.Result, error) {
	return controller.Result{}, nil
}

func (e eventTTL) Start(ctx context.Context) { e.c.Run(ctx) }
