package node

// Pod lifecycle, as one pod worker drives it (lifecycle.go, initcontainers.go,
// podvolumes.go). Every step is idempotent: an agent that crashes anywhere
// resumes from the runtime's labels, the pod dirs and the store.
//
//	             pod bound to this node (watch ADDED / list)
//	                          │
//	                          ▼
//	   ┌──────────────────────── Pending ─────────────────────────┐
//	   │ runtime listed once (a pod to adopt is never created twice) │
//	   │ Network.Setup ─▶ volumes.Setup ─▶ resolve env ─▶ images   │ error: container Waiting
//	   │ (netns + IP)     (emptyDir, tmpfs,  (ConfigMap/   (pull per│ CreateContainerConfigError,
//	   │                  hostPath checks,   Secret)       policy; │ ContainerCreating "waiting for
//	   │                  API files, claims)      │  localhost/ is │ claim X to be bound", ErrImagePull,
//	   │                                         ▼  never pulled) │ ImagePullBackOff, ErrImageNeverPull…;
//	   │                               Runtime.RunPod ────────────┘ retried (config, claims, never-pulled
//	   │                                                              images at resync pace)
//	   │         no init containers: pod + containers, started ──────────────┐
//	   │         init containers: the pod alone, then one at a time:         │
//	   │           CreateContainer + start init[i] ─▶ exit 0 ─▶ init[i+1]     │
//	   │           (exits polled every 1s; Init:i/N)                         │
//	   │             exit ≠ 0: restartPolicy Never ─▶ Failed                 │
//	   │                       otherwise back-off ─▶ Init:CrashLoopBackOff   │
//	   │           all exited 0 (Initialized) ─▶ CreateContainer per app ────┤
//	   │           container. Init containers stay, exited, in the pod; a    │
//	   │           pod that has app containers never runs them again.        │
//	   │                                                                     ▼
//	   │   adopted after restart, or from the runtime list   start
//	   │   (volumes.Setup again: nothing rewritten; other runtime pods
//	   │   of the same UID are duplicates: removed)
//	   └──────────────────▶ Running ◀──────────────────────────┐
//	                   probes │  │ container exits             │ back-off over:
//	     readiness ─▶ Ready   │  ▼                             │ subPaths re-bound,
//	                          │                                │ StartContainer,
//	     liveness fails ──────┘ restartPolicy?  ── yes ─▶ Waiting CrashLoopBackOff
//	     (RestartContainer)        │ no                  (10s, 20s … 5m; reset
//	                               ▼                      after 10 min running)
//	                   Succeeded (all exit 0) / Failed
//
//	   What wakes a worker: the store's watch (its pod changed), a runtime
//	   event of its pod's containers (start, died, oom, remove…; it then
//	   reads the pod from the runtime), the next due time (back-off, probe,
//	   init container poll), and a resync: SyncInterval, at which it reads
//	   the runtime only if the runtime streams no events; with events it
//	   reads it every RuntimeResyncInterval (5 min) at the latest.
//
//	   Runtime down (runtimehealth.go): the node is NotReady (reason
//	   ContainerRuntimeDown), workers leave the runtime alone and pods keep
//	   their last status; back: the runtime is re-listed, every worker reads
//	   its pod and retries at once what failed (a lost runtime pod is
//	   created again, one kept running by conmon is the same pod).
//
//	   A sync that panics: logged with its stack, the pod's status.reason is
//	   AgentPanic (phase kept), retried after a back-off (10s … 5m); the
//	   agent and the other pods go on.
//
//	   Every runtime call has a deadline (deadlines.go: RuntimeTimeout 2 min,
//	   PullTimeout 10 min): a hung runtime fails a step, never hangs a worker.
//
//	   Running, every SyncInterval: volumes.Setup rewrites the configMap,
//	   secret, downwardAPI and projected files whose source changed (in
//	   place: ..data swapped); an emptyDir on disk over its sizeLimit ─▶
//	   StopPod ─▶ Failed, reason Evicted (its controller replaces it).
//
//	   any state ── pod leaves the store ──▶ StopPod(grace) ─▶ RemovePod
//	                  ─▶ Network.Teardown ─▶ volumes.Teardown (pod dir:
//	                  emptyDirs, API volumes; never hostPath or claim data) ─▶ gone
//	   agent ctx cancelled: workers return, workloads keep running.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/flotilla-dev/flotilla/cluster/events"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/node/podnet"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
	"github.com/flotilla-dev/flotilla/schema"
	"github.com/flotilla-dev/flotilla/volumes"
)

