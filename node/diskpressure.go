package node

// Disk pressure, as the kubelet's eviction manager handles it for
// nodefs.available and imagefs.available:
//
//	every Interval: statfs NodeFS (and ImageFS when it is another file system)
//	   │
//	   ├─ available below a threshold ──▶ DiskPressure=True now; evict ONE pod
//	   │    (BestEffort first, then Burstable, then Guaranteed; within a class
//	   │    the largest disk user first: its emptyDirs and, when the runtime
//	   │    can tell, its logs). The pod is stopped, its emptyDirs removed, its
//	   │    status Failed / Evicted with a message: its controller replaces it
//	   │    on another node (the node lifecycle controller taints this one
//	   │    node.kubernetes.io/disk-pressure:NoSchedule while the condition is
//	   │    True, so the scheduler places nothing new here).
//	   │
//	   └─ above every threshold ──▶ DiskPressure=False only once it has stayed
//	        so for TransitionPeriod (hysteresis: no flapping around a threshold)

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/flotilla-dev/flotilla/volumes"
)

// Defaults of DiskPressureConfig, the kubelet's hard eviction defaults
// (nodefs.available<10%, imagefs.available<15%) and its pressure
// transition period and housekeeping interval, plus an absolute floor.
const (
	DefaultNodeFSMinAvailablePercent  = 10
	DefaultImageFSMinAvailablePercent = 15
	DefaultMinAvailableBytes          = 100 << 20 // 100 MiB
	DefaultDiskTransitionPeriod       = 5 * time.Minute
	DefaultDiskCheckInterval          = 10 * time.Second
)

// Reasons of the DiskPressure node condition.
const (
	ReasonDiskPressure   = "AgentHasDiskPressure"
	ReasonNoDiskPressure = "AgentHasNoDiskPressure"
)

// DiskPressureConfig says which file systems the agent watches and when it
// reports DiskPressure and evicts. Zero values mean the documented default.
type DiskPressureConfig struct {
	// NodeFS is a path on the file system of the agent's data (pods'
	// emptyDirs, the store of an all-in-one node). Default Config.PodDir.
	NodeFS string
	// ImageFS is a path on the container runtime's storage (Podman's
	// storage root, where images and container layers live). Default ""
	// (not watched); on the same file system as NodeFS it is watched once,
	// as NodeFS; while it does not exist it is skipped.
	ImageFS string
	// NodeFSMinAvailablePercent: NodeFS has pressure when less than this
	// share of it is available. Default 10 (kubelet: nodefs.available<10%).
	NodeFSMinAvailablePercent float64
	// ImageFSMinAvailablePercent: the same for ImageFS. Default 15
	// (kubelet: imagefs.available<15%).
	ImageFSMinAvailablePercent float64
	// MinAvailableBytes is an absolute floor for both: a file system with
	// less available has pressure whatever its size (10% of a 500 GiB disk
	// is plenty; 10% of a 1 GiB SD card is not). Default 100 MiB; negative
	// turns the floor off.
	MinAvailableBytes int64
	// TransitionPeriod is how long every file system must stay above its
	// thresholds before DiskPressure goes back to False. Default 5m (the
	// kubelet's eviction-pressure-transition-period). Shorter reacts
	// sooner; longer keeps a node hovering at a threshold from flapping
	// between schedulable and not.
	TransitionPeriod time.Duration
	// Interval is how often free space is measured, and so the pace of
	// evictions (one pod per Interval while a threshold is crossed).
	// Default 10s.
	Interval time.Duration
	// Disabled turns the watch off: no condition, no eviction.
	Disabled bool
}

func (c DiskPressureConfig) withDefaults(podDir string) DiskPressureConfig {
	if c.NodeFS == "" {
		c.NodeFS = podDir
	}
	if c.NodeFSMinAvailablePercent <= 0 {
		c.NodeFSMinAvailablePercent = DefaultNodeFSMinAvailablePercent
	}
	if c.ImageFSMinAvailablePercent <= 0 {
		c.ImageFSMinAvailablePercent = DefaultImageFSMinAvailablePercent
	}
	if c.MinAvailableBytes == 0 {
		c.MinAvailableBytes = DefaultMinAvailableBytes
	}
	if c.TransitionPeriod <= 0 {
		c.TransitionPeriod = DefaultDiskTransitionPeriod
	}
	if c.Interval <= 0 {
		c.Interval = DefaultDiskCheckInterval
	}
	return c
}

