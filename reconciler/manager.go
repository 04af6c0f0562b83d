// Package reconciler is Flotilla's controller manager: one shared watch
// cache over the store, and one rate-limited work queue with workers per
// controller (deployment, replicaset, statefulset, gc, scheduler,
// nodelifecycle, nodeipam, endpointslice, loadbalancer, volumebinding), started and stopped
// together. Each controller lives in its own folder; this package only
// wires them. SimKubelet, a stand-in node agent for tests and benchmarks,
// lives here too.
package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/flotilla-dev/flotilla/cluster/events"
	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/reconciler/deployment"
	"github.com/flotilla-dev/flotilla/reconciler/endpointslice"
	"github.com/flotilla-dev/flotilla/reconciler/gc"
	"github.com/flotilla-dev/flotilla/reconciler/loadbalancer"
	"github.com/flotilla-dev/flotilla/reconciler/nodeipam"
	"github.com/flotilla-dev/flotilla/reconciler/nodelifecycle"
	"github.com/flotilla-dev/flotilla/reconciler/replicaset"
	"github.com/flotilla-dev/flotilla/reconciler/scheduler"
	"github.com/flotilla-dev/flotilla/reconciler/statefulset"
	"github.com/flotilla-dev/flotilla/reconciler/volumebinding"
)

// Controller names accepted in Config.Controllers.
const (
	Deployment    = "deployment"
	ReplicaSet    = "replicaset"
	GC            = "gc"
	Scheduler     = "scheduler"
	NodeLifecycle = "nodelifecycle"
	NodeIPAM      = "nodeipam"
	EndpointSlice = "endpointslice"
	LoadBalancer  = "loadbalancer"
	StatefulSet   = "statefulset"
	VolumeBinding = "volumebinding"
	EventTTL      = "eventttl"
)

// registration is one row of the registry: a controller's name, how many
// workers it gets, which object its keys name (where its outcomes land)
// and how it is built.
type registration struct {
	name string
	// workers is the controller's concurrency; 0 means Config.Workers.
	workers int
	// subject maps its keys to objects; nil: its keys name none.
	subject controller.SubjectFunc
	build   func(d controller.Deps, cfg Config) controller.Controller
}

// registry is every controller, in start order.
var registry = []registration{
	{name: Deployment, subject: controller.KeysOf("deployments"),
		build: func(d controller.Deps, _ Config) controller.Controller { return deployment.New(d) }},
	{name: ReplicaSet, subject: controller.KeysOf("replicasets"),
		build: func(d controller.Deps, _ Config) controller.Controller { return replicaset.New(d) }},
	{name: StatefulSet, subject: controller.KeysOf("statefulsets"),
		build: func(d controller.Deps, _ Config) controller.Controller { return statefulset.New(d) }},
	{name: GC, subject: gc.Subject,
		build: func(d controller.Deps, _ Config) controller.Controller { return gc.New(d, gc.Config{}) }},
	// One pass at a time: a pass schedules every pending pod.
	{name: Scheduler, workers: 1,
		build: func(d controller.Deps, cfg Config) controller.Controller {
			return scheduler.New(d, scheduler.Config{Settle: cfg.SchedulingSettle, ExpectedNodes: cfg.ExpectedNodes, Metrics: cfg.schedulerMetrics})
		}},
	{name: NodeLifecycle, subject: controller.KeysOf("nodes"),
		build: func(d controller.Deps, cfg Config) controller.Controller {
			return nodelifecycle.New(d, cfg.Membership, nodelifecycle.Config{
				PodEvictionTimeout: cfg.PodEvictionTimeout, NodeMonitorGracePeriod: cfg.NodeMonitorGracePeriod,
			})
		}},
	{name: NodeIPAM, subject: controller.KeysOf("nodes"),
		build: func(d controller.Deps, cfg Config) controller.Controller {
			return nodeipam.New(d, nodeipam.Config{ClusterCIDR: cfg.ClusterCIDR, MaskSize: cfg.PodCIDRMaskSize})
		}},
	{name: EndpointSlice, subject: controller.KeysOf("services"),
		build: func(d controller.Deps, _ Config) controller.Controller { return endpointslice.New(d) }},
	{name: LoadBalancer, subject: controller.KeysOf("services"),
		build: func(d controller.Deps, cfg Config) controller.Controller {
			return loadbalancer.New(d, loadbalancer.Config{Pool: cfg.LoadBalancerPool})
		}},
	{name: EventTTL, workers: 1,
		build: func(d controller.Deps, cfg Config) controller.Controller {
			return eventTTL{&events.Collector{Store: d.Store, TTL: cfg.EventTTL, Clock: d.Clock, Log: d.Log}}
		}},
	{name: VolumeBinding, subject: volumebinding.Subject,
		build: func(d controller.Deps, cfg Config) controller.Controller {
			return volumebinding.New(d, volumebinding.Config{LocalVolumeRoot: cfg.LocalVolumeRoot})
		}},
}

// AllControllers is the default set, in start order.
var AllControllers = func() []string {
	out := make([]string, len(registry))
	for i, r := range registry {
		out[i] = r.name
	}
	return out
}()