// Config configures an Agent. Zero values mean the documented default.
type Config struct {
	// NodeName is this node's name in the store (required).
	NodeName string
	// Events records the agent's Events (Pulling, Failed, BackOff, …).
	// Default nil: Run records them to Store as component "kubelet".
	Events events.Recorder
	// Store is where the agent reads its pods, ConfigMaps and Secrets and
	// writes pod status and its Node (required).
	Store store.Interface
	// Runtime runs the containers (required).
	Runtime runtimeapi.Runtime
	// Network gives pods their network namespaces (required).
	Network podnet.Network
	// Clock drives back-off, probes, resyncs and heartbeats. Default: the
	// real clock; tests inject a fake one.
	Clock clock.WithTicker
	// SyncInterval is the store resync period (re-list the node's pods,
	// re-check every pod against the store: ConfigMap and Secret volumes,
	// configuration errors), with up to 10% jitter. Default 10s. Shorter
	// notices lost events sooner and costs reads, never writes. A runtime
	// that streams no events (no EventWatcher) is also polled at this pace.
	SyncInterval time.Duration
	// RuntimeResyncInterval is, while the runtime's events stream, how
	// often the agent re-lists the runtime (adopting its pods, removing
	// orphans and duplicates) and every worker re-reads its pod's
	// containers without an event. Default 5m: events cover the time
	// between; shorter costs the runtime work on an idle node.
	RuntimeResyncInterval time.Duration
	// RuntimeCheckInterval is how often a runtime that can be pinged
	// (Pinger) is checked, for the node's Ready condition; an event stream
	// that ends is noticed at once. Default 10s.
	RuntimeCheckInterval time.Duration
	// RuntimeTimeout bounds every runtime call but pulls (StopPod and
	// RestartContainer get their grace period on top; a log follow is
	// bounded only by its client). Default 2m: longer than any answer of a
	// healthy runtime, short enough that a hung one does not hold a pod.
	RuntimeTimeout time.Duration
	// PullTimeout bounds an image pull. Default 10m (a large image on a
	// slow link).
	PullTimeout time.Duration
	// HeartbeatInterval is how often the Node's Ready condition is renewed
	// when nothing else changed. Default 40s. Each heartbeat is one write.
	HeartbeatInterval time.Duration
	// OrphanGracePeriod is the stop grace for runtime pods whose store pod is
	// gone and whose spec is unknown. Default 10s.
	OrphanGracePeriod time.Duration
	// NodeIP is the node's address (hostIP of its pods). Default: the first
	// global unicast IPv4 address of the machine.
	NodeIP net.IP
	// ClusterDNS is the nameserver of pods with dnsPolicy ClusterFirst: the
	// node's cluster DNS. Default nil: pods keep the node's resolv.conf.
	ClusterDNS net.IP
	// ClusterDomain is the services' DNS domain. Default "cluster.local".
	ClusterDomain string
	// PodDir holds the pods' data, one directory per pod UID with its
	// emptyDir, configMap, secret, downwardAPI and projected volumes,
	// removed with the pod. Default: /var/lib/flotilla/pods for root, else
	// $HOME/.local/share/flotilla/pods. Every agent on a machine should have
	// its own; the directories are marked with NodeName, so an agent never
	// removes another's.
	PodDir string
	// Mounter mounts the tmpfs of memory-backed volumes (emptyDir medium
	// Memory, secret and projected volumes). Default: the kernel's, which
	// needs root; tests without root give volumes.NewFakeMounter().
	Mounter volumes.Mounter
	// Claims resolves persistentVolumeClaim volumes to host paths. Default:
	// volumes.StoreClaims(Store), which reads what the PV/PVC binder wrote.
	Claims volumes.Claims
	// Logger; default slog.Default(). Logs carry the keys node and pod.
	Logger *slog.Logger
	// StartFromLastKnown runs the node's last known pods (lastknown.go)
	// at once, before the store's first list, instead of when that list
	// fails: the agent knows at start that no server answers (its
	// registration failed), and a list against servers that hold
	// connections without answering could take long to fail.
	StartFromLastKnown bool
	// DiskPressure says when the node reports DiskPressure and evicts
	// pods to free disk (diskpressure.go). Default: the kubelet's
	// thresholds on PodDir's file system.
	DiskPressure DiskPressureConfig
	// Metrics is the process's Prometheus registry: the agent adds its
	// families (runtime latency, the node's and pods' usage) and
	// MetricsHandler serves it. nil: a registry of the agent's own.
	Metrics *prometheus.Registry
	// StatsInterval is how often the node and its pods are measured
	// (metrics, the stats summary); 0 means DefaultStatsInterval.
	StatsInterval time.Duration
}