func (c DiskPressureConfig) validate() error {
	if c.NodeFSMinAvailablePercent >= 100 || c.ImageFSMinAvailablePercent >= 100 {
		return fmt.Errorf("node agent: DiskPressure thresholds %v%%/%v%%: must be below 100", c.NodeFSMinAvailablePercent, c.ImageFSMinAvailablePercent)
	}
	return nil
}

// PodDiskUser is an optional ability of a Runtime: the bytes a pod's
// containers use on the node's disk outside its volumes (logs, writable
// layers), for ranking pods to evict. Runtimes without it are ranked on
// their emptyDirs alone.
type PodDiskUser interface {
	PodDiskUsage(ctx context.Context, podUID string) (int64, error)
}

// fsSignal is one observation of one file system.
type fsSignal struct {
	name      string // "nodefs" or "imagefs"
	path      string
	available int64
	size      int64
	threshold int64 // bytes: below it, pressure
}

func (s fsSignal) pressure() bool { return s.available < s.threshold }

// diskMonitor is the agent's disk pressure state. Its loop goroutine
// measures; nodeStatus reads the condition; pod workers take evictions.
type diskMonitor struct {
	cfg   DiskPressureConfig
	clock clock.Clock

	mu           sync.Mutex
	known        bool      // measured at least once
	pressure     bool      // the condition's status
	since        time.Time // last transition of the condition
	lastPressure time.Time // last observation below a threshold
	message      string
	evict        map[string]string // pod UID → eviction message, not yet taken
	changed      chan struct{}     // buffered 1: the condition changed
}

func newDiskMonitor(cfg DiskPressureConfig, c clock.Clock) *diskMonitor {
	return &diskMonitor{cfg: cfg, clock: c, evict: map[string]string{}, changed: make(chan struct{}, 1)}
}

// diskLoop measures every Interval until ctx ends.
func (a *Agent) diskLoop(ctx context.Context) {
	d := a.disk
	for {
		a.checkDisk(ctx)
		select {
		case <-ctx.Done():
			return
		case <-a.clock.After(d.cfg.Interval):
		}
	}
}

// checkDisk is one round: measure, update the condition, evict one pod if
// a threshold is crossed.
func (a *Agent) checkDisk(ctx context.Context) {
	d := a.disk
	sigs, err := d.measure()
	if err != nil {
		a.log.Warn("measuring free disk space", "err", err)
		return
	}
	var crossed *fsSignal
	for i := range sigs {
		if sigs[i].pressure() {
			crossed = &sigs[i]
			break
		}
	}
	now := d.clock.Now()
	d.mu.Lock()
	was, wasKnown := d.pressure, d.known
	d.known = true
	switch {
	case crossed != nil:
		d.lastPressure = now
		if !d.pressure {
			d.pressure, d.since = true, now
		}
		d.message = fmt.Sprintf("%s (%s) has %s available, below the threshold %s",
			crossed.name, crossed.path, quantity(crossed.available), quantity(crossed.threshold))
	case d.pressure && now.Sub(d.lastPressure) >= d.cfg.TransitionPeriod:
		d.pressure, d.since = false, now
	}
	if !d.pressure {
		d.message = "the agent has sufficient disk space available"
	}
	pending := len(d.evict)
	changed := !wasKnown || was != d.pressure
	d.mu.Unlock()
	if changed {
		if crossed != nil {
			a.log.Warn("node has disk pressure", "fs", crossed.name, "path", crossed.path,
				"available", crossed.available, "threshold", crossed.threshold)
		} else if wasKnown {
			a.log.Info("node has no disk pressure any more")
		}
		select {
		case d.changed <- struct{}{}:
		default:
		}
	}
	if crossed == nil || pending > 0 {
		return // nothing to reclaim, or the last eviction not done yet
	}
	if uid, msg := a.pickEviction(ctx, *crossed); uid != "" {
		d.mu.Lock()
		d.evict[uid] = msg
		d.mu.Unlock()
		a.mu.Lock()
		w := a.workers[uid]
		a.mu.Unlock()
		if w != nil {
			w.poke()
		}
	}
}