// Config configures a Manager. Zero values mean the defaults.
type Config struct {
	// Store is where desired and observed state are read and written. Required.
	Store store.Interface
	// Logger receives the manager's and controllers' logs. Default: discard.
	Logger *slog.Logger
	// Clock is the time the controllers and their planners are given.
	// Default: the wall clock (tests give testkit.NewFakeClock). The work
	// queues' delays run on the wall clock.
	Clock clock.Clock
	// Workers is the number of concurrent reconciles per controller
	// (the scheduler always runs one pass at a time). Default 2; more
	// helps big clusters, costs store write contention.
	Workers int
	// ResyncPeriod re-delivers every cached object to the controllers, the
	// safety net for missed events. Default 30s; negative disables it.
	// Shorter converges faster after a lost event, costs CPU on an idle
	// cluster (but no store writes: unchanged state writes nothing).
	ResyncPeriod time.Duration
	// MaxBackoff caps the per-key retry back-off after failures and
	// panics. Default 30s.
	MaxBackoff time.Duration
	// ClusterCIDR is the range nodes' pod CIDRs are taken from. Default
	// 10.244.0.0/16; the overlay routes it between nodes.
	ClusterCIDR *net.IPNet
	// PodCIDRMaskSize is the size of each node's pod CIDR. Default 24
	// (254 pods a node, 256 nodes in the default cluster CIDR).
	PodCIDRMaskSize int
	// Controllers names the controllers to run. Default AllControllers.
	Controllers []string
	// Membership is the gossip view the node lifecycle controller reacts to
	// (a failed or departed member turns its Node's Ready to Unknown at
	// once). Default nil: no gossip, nodes are judged by their agent
	// heartbeat alone (a single node, or tests).
	Membership nodelifecycle.Membership
	// PodEvictionTimeout is how long a node stays not Ready before its pods
	// are deleted and recreated elsewhere by their owners (server flag
	// --pod-eviction-timeout). Default 30s. Shorter moves workloads sooner;
	// longer rides out a reboot without restarting every pod elsewhere.
	PodEvictionTimeout time.Duration
	// NodeMonitorGracePeriod is how old an agent's heartbeat may be before
	// a node that gossip does not vouch for is marked Unknown. Default 50s;
	// it must exceed the agents' heartbeat interval (40s).
	NodeMonitorGracePeriod time.Duration
	// LoadBalancerPool is where Services of type LoadBalancer get their
	// addresses (server flag --lb-pool; ipalloc.ParsePool). Default empty:
	// they stay pending, which is logged once per service.
	LoadBalancerPool ipalloc.Pool
	// LocalVolumeRoot is where the volumes that the built-in "local"
	// StorageClass provisions live on each node, as ROOT/NODE/VOLUME
	// (server flag --local-volume-root; an absolute path). Default
	// /var/lib/flotilla/volumes. The node's name in the path keeps nodes
	// that share a filesystem (flotilla lab) apart.
	LocalVolumeRoot string
	// SchedulingSettle is how long the scheduler waits at start, before it
	// binds anything, for the Nodes it knows to be Ready (and
	// ExpectedNodes of them), so that replicas committed before the nodes
	// came up spread over them (server flag --scheduling-settle). Default
	// scheduler.DefaultSettle (10s); negative: bind at once.
	SchedulingSettle time.Duration
	// Events makes each controller's Recorder (component NAME-controller,
	// "default-scheduler" for the scheduler). Default nil: Events are
	// dropped (tests that do not look at them).
	Events func(component string) events.Recorder
	// EventTTL is how long an Event is kept after it was last seen: the
	// eventttl controller deletes older ones. Default events.DefaultTTL.
	EventTTL time.Duration
	// ExpectedNodes is how many Ready nodes end the settling early (server
	// flag --expect-nodes). Default 0: the nodes the store knows, once
	// there is at least one.
	ExpectedNodes int
	// Metrics receives the controllers' families (workqueue_*, reconcile
	// and scheduling latencies); nil: none are recorded.
	Metrics prometheus.Registerer

	schedulerMetrics *scheduler.Metrics // from Metrics, for the registry's build
}

// Manager runs the controllers over one shared cache.
type Manager struct {
	cfg      Config
	log      *slog.Logger
	cache    *cache.Cache
	loops    map[string]*controller.Loop
	order    []*controller.Loop
	starters []controller.Starter

	mu      sync.Mutex
	running bool
}