// Agent is the node agent. Create it with New, then call Run.
type Agent struct {
	cfg   Config
	rt    runtimeapi.Runtime // cfg.Runtime with a deadline on every call
	clock clock.WithTicker
	log   *slog.Logger
	vols  *volumes.Manager
	// events records the kubelet's Events (component "kubelet"); set
	// before Run starts the workers.
	events events.Recorder
	disk   *diskMonitor // nil: DiskPressure.Disabled
	// metrics is the registry MetricsHandler serves; stats the last
	// measurements of the node and its pods (stats.go).
	metrics *prometheus.Registry
	stats   *statsCache

	health    runtimeHealth
	resyncNow chan struct{} // a runtime resync soon (pokes merge)
	nodeNow   chan struct{} // a node status sync soon
	checkNow  chan struct{} // a runtime ping soon

	mu      sync.Mutex
	pods    map[string]*corev1.Pod // by UID: the store's pods for this node
	workers map[string]*podWorker  // by UID, including terminating ones
	listRev int64                  // revision of the last list; older events are stale
	// fromFile: the pods are the node's last known ones (lastknown.go),
	// the store not listed yet; status writes wait for it.
	fromFile bool
	// orphans being removed, by runtime pod ID
	removing map[string]bool
	// runtimeByUID is the last runtime list: runtime pod IDs by pod UID
	// (several: duplicates to remove); runtimeListed once there is one. No
	// worker creates a pod before, so that none duplicates a pod to adopt.
	runtimeByUID    map[string][]string
	runtimeListed   bool
	lastRuntimeList time.Time
	rtVersion       string // the runtime's version, once it answered (nodeinfo.go)

	// lastKnownSum is the hash of the node's pods last written to the
	// last-known file (lastknown.go).
	lastKnownSum [32]byte

	// syncHook, when set (tests), runs at the start of every pod sync.
	syncHook func(*corev1.Pod)

	wg sync.WaitGroup // workers and orphan removals
}

func (a *Agent) clusterDNS() string {
	if a.cfg.ClusterDNS == nil {
		return ""
	}
	return a.cfg.ClusterDNS.String()
}