// measure statfs-es the watched file systems.
func (d *diskMonitor) measure() ([]fsSignal, error) {
	node, err := statSignal("nodefs", d.cfg.NodeFS, d.cfg.NodeFSMinAvailablePercent, d.cfg.MinAvailableBytes)
	if err != nil {
		return nil, err
	}
	out := []fsSignal{node}
	if d.cfg.ImageFS != "" && !sameFS(d.cfg.NodeFS, d.cfg.ImageFS) {
		img, err := statSignal("imagefs", d.cfg.ImageFS, d.cfg.ImageFSMinAvailablePercent, d.cfg.MinAvailableBytes)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// the runtime has not made its storage yet: nothing stored there
		case err != nil:
			return nil, err
		default:
			out = append(out, img)
		}
	}
	return out, nil
}

func statSignal(name, path string, pct float64, floor int64) (fsSignal, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fsSignal{}, fmt.Errorf("%s %s: %w", name, path, err)
	}
	s := fsSignal{name: name, path: path,
		available: int64(st.Bavail) * int64(st.Bsize),
		size:      int64(st.Blocks) * int64(st.Bsize)}
	s.threshold = int64(float64(s.size) * pct / 100)
	if floor > s.threshold {
		s.threshold = floor
	}
	return s, nil
}

func sameFS(a, b string) bool {
	var sa, sb unix.Stat_t
	return unix.Stat(a, &sa) == nil && unix.Stat(b, &sb) == nil && sa.Dev == sb.Dev
}

func quantity(b int64) string { return resource.NewQuantity(b, resource.BinarySI).String() }