// New validates cfg and builds the controllers (nothing runs until Run).
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil {
		return nil, errors.New("reconciler: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Workers < 0 {
		return nil, fmt.Errorf("reconciler: Config.Workers is %d, want >= 0", cfg.Workers)
	}
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	switch {
	case cfg.ResyncPeriod == 0:
		cfg.ResyncPeriod = 30 * time.Second
	case cfg.ResyncPeriod < 0:
		cfg.ResyncPeriod = 0
	}
	if cfg.PodEvictionTimeout < 0 {
		return nil, fmt.Errorf("reconciler: Config.PodEvictionTimeout (--pod-eviction-timeout) is %s, want >= 0", cfg.PodEvictionTimeout)
	}
	if cfg.NodeMonitorGracePeriod < 0 {
		return nil, fmt.Errorf("reconciler: Config.NodeMonitorGracePeriod is %s, want >= 0", cfg.NodeMonitorGracePeriod)
	}
	if cfg.ExpectedNodes < 0 {
		return nil, fmt.Errorf("reconciler: Config.ExpectedNodes (--expect-nodes) is %d, want >= 0", cfg.ExpectedNodes)
	}
	if err := (volumebinding.Config{LocalVolumeRoot: cfg.LocalVolumeRoot}).Validate(); err != nil {
		return nil, fmt.Errorf("reconciler: Config.LocalVolumeRoot: %w", err)
	}
	if cfg.ClusterCIDR != nil {
		mask := cfg.PodCIDRMaskSize
		if mask == 0 {
			mask = nodeipam.DefaultMaskSize
		}
		if _, err := nodeipam.Next(cfg.ClusterCIDR, mask, nil); err != nil {
			return nil, fmt.Errorf("reconciler: Config.ClusterCIDR and PodCIDRMaskSize: %w", err)
		}
	}
	if cfg.Controllers == nil {
		cfg.Controllers = AllControllers
	}
	log := cfg.Logger.With("subsystem", "reconciler")
	m := &Manager{cfg: cfg, log: log, cache: cache.New(cfg.Store, log, cfg.ResyncPeriod), loops: map[string]*controller.Loop{}}
	status := controller.NewStatusWriter(cfg.Store, m.cache, cfg.Clock)
	var metrics *controller.Metrics
	if cfg.Metrics != nil {
		metrics = controller.NewMetrics(cfg.Metrics)
		cfg.schedulerMetrics = scheduler.NewMetrics(cfg.Metrics)
	}
	for _, name := range cfg.Controllers {
		reg, ok := lookup(name)
		if !ok {
			return nil, fmt.Errorf("reconciler: Config.Controllers: unknown controller %q (known: %v)", name, AllControllers)
		}
		if m.loops[name] != nil {
			return nil, fmt.Errorf("reconciler: Config.Controllers: %q named twice", name)
		}
		workers := reg.workers
		if workers == 0 {
			workers = cfg.Workers
		}
		q := controller.NewMeteredQueue(name, cfg.MaxBackoff, metrics)
		clog := log.With("controller", name)
		rec := events.Nop
		if cfg.Events != nil {
			rec = cfg.Events(component(name))
		}
		c := reg.build(controller.Deps{Name: name, Store: cfg.Store, Cache: m.cache, Queue: q, Clock: cfg.Clock, Log: clog, Status: status, Events: rec}, cfg)
		loop := controller.NewLoop(controller.LoopConfig{Name: name, Controller: c, Queue: q, Workers: workers,
			Subject: reg.subject, Status: status, Log: clog, Metrics: metrics})
		m.loops[name] = loop
		m.order = append(m.order, loop)
		if s, ok := c.(controller.Starter); ok {
			m.starters = append(m.starters, s)
		}
	}
	return m, nil
}

// component is the source.component of a controller's Events, as
// kube-controller-manager and kube-scheduler name theirs.
func component(name string) string {
	if name == Scheduler {
		return "default-scheduler"
	}
	return name + "-controller"
}

func lookup(name string) (registration, bool) {
	for _, r := range registry {
		if r.name == name {
			return r, true
		}
	}
	return registration{}, false
}

// Reconciles is how many reconciles the named controller has finished (0
// for one that does not run): tests wait for passes with it instead of
// sleeping.
func (m *Manager) Reconciles(name string) uint64 {
	if l := m.loops[name]; l != nil {
		return l.Reconciles()
	}
	return 0
}

// Idle reports whether every controller is idle: no key queued and none
// being reconciled (keys waiting out a delay do not count).
func (m *Manager) Idle() bool {
	for _, l := range m.order {
		if !l.Idle() {
			return false
		}
	}
	return true
}

// Run starts the cache, waits for its first full list (so no controller acts
// on a partial view, e.g. creating pods that exist but are not listed yet),
// then runs every controller until ctx ends. It returns after all workers
// have stopped. A Manager runs once.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("reconciler: manager already ran")
	}
	m.running = true
	m.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		m.cache.Wait()
	}()
	m.cache.Start(ctx)
	if !m.cache.WaitForSync(ctx) {
		return ctx.Err()
	}
	m.log.Info("controllers starting", "controllers", m.cfg.Controllers, "workers", m.cfg.Workers, "resync", m.cfg.ResyncPeriod)
	var wg sync.WaitGroup
	for _, l := range m.order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Run(ctx)
		}()
	}
	for _, s := range m.starters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := controller.Safely(func() error { s.Start(ctx); return nil }); err != nil {
				m.log.Error("a controller's event source panicked; the resync stands in for it", "err", err)
			}
		}()
	}
	wg.Wait()
	m.log.Info("controllers stopped")
	return nil
}