// New validates cfg and returns an agent.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.NodeName == "":
		return nil, errors.New("node agent: NodeName is required")
	case cfg.Store == nil:
		return nil, errors.New("node agent: Store is required")
	case cfg.Runtime == nil:
		return nil, errors.New("node agent: Runtime is required")
	case cfg.Network == nil:
		return nil, errors.New("node agent: Network is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = 10 * time.Second
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 40 * time.Second
	}
	if cfg.RuntimeResyncInterval <= 0 {
		cfg.RuntimeResyncInterval = 5 * time.Minute
	}
	if cfg.RuntimeCheckInterval <= 0 {
		cfg.RuntimeCheckInterval = 10 * time.Second
	}
	if cfg.RuntimeTimeout <= 0 {
		cfg.RuntimeTimeout = 2 * time.Minute
	}
	if cfg.PullTimeout <= 0 {
		cfg.PullTimeout = 10 * time.Minute
	}
	if cfg.OrphanGracePeriod <= 0 {
		cfg.OrphanGracePeriod = 10 * time.Second
	}
	if cfg.NodeIP == nil {
		cfg.NodeIP = defaultNodeIP()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PodDir == "" {
		cfg.PodDir = defaultPodDir()
	}
	vols, err := volumes.New(volumes.Config{Dir: cfg.PodDir, Owner: cfg.NodeName, Objects: cfg.Store,
		Claims: cfg.Claims, Mounter: cfg.Mounter})
	if err != nil {
		return nil, fmt.Errorf("node agent: %w", err)
	}
	var disk *diskMonitor
	if !cfg.DiskPressure.Disabled {
		cfg.DiskPressure = cfg.DiskPressure.withDefaults(cfg.PodDir)
		if err := cfg.DiskPressure.validate(); err != nil {
			return nil, err
		}
		disk = newDiskMonitor(cfg.DiskPressure, cfg.Clock)
	}
	a := &Agent{
		cfg:       cfg,
		rt:        deadlineRuntime{rt: cfg.Runtime, call: cfg.RuntimeTimeout, pull: cfg.PullTimeout},
		clock:     cfg.Clock,
		vols:      vols,
		disk:      disk,
		log:       cfg.Logger.With("node", cfg.NodeName),
		resyncNow: make(chan struct{}, 1),
		nodeNow:   make(chan struct{}, 1),
		checkNow:  make(chan struct{}, 1),
		pods:      map[string]*corev1.Pod{},
		workers:   map[string]*podWorker{},
		removing:  map[string]bool{},
		events:    orNop(cfg.Events),
	}
	a.initMetrics()
	return a, nil
}

func orNop(r events.Recorder) events.Recorder {
	if r == nil {
		return events.Nop
	}
	return r
}

// Run registers the node and keeps its pods converged until ctx ends. When
// ctx ends it returns after its goroutines stopped, leaving the workloads
// running: a later agent adopts them.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("node agent starting")
	if a.cfg.Events == nil {
		// Events about this node's pods and itself, written as the node
		// (through the API in an agent: NodeRestriction checks them).
		b := events.New(ctx, events.Config{Store: a.cfg.Store, Host: a.cfg.NodeName, Clock: a.clock, Logger: a.log.With("component", "events")})
		defer b.Shutdown()
		a.events = b.Recorder("kubelet")
	}
	a.wg.Add(3)
	go func() { defer a.wg.Done(); a.nodeLoop(ctx) }()
	go func() { defer a.wg.Done(); a.leaseLoop(ctx) }()
	go func() { defer a.wg.Done(); a.runtimeLoop(ctx) }()
	if a.disk != nil {
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.diskLoop(ctx) }()
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.stats.run(ctx, func(err error) { a.log.Debug("measure the pods' resource usage", "err", err) })
	}()
	retry := time.Second
	fromFile := false
	if a.cfg.StartFromLastKnown {
		fromFile = a.runFromLastKnown(ctx)
	}
	for {
		err := a.listAndWatch(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil && !fromFile {
			// The store does not answer at start: run the pods the node
			// last knew of until it does (lastknown.go).
			fromFile = a.runFromLastKnown(ctx)
		}
		if err != nil {
			a.log.Warn("pod list/watch failed, retrying", "err", err, "in", retry)
			select {
			case <-ctx.Done():
			case <-a.clock.After(retry):
			}
			retry = min(retry*2, 30*time.Second)
			continue
		}
		retry = time.Second
	}
	a.wg.Wait()
	a.log.Info("node agent stopped; workloads left running")
	return nil
}

