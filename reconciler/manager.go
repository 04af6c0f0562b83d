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
)

// AllControllers is the default set, in start order.
var AllControllers = []string{Deployment, ReplicaSet, StatefulSet, GC, Scheduler, NodeLifecycle, NodeIPAM, EndpointSlice, LoadBalancer, VolumeBinding}

// Config configures a Manager. Zero values mean the defaults.
type Config struct {
	// Store is where desired and observed state are read and written. Required.
	Store store.Interface
	// Logger receives the manager's and controllers' logs. Default: discard.
	Logger *slog.Logger
	// Clock is the time the planners are given. Default: the wall clock.
	Clock controller.Clock
	// Workers is the number of concurrent reconciles per controller
	// (the scheduler always runs one pass at a time). Default 2; more
	// helps big clusters, costs store write contention.
	Workers int
	// ResyncPeriod re-delivers every cached object to the controllers, the
	// safety net for missed events. Default 30s; negative disables it.
	// Shorter converges faster after a lost event, costs CPU on an idle
	// cluster (but no store writes: unchanged state writes nothing).
	ResyncPeriod time.Duration
	// MaxBackoff caps the per-key retry back-off after failures. Default 30s.
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
}

// Manager runs the controllers over one shared cache.
type Manager struct {
	cfg      Config
	log      *slog.Logger
	cache    *cache.Cache
	loops    []*controller.Loop
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
		cfg.Clock = controller.RealClock{}
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
	if err := (volumebinding.Config{LocalVolumeRoot: cfg.LocalVolumeRoot}).Validate(); err != nil {
		return nil, fmt.Errorf("reconciler: Config.LocalVolumeRoot: %w", err)
	}
	if cfg.Controllers == nil {
		cfg.Controllers = AllControllers
	}
	log := cfg.Logger.With("subsystem", "reconciler")
	m := &Manager{cfg: cfg, log: log, cache: cache.New(cfg.Store, log, cfg.ResyncPeriod)}
	for _, name := range cfg.Controllers {
		var c controller.Controller
		workers := cfg.Workers
		switch name {
		case Deployment:
			c = deployment.New(cfg.Store, cfg.Clock, log)
		case ReplicaSet:
			c = replicaset.New(cfg.Store, cfg.Clock, log)
		case StatefulSet:
			c = statefulset.New(cfg.Store, cfg.Clock, log)
		case GC:
			c = gc.New(cfg.Store, log, nil, nil)
		case Scheduler:
			c = scheduler.New(cfg.Store, cfg.Clock, log)
			workers = 1
		case NodeIPAM:
			c = nodeipam.New(cfg.Store, cfg.ClusterCIDR, cfg.PodCIDRMaskSize, log)
		case LoadBalancer:
			c = loadbalancer.New(cfg.Store, loadbalancer.Config{Pool: cfg.LoadBalancerPool}, log)
		case VolumeBinding:
			c = volumebinding.New(cfg.Store, volumebinding.Config{LocalVolumeRoot: cfg.LocalVolumeRoot}, cfg.Clock, log)
		case EndpointSlice:
			c = endpointslice.New(cfg.Store, log)
		case NodeLifecycle:
			c = nodelifecycle.New(cfg.Store, cfg.Membership, cfg.Clock, log, nodelifecycle.Config{
				PodEvictionTimeout: cfg.PodEvictionTimeout, NodeMonitorGracePeriod: cfg.NodeMonitorGracePeriod,
			})
		default:
			return nil, fmt.Errorf("reconciler: Config.Controllers: unknown controller %q (known: %v)", name, AllControllers)
		}
		loop := controller.NewLoop(c, log, workers, cfg.MaxBackoff)
		c.Setup(m.cache, loop.Queue())
		m.loops = append(m.loops, loop)
		if s, ok := c.(controller.Starter); ok {
			m.starters = append(m.starters, s)
		}
	}
	return m, nil
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
	for _, l := range m.loops {
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
			s.Start(ctx)
		}()
	}
	wg.Wait()
	m.log.Info("controllers stopped")
	return nil
}
