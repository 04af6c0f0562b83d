package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// The runtime as the agent sees it: its events, and whether it answers.
//
//	                  WatchEvents (EventWatcher)             Ping every RuntimeCheckInterval (Pinger)
//	                          │                                        │
//	   subscribed ─▶ events live: resync the runtime (re-list,         │ fails ─▶ down
//	                 adopt, remove orphans and duplicates), every      │ answers ─▶ up (if the
//	                 worker re-reads its pod; then each event pokes    │            stream is live)
//	                 the worker of its pod
//	   stream ends ─▶ down (the error), reconnect with back-off 250ms … 5s
//
//	   down: Ready=False, reason ContainerRuntimeDown, message "container runtime
//	         is down: <error naming the socket>"; workers do not touch the runtime
//	   back: Ready=True; resync the runtime; workers retry what failed at once
//
// A runtime without events is polled: every SyncInterval the agent re-lists
// it and every worker re-reads its pod.

// Reasons of the node's Ready condition.
const (
	reasonAgentReady  = "AgentReady"
	reasonRuntimeDown = "ContainerRuntimeDown"
)

// runtimeHealth is what the agent knows of its runtime. Its own lock: read
// by workers, the node loop and the main loop.
type runtimeHealth struct {
	mu         sync.Mutex
	streamErr  error // the event stream is not live (nil when live or not used)
	pingErr    error // the last ping failed
	eventsLive bool  // events are streaming: runtime state is event-driven
	since      time.Time
}

func (h *runtimeHealth) errLocked() error {
	if h.streamErr != nil {
		return h.streamErr
	}
	return h.pingErr
}

// runtimeErr is nil when the runtime is up, else why it is down.
func (a *Agent) runtimeErr() error {
	a.health.mu.Lock()
	defer a.health.mu.Unlock()
	return a.health.errLocked()
}

// eventsLive reports whether the runtime's events drive the workers now.
func (a *Agent) eventsLive() bool {
	a.health.mu.Lock()
	defer a.health.mu.Unlock()
	return a.health.eventsLive && a.health.errLocked() == nil
}

// updateHealth changes the runtime's state under the lock and acts on a
// change between up and down.
func (a *Agent) updateHealth(change func(h *runtimeHealth)) {
	a.health.mu.Lock()
	was := a.health.errLocked()
	change(&a.health)
	now := a.health.errLocked()
	if (was == nil) != (now == nil) {
		a.health.since = a.clock.Now()
	}
	a.health.mu.Unlock()
	switch {
	case was == nil && now != nil:
		a.log.Warn("container runtime is down; the node is NotReady until it answers", "err", now)
		poke(a.nodeNow)
	case was != nil && now == nil:
		a.log.Info("container runtime is back; re-listing its pods")
		a.runtimeRecovered()
		poke(a.nodeNow)
	case now != nil && was.Error() != now.Error():
		poke(a.nodeNow) // the message names the last error
	}
}

// runtimeRecovered runs when the runtime answers again: every worker
// re-reads its pod and retries at once what failed while it was down, and
// the runtime is re-listed (a pod lost meanwhile is recreated, one left
// half-made is adopted or removed).
func (a *Agent) runtimeRecovered() {
	a.mu.Lock()
	for _, w := range a.workers {
		w.runtimeBack()
	}
	a.mu.Unlock()
	poke(a.resyncNow)
}

// runtimeLoop follows the runtime's events and pings it, until ctx ends.
func (a *Agent) runtimeLoop(ctx context.Context) {
	if p, ok := a.cfg.Runtime.(runtimeapi.Pinger); ok {
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.pingLoop(ctx, p) }()
	}
	ew, ok := a.cfg.Runtime.(runtimeapi.EventWatcher)
	if !ok {
		return
	}
	const first, most = 250 * time.Millisecond, 5 * time.Second
	retry := first
	for {
		err := ew.WatchEvents(ctx, func() {
			retry = first
			a.updateHealth(func(h *runtimeHealth) { h.streamErr, h.eventsLive = nil, true })
			a.log.Debug("following the container runtime's events")
			a.eventsSubscribed()
		}, a.onRuntimeEvent)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, runtimeapi.ErrEventsUnsupported) {
			a.log.Info("the container runtime streams no events; polling it", "every", a.cfg.SyncInterval)
			a.updateHealth(func(h *runtimeHealth) { h.streamErr, h.eventsLive = nil, false })
			return
		}
		if err == nil {
			err = errors.New("the event stream ended")
		}
		a.updateHealth(func(h *runtimeHealth) { h.streamErr = err })
		poke(a.checkNow)
		select {
		case <-ctx.Done():
			return
		case <-a.clock.After(retry):
		}
		retry = min(retry*2, most)
	}
}

// eventsSubscribed: events missed before the stream was live are covered
// by a runtime resync, and every worker re-reads its pod.
func (a *Agent) eventsSubscribed() {
	a.mu.Lock()
	for _, w := range a.workers {
		w.markStale()
	}
	a.mu.Unlock()
	poke(a.resyncNow)
}

// onRuntimeEvent pokes the worker of the event's pod, which re-reads it.
func (a *Agent) onRuntimeEvent(ev runtimeapi.RuntimeEvent) {
	a.mu.Lock()
	w := a.workers[ev.PodUID]
	a.mu.Unlock()
	if w != nil {
		a.log.Debug("runtime event", "action", ev.Action, "uid", ev.PodUID, "container", ev.ContainerID)
		w.markStale()
	}
}

// pingLoop pings the runtime every RuntimeCheckInterval, and at once when
// something suggests it is gone (checkNow).
func (a *Agent) pingLoop(ctx context.Context, p runtimeapi.Pinger) {
	for {
		pctx, cancel := context.WithTimeout(ctx, min(a.cfg.RuntimeTimeout, 10*time.Second))
		err := p.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %w", runtimeapi.ErrTimeout, err)
		}
		a.updateHealth(func(h *runtimeHealth) { h.pingErr = err })
		wait := a.cfg.RuntimeCheckInterval
		if err != nil {
			wait = min(wait, time.Second) // notice soon that it is back
		}
		select {
		case <-ctx.Done():
			return
		case <-a.checkNow:
		case <-a.clock.After(wait):
		}
	}
}

// runtimeCallFailed is told of a failed runtime call: unless the runtime
// only said "not found", it is pinged now, so an outage shows at once.
func (a *Agent) runtimeCallFailed(err error) {
	if err != nil && !errors.Is(err, runtimeapi.ErrNotFound) && !errors.Is(err, context.Canceled) {
		poke(a.checkNow)
	}
}

// readyCondition is the status, reason and message of the node's Ready
// condition: the agent runs, and so does its container runtime.
func (a *Agent) readyCondition() (bool, string, string) {
	if err := a.runtimeErr(); err != nil {
		return false, reasonRuntimeDown, "container runtime is down: " + err.Error()
	}
	return true, reasonAgentReady, "flotilla agent is posting ready status"
}

// poke sends on a trigger channel of capacity 1 without blocking: repeated
// pokes merge.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