func (a *Agent) podSelector() store.ListOptions {
	return store.ListOptions{FieldSelector: "spec.nodeName=" + a.cfg.NodeName}
}

// listAndWatch lists the node's pods, reconciles workers and orphans, then
// follows the watch, with a store resync every SyncInterval and a runtime
// resync when one is due (runtimeResyncDue) or asked for (resyncNow). It
// returns nil when the watch closed normally (re-list), an error otherwise.
func (a *Agent) listAndWatch(ctx context.Context) error {
	rev, err := a.resync(ctx, true)
	if err != nil {
		return err
	}
	ch, err := a.cfg.Store.Watch(ctx, "pods", a.podSelector(), rev)
	if err != nil {
		return fmt.Errorf("watch pods from revision %d: %w", rev, err)
	}
	timer := a.clock.NewTimer(a.jitter(a.cfg.SyncInterval))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				a.log.Debug("pod watch closed; re-listing")
				return nil
			}
			a.handleEvent(ctx, ev)
		case <-timer.C():
			if _, err := a.resync(ctx, a.runtimeResyncDue()); err != nil {
				a.log.Warn("resync failed", "err", err)
			}
			timer.Reset(a.jitter(a.cfg.SyncInterval))
		case <-a.resyncNow:
			if _, err := a.resync(ctx, true); err != nil {
				a.log.Warn("resync failed", "err", err)
			}
		}
	}
}

func (a *Agent) jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/10+1))
}

// runtimeResyncDue reports whether the periodic resync should re-list the
// runtime too: always while its events do not stream, else every
// RuntimeResyncInterval, and until a runtime list succeeded.
func (a *Agent) runtimeResyncDue() bool {
	a.mu.Lock()
	listed, last := a.runtimeListed, a.lastRuntimeList
	a.mu.Unlock()
	return !listed || !a.eventsLive() || !a.clock.Now().Before(last.Add(a.cfg.RuntimeResyncInterval))
}

// resync is the full sync: list the store's pods, start workers and stop
// those of pods that are gone, poke everyone. withRuntime also lists the
// runtime's pods: each worker is offered its own (to adopt, and to remove
// duplicates), orphans are removed, and the networks and volumes of pods
// that are gone are torn down. A runtime that does not answer fails only
// that part (the node shows it NotReady); the store part goes on.
func (a *Agent) resync(ctx context.Context, withRuntime bool) (int64, error) {
	objs, rev, err := a.cfg.Store.List(ctx, "pods", a.podSelector())
	if err != nil {
		return 0, fmt.Errorf("list pods of node %s: %w", a.cfg.NodeName, err)
	}
	var running []runtimeapi.PodSummary
	if withRuntime {
		if err := a.runtimeErr(); err != nil {
			withRuntime = false // down: listed again when it is back
		} else if running, err = a.rt.ListPods(ctx); err != nil {
			a.runtimeCallFailed(err)
			a.log.Warn("list runtime pods", "err", err)
			withRuntime = false
		}
	}

	a.mu.Lock()
	a.listRev = rev
	a.fromFile = false
	if withRuntime {
		a.runtimeByUID = map[string][]string{}
		for _, p := range running {
			a.runtimeByUID[p.UID] = append(a.runtimeByUID[p.UID], p.ID)
		}
		a.runtimeListed = true
		a.lastRuntimeList = a.clock.Now()
	}
	fresh := map[string]*corev1.Pod{}
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			fresh[string(p.UID)] = p
		}
	}
	for uid := range a.pods {
		if _, ok := fresh[uid]; !ok {
			a.podGoneLocked(uid)
		}
	}
	changed := false
	for uid, p := range fresh {
		changed = changed || !sameRun(a.pods[uid], p)
		a.pods[uid] = p
		w := a.ensureWorkerLocked(ctx, p)
		if withRuntime {
			w.offer(a.runtimeByUID[uid])
		}
	}
	if changed {
		a.rememberPodsLocked()
	}
	var orphans []runtimeapi.PodSummary
	if withRuntime {
		for _, p := range running {
			if _, ok := a.workers[p.UID]; !ok && !a.removing[p.ID] {
				a.removing[p.ID] = true
				orphans = append(orphans, p)
			}
		}
	}
	for _, w := range a.workers {
		w.poke()
	}
	a.mu.Unlock()
	if !withRuntime {
		return rev, nil
	}

	for _, o := range orphans {
		a.wg.Add(1)
		go a.removeOrphan(ctx, o)
	}
	byUID := map[string]bool{}
	for _, p := range running {
		byUID[p.UID] = true
	}
	a.teardownOrphanNetworks(ctx)
	a.teardownOrphanVolumes(byUID)
	if err := a.sweepProvisioned(ctx); err != nil {
		a.log.Warn("removing deleted volumes' directories", "err", err)
	}
	return rev, nil
}