// condition returns the DiskPressure node condition to write, from old
// (to keep its times when nothing changed); heartbeat is the Ready
// condition's, so the condition costs no write of its own. ok is false
// while the monitor is off or has not measured yet.
func (d *diskMonitor) condition(old *corev1.NodeCondition, heartbeat metav1.Time) (corev1.NodeCondition, bool) {
	if d == nil {
		return corev1.NodeCondition{}, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.known {
		return corev1.NodeCondition{}, false
	}
	c := corev1.NodeCondition{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse,
		Reason: ReasonNoDiskPressure, Message: d.message, LastHeartbeatTime: heartbeat,
		LastTransitionTime: metav1.NewTime(d.since).Rfc3339Copy()}
	if d.pressure {
		c.Status, c.Reason = corev1.ConditionTrue, ReasonDiskPressure
	}
	if old != nil && old.Status == c.Status {
		c.LastTransitionTime = old.LastTransitionTime
	}
	return c, true
}

// setDiskCondition puts the DiskPressure condition into st.
func (a *Agent) setDiskCondition(st *corev1.NodeStatus, heartbeat metav1.Time) {
	var old *corev1.NodeCondition
	at := -1
	for i := range st.Conditions {
		if st.Conditions[i].Type == corev1.NodeDiskPressure {
			old, at = &st.Conditions[i], i
		}
	}
	c, ok := a.disk.condition(old, heartbeat)
	switch {
	case !ok:
	case at >= 0:
		st.Conditions[at] = c
	default:
		st.Conditions = append(st.Conditions, c)
	}
}

// diskChanged is readable when the condition changed (nil channel when off).
func (a *Agent) diskChanged() <-chan struct{} {
	if a.disk == nil {
		return nil
	}
	return a.disk.changed
}

// takeEviction returns, once, the eviction asked for pod uid ("" if none).
func (d *diskMonitor) takeEviction(uid string) string {
	if d == nil {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	msg := d.evict[uid]
	delete(d.evict, uid)
	return msg
}

// evictCandidate is a pod that may be evicted, with its rank.
type evictCandidate struct {
	uid   string
	name  string
	qos   int // 0 BestEffort, 1 Burstable, 2 Guaranteed
	usage int64
}

// pickEviction chooses the pod to evict for the crossed signal: running,
// not already finished or evicted; BestEffort first, then by disk use.
func (a *Agent) pickEviction(ctx context.Context, sig fsSignal) (uid, msg string) {
	a.mu.Lock()
	var cands []evictCandidate
	for u, p := range a.pods {
		w := a.workers[u]
		if w == nil || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		cands = append(cands, evictCandidate{uid: u, name: p.Namespace + "/" + p.Name, qos: qosRank(p)})
	}
	a.mu.Unlock()
	if len(cands) == 0 {
		return "", ""
	}
	du, _ := a.cfg.Runtime.(PodDiskUser)
	for i := range cands {
		c := &cands[i]
		c.usage = dirUsage(volumes.PodDir(a.cfg.PodDir, c.uid))
		if du != nil {
			if n, err := du.PodDiskUsage(ctx, c.uid); err == nil {
				c.usage += n
			}
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].qos != cands[j].qos {
			return cands[i].qos < cands[j].qos
		}
		if cands[i].usage != cands[j].usage {
			return cands[i].usage > cands[j].usage
		}
		return cands[i].uid < cands[j].uid
	})
	v := cands[0]
	msg = fmt.Sprintf("The node was low on resource: ephemeral-storage. Threshold quantity: %s, available: %s (%s). The pod was using %s of the node's disk.",
		quantity(sig.threshold), quantity(sig.available), sig.name, quantity(v.usage))
	a.log.Warn("evicting pod for disk pressure", "pod", v.name, "usage", v.usage, "fs", sig.name)
	return v.uid, msg
}

// qosRank is the pod's QoS class as Kubernetes computes it: BestEffort (no
// container requests or limits CPU or memory) 0, Guaranteed (every
// container limits both, with requests equal to limits) 2, else Burstable 1.
func qosRank(p *corev1.Pod) int {
	switch p.Status.QOSClass {
	case corev1.PodQOSBestEffort:
		return 0
	case corev1.PodQOSBurstable:
		return 1
	case corev1.PodQOSGuaranteed:
		return 2
	}
	any, guaranteed := false, true
	for _, list := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range list {
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, hasReq := c.Resources.Requests[r]
				lim, hasLim := c.Resources.Limits[r]
				if hasReq && !req.IsZero() || hasLim && !lim.IsZero() {
					any = true
				}
				if !hasLim || lim.IsZero() || hasReq && req.Cmp(lim) != 0 {
					guaranteed = false
				}
			}
		}
	}
	switch {
	case !any:
		return 0
	case guaranteed:
		return 2
	}
	return 1
}

// dirUsage is the disk space used under dir on dir's own file system
// (memory-backed volumes mounted inside are skipped); 0 if unreadable.
func dirUsage(dir string) int64 {
	var root unix.Stat_t
	if unix.Lstat(dir, &root) != nil {
		return 0
	}
	var total int64
	subPaths := filepath.Join(dir, volumes.SubPathsDir) // mounts of files counted elsewhere (or a hostPath's)
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if uint64(st.Dev) != uint64(root.Dev) || p == subPaths {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		total += st.Blocks * 512
		return nil
	})
	return total
}

// evictForDisk, run by the pod's worker, evicts the pod if the disk
// monitor asked for it: the pod is stopped, its emptyDirs and other
// volume files are removed (the space is what the eviction is for), and
// its status becomes Failed, reason Evicted. It reports whether it did.
func (w *podWorker) evictForDisk(ctx context.Context, pod *corev1.Pod) bool {
	msg := w.a.disk.takeEviction(w.uid)
	if msg == "" || w.evicted != "" {
		return false
	}
	w.evicted = msg
	w.markAllDone(pod)
	w.log.Warn("evicting pod", "reason", msg)
	w.stopEvicted(ctx, pod)
	if err := w.a.vols.Teardown(w.uid); err != nil && !errors.Is(err, os.ErrNotExist) {
		w.log.Warn("removing the evicted pod's volumes", "err", err)
	}
	w.vols = nil
	return true
}
