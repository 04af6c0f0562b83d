package svcview

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// WatchConfig configures Watch. Zero values mean the defaults.
type WatchConfig struct {
	// Store is read with List and Watch (the agent's API client). Required.
	Store store.Interface
	// Coalesce merges a burst of changes into one snapshot: a new snapshot
	// is built at most this long after the first change of a burst.
	// Default 50ms: short against readiness probe periods (seconds), long
	// enough that a commit of 1,000 services is one snapshot, not 1,000.
	Coalesce time.Duration
	// Logger; default discard.
	Logger *slog.Logger
}

// watched are the resources a snapshot is made of.
var watched = []string{"services", "endpointslices", "ingresses", "secrets"}

// Watch lists and watches Services, EndpointSlices, Ingresses and Secrets
// of every namespace and calls fn with a new Snapshot after each change
// (coalesced), starting once every resource has been listed. fn runs on
// Watch's goroutine, one call at a time. When the store is unreachable the
// last snapshot stays in force (no call is made) and Watch retries with
// back-off: the node keeps serving what it knew. Watch returns when ctx
// ends.
func Watch(ctx context.Context, cfg WatchConfig, fn func(*Snapshot)) {
	if cfg.Coalesce <= 0 {
		cfg.Coalesce = 50 * time.Millisecond
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &view{objs: map[string]map[string]schema.Object{}, listed: map[string]bool{}, changed: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	for _, res := range watched {
		v.objs[res] = map[string]schema.Object{} // before any goroutine runs
	}
	for _, res := range watched {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.follow(ctx, cfg.Store, res, log)
		}()
	}
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-v.changed:
		}
		t := time.NewTimer(cfg.Coalesce)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if snap := v.snapshot(); snap != nil {
			fn(snap)
		}
	}
}

// view is the objects seen so far, by resource and namespace/name.
type view struct {
	mu      sync.Mutex
	objs    map[string]map[string]schema.Object
	listed  map[string]bool
	changed chan struct{}
}

func (v *view) poke() {
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

// follow keeps one resource's objects current until ctx ends.
func (v *view) follow(ctx context.Context, st store.Interface, res string, log *slog.Logger) {
	retry := 500 * time.Millisecond
	for ctx.Err() == nil {
		err := v.listAndWatch(ctx, st, res)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			retry = 500 * time.Millisecond
			continue
		}
		log.Warn("service view: list/watch failed; keeping the last view", "resource", res, "err", err, "retry", retry)
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(retry*2, 10*time.Second)
	}
}

func (v *view) listAndWatch(ctx context.Context, st store.Interface, res string) error {
	opts := store.ListOptions{}
	if res == "secrets" {
		// Only the ingresses' certificates: all a node may list.
		opts.FieldSelector = "type=" + string(corev1.SecretTypeTLS)
	}
	objs, rev, err := st.List(ctx, res, opts)
	if err != nil {
		return fmt.Errorf("list %s: %w", res, err)
	}
	fresh := make(map[string]schema.Object, len(objs))
	for _, o := range objs {
		fresh[key(o)] = o
	}
	v.mu.Lock()
	v.objs[res] = fresh
	v.listed[res] = true
	v.mu.Unlock()
	v.poke()
	ch, err := st.Watch(ctx, res, opts, rev)
	if err != nil {
		return fmt.Errorf("watch %s from revision %d: %w", res, rev, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				return nil // closed (compacted, server restart): list again
			}
			v.mu.Lock()
			if ev.Type == store.Deleted {
				delete(v.objs[res], key(ev.Object))
			} else {
				v.objs[res][key(ev.Object)] = ev.Object
			}
			v.mu.Unlock()
			v.poke()
		}
	}
}

func key(o schema.Object) string { return o.GetNamespace() + "/" + o.GetName() }

// snapshot builds a Snapshot of the current objects, or nil while some
// resource has not been listed yet.
func (v *view) snapshot() *Snapshot {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, res := range watched {
		if !v.listed[res] {
			return nil
		}
	}
	var (
		svcs   []*corev1.Service
		slices []*discoveryv1.EndpointSlice
		ings   []*networkingv1.Ingress
		secs   []*corev1.Secret
	)
	for _, o := range v.objs["services"] {
		if s, ok := o.(*corev1.Service); ok {
			svcs = append(svcs, s)
		}
	}
	for _, o := range v.objs["endpointslices"] {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			slices = append(slices, s)
		}
	}
	for _, o := range v.objs["ingresses"] {
		if s, ok := o.(*networkingv1.Ingress); ok {
			ings = append(ings, s)
		}
	}
	for _, o := range v.objs["secrets"] {
		if s, ok := o.(*corev1.Secret); ok && s.Type == corev1.SecretTypeTLS {
			secs = append(secs, s)
		}
	}
	return NewSnapshot(svcs, slices, ings, secs)
}