func (a *Agent) removeOrphan(ctx context.Context, p runtimeapi.PodSummary) {
	defer a.wg.Done()
	defer func() { a.mu.Lock(); delete(a.removing, p.ID); a.mu.Unlock() }()
	log := a.log.With("pod", p.Namespace+"/"+p.Name, "uid", p.UID)
	log.Info("removing orphan runtime pod (not in the store)", "id", p.ID)
	if err := a.rt.StopPod(ctx, p.ID, a.cfg.OrphanGracePeriod); err != nil && !errors.Is(err, runtimeapi.ErrNotFound) {
		log.Warn("stop orphan pod", "err", err)
	}
	if err := a.rt.RemovePod(ctx, p.ID); err != nil {
		log.Warn("remove orphan pod", "err", err)
		return
	}
	if err := a.cfg.Network.Teardown(ctx, p.UID); err != nil {
		log.Warn("tear down orphan network", "err", err)
	}
	if err := a.vols.Teardown(p.UID); err != nil {
		log.Warn("tear down orphan volumes", "err", err)
	}
}

// teardownOrphanVolumes removes the pod dirs of pods that have neither a
// worker nor a runtime pod (those are removed with them).
func (a *Agent) teardownOrphanVolumes(runtimePods map[string]bool) {
	uids, err := a.vols.Pods()
	if err != nil {
		a.log.Warn("list pod dirs", "err", err)
		return
	}
	for _, uid := range uids {
		a.mu.Lock()
		_, busy := a.workers[uid]
		a.mu.Unlock()
		if busy || runtimePods[uid] {
			continue
		}
		a.log.Info("removing the volumes of a pod that is gone", "uid", uid)
		if err := a.vols.Teardown(uid); err != nil {
			a.log.Warn("tear down orphan volumes", "uid", uid, "err", err)
		}
	}
}

func (a *Agent) teardownOrphanNetworks(ctx context.Context) {
	uids, err := a.cfg.Network.Pods(ctx)
	if err != nil {
		a.log.Warn("list pod networks", "err", err)
		return
	}
	for _, uid := range uids {
		a.mu.Lock()
		_, busy := a.workers[uid]
		a.mu.Unlock()
		if busy {
			continue
		}
		if err := a.cfg.Network.Teardown(ctx, uid); err != nil {
			a.log.Warn("tear down orphan network", "uid", uid, "err", err)
		}
	}
}

func (a *Agent) handleEvent(ctx context.Context, ev store.Event) {
	p, ok := ev.Object.(*corev1.Pod)
	if !ok {
		return
	}
	uid := string(p.UID)
	a.mu.Lock()
	defer a.mu.Unlock()
	if ev.Revision != 0 && ev.Revision <= a.listRev {
		return // already in the last list
	}
	if ev.Type == store.Deleted || p.Spec.NodeName != a.cfg.NodeName {
		if _, ok := a.pods[uid]; ok {
			a.podGoneLocked(uid)
		}
		return
	}
	if old, ok := a.pods[uid]; ok && rvLess(p.ResourceVersion, old.ResourceVersion) {
		return
	}
	old := a.pods[uid]
	a.pods[uid] = p
	a.ensureWorkerLocked(ctx, p).poke()
	if !sameRun(old, p) { // not a status write (the agent's own, mostly)
		a.rememberPodsLocked()
	}
}

// rvLess reports a < b for numeric resourceVersions.
func rvLess(a, b string) bool {
	x, err1 := strconv.ParseInt(a, 10, 64)
	y, err2 := strconv.ParseInt(b, 10, 64)
	return err1 == nil && err2 == nil && x < y
}

// ensureWorkerLocked starts the worker of a pod if it has none, with the
// runtime pods of its UID that the last runtime list saw, to adopt.
func (a *Agent) ensureWorkerLocked(ctx context.Context, p *corev1.Pod) *podWorker {
	uid := string(p.UID)
	if w, ok := a.workers[uid]; ok {
		return w
	}
	w := newPodWorker(a, p)
	if ids := a.runtimeByUID[uid]; len(ids) > 0 {
		w.offer(ids)
	}
	a.workers[uid] = w
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		w.run(ctx)
	}()
	return w
}

// podGoneLocked forgets a pod that left the store and tells its worker to
// stop and remove it.
func (a *Agent) podGoneLocked(uid string) {
	last := a.pods[uid]
	delete(a.pods, uid)
	a.rememberPodsLocked()
	if w, ok := a.workers[uid]; ok {
		w.markDeleted(last)
	}
}

// currentPod returns the cached pod (shared; do not modify) or nil.
func (a *Agent) currentPod(uid string) *corev1.Pod {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pods[uid]
}

// workerDone removes a finished (terminated) worker.
func (a *Agent) workerDone(w *podWorker) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.workers[w.uid] == w {
		delete(a.workers, w.uid)
	}
}

// writeStatus stores status for the pod if it differs from what the store
// has. Returns whether it wrote.
func (a *Agent) writeStatus(ctx context.Context, uid string, status corev1.PodStatus) (bool, error) {
	cur := a.currentPod(uid)
	if cur == nil {
		return false, nil
	}
	a.mu.Lock()
	fromFile := a.fromFile
	a.mu.Unlock()
	if fromFile {
		// The store has not answered since the agent started: a write
		// would hold the pod's sync (its restarts) until it failed. The
		// first list's pokes sync every pod, and write then.
		return false, nil
	}
	for attempt := 0; attempt < 3; attempt++ {
		if statusEqual(cur.Status, status) {
			return false, nil
		}
		p := schema.Copy(cur)
		p.Status = status
		out, err := a.cfg.Store.UpdateStatus(ctx, p)
		if errors.Is(err, store.ErrConflict) {
			fresh, gerr := a.cfg.Store.Get(ctx, "pods", cur.Namespace, cur.Name)
			if gerr != nil {
				return false, fmt.Errorf("re-read pod %s/%s: %w", cur.Namespace, cur.Name, gerr)
			}
			fp, ok := fresh.(*corev1.Pod)
			if !ok || fp.UID != cur.UID {
				return false, nil
			}
			cur = fp
			continue
		}
		if err != nil {
			return false, fmt.Errorf("update status of pod %s/%s: %w", cur.Namespace, cur.Name, err)
		}
		if np, ok := out.(*corev1.Pod); ok {
			a.mu.Lock()
			if old, ok := a.pods[uid]; ok && !rvLess(np.ResourceVersion, old.ResourceVersion) {
				a.pods[uid] = np
			}
			a.mu.Unlock()
		}
		return true, nil
	}
	return false, fmt.Errorf("update status of pod %s/%s: %w", cur.Namespace, cur.Name, store.ErrConflict)
}

// PodLogs writes the logs of one container of a pod on this node to w.
// Returns store.ErrNotFound for an unknown pod and ErrNotFound when the
// container has not been created (yet).
func (a *Agent) PodLogs(ctx context.Context, namespace, pod string, opts corev1.PodLogOptions, w io.Writer) error {
	a.mu.Lock()
	var found *corev1.Pod
	var worker *podWorker
	for uid, p := range a.pods {
		if p.Namespace == namespace && p.Name == pod {
			found, worker = p, a.workers[uid]
			break
		}
	}
	a.mu.Unlock()
	if found == nil {
		return fmt.Errorf("logs of pod %s/%s on node %s: %w", namespace, pod, a.cfg.NodeName, store.ErrNotFound)
	}
	name := opts.Container
	if name == "" && len(found.Spec.Containers) > 0 {
		name = found.Spec.Containers[0].Name
	}
	id := ""
	if worker != nil {
		id = worker.containerID(name)
	}
	if id == "" {
		return fmt.Errorf("logs of container %q of pod %s/%s: %w", name, namespace, pod, runtimeapi.ErrNotFound)
	}
	req, err := logRequest(found, name, opts, a.clock.Now())
	if err != nil {
		return fmt.Errorf("logs of container %q of pod %s/%s: %w", name, namespace, pod, err)
	}
	err = a.rt.ContainerLogs(ctx, id, req, w)
	if err != nil {
		return fmt.Errorf("logs of container %q of pod %s/%s: %w", name, namespace, pod, err)
	}
	return nil
}

// defaultPodDir is Config.PodDir's default.
func defaultPodDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/flotilla/pods"
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".local", "share", "flotilla", "pods")
	}
	return filepath.Join(os.TempDir(), "flotilla", "pods")
}

func defaultNodeIP() net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return net.IPv4(127, 0, 0, 1)
	}
	for _, ad := range addrs {
		if n, ok := ad.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.To4()
		}
	}
	return net.IPv4(127, 0, 0, 1)
}

// logRequest is what the runtime is asked for: the since time of
// sinceSeconds or sinceTime, and for previous the run before the current
// one: from the last termination's start to the current run's start (its
// finish and a second after it when the container is not running: log
// times are kept to the second in the pod status).
func logRequest(pod *corev1.Pod, container string, opts corev1.PodLogOptions, now time.Time) (runtimeapi.LogRequest, error) {
	req := runtimeapi.LogRequest{Follow: opts.Follow, TailLines: opts.TailLines, Timestamps: opts.Timestamps}
	switch {
	case opts.SinceSeconds != nil:
		req.Since = now.Add(-time.Duration(*opts.SinceSeconds) * time.Second)
	case opts.SinceTime != nil:
		req.Since = opts.SinceTime.Time
	}
	if !opts.Previous {
		// A restarted container keeps one log in Podman: its current run
		// (or, while it waits to restart, its last one) starts there.
		for _, st := range append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
			if st.Name != container || st.RestartCount == 0 {
				continue
			}
			var start metav1.Time
			switch {
			case st.State.Running != nil:
				start = st.State.Running.StartedAt
			case st.State.Terminated != nil:
				start = st.State.Terminated.StartedAt
			case st.LastTerminationState.Terminated != nil:
				start = st.LastTerminationState.Terminated.StartedAt
			}
			if req.Since.Before(start.Time) {
				req.Since = start.Time
			}
		}
		return req, nil
	}
	for _, st := range append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		last := st.LastTerminationState.Terminated
		if st.Name != container || last == nil {
			continue
		}
		req.Follow = false
		if req.Since.Before(last.StartedAt.Time) {
			req.Since = last.StartedAt.Time
		}
		req.Until = last.FinishedAt.Add(time.Second)
		if run := st.State.Running; run != nil && !run.StartedAt.IsZero() {
			req.Until = run.StartedAt.Time
		}
		return req, nil
	}
	return req, fmt.Errorf("previous terminated container %q not found: %w", container, runtimeapi.ErrNotFound)
}
