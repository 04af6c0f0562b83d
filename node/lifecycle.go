package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/node/podnet"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
	"github.com/flotilla-dev/flotilla/volumes"
)

// Back-off of container restarts and of failed pod starts, as the kubelet
// does it.
const (
	backoffInitial = 10 * time.Second
	backoffMax     = 5 * time.Minute
	backoffReset   = 10 * time.Minute // a run this long resets the back-off
	defaultGrace   = 30 * time.Second
)

// podWorker owns one pod: only its goroutine touches the fields below mu.
type podWorker struct {
	a   *Agent
	uid string
	log *slog.Logger

	trigger chan struct{} // buffered 1: pokes merge

	mu       sync.Mutex // guards the fields up to the blank line (set by the agent, read by PodLogs)
	deleted  bool
	lastPod  *corev1.Pod
	ids      map[string]string // container name → runtime ID
	runtimeI string            // runtime pod ID ("" not created)
	offered  []string          // runtime pods of this UID in the last runtime list (adopt one, remove the rest)
	hasOffer bool
	stale    bool // a runtime event came: the cached runtime status is old
	back     bool // the runtime answers again: retry at once what failed while it was down

	// the runtime's view of the pod as last read (nil: read it), and when
	cached   *runtimeapi.PodStatus
	cachedID string
	cachedAt time.Time
	// the pod's network namespace, as setNet recorded it
	netnsPath string
	// back-off after a sync that panicked
	panicBackoff time.Duration

	// goroutine-owned state
	net        *podnet.PodNetwork
	startTime  time.Time
	containers map[string]*ctrState
	// waiting reasons while the pod (or, after its init containers, its
	// app containers) cannot be created
	createReason, createMessage string
	createPaced                 bool // retry at resync pace (config or claim), not with back-off
	createBackoff               time.Duration
	createRetryAt               time.Time
	restored                    bool // restart counts read from the stored status

	vols        *volumes.Pod // the pod's volumes as last set up (nil: not yet)
	nextVolSync time.Time    // when a running pod's volumes are next refreshed and measured
	volErr      string       // the last volume refresh error logged
	initDone    bool         // every init container completed: the app containers may run
	initFailed  bool         // an init container failed under restartPolicy Never
	evicted     string       // the eviction message; "" when not evicted
}

// ctrState is the agent's bookkeeping for one container.
type ctrState struct {
	restartCount int32
	backoff      time.Duration // last back-off used
	backoffUntil time.Time     // restart not before
	handledExit  time.Time     // FinishedAt of the last exit dealt with
	lastTerm     *corev1.ContainerStateTerminated
	startedAt    time.Time // the run the probe state belongs to
	waiting      string    // forced waiting reason (RunContainerError…)
	waitingMsg   string
	done         bool // exited and will not be restarted (an init container: completed or failed for good)
	probes       probeState
}

func newPodWorker(a *Agent, p *corev1.Pod) *podWorker {
	return &podWorker{
		a:          a,
		uid:        string(p.UID),
		log:        a.log.With("pod", p.Namespace+"/"+p.Name),
		trigger:    make(chan struct{}, 1),
		lastPod:    p,
		ids:        map[string]string{},
		containers: map[string]*ctrState{},
	}
}

// poke asks the worker to sync soon; repeated pokes merge into one.
func (w *podWorker) poke() { poke(w.trigger) }

// markStale tells the worker that its pod changed in the runtime (an
// event): the next sync, soon, reads it again.
func (w *podWorker) markStale() {
	w.mu.Lock()
	w.stale = true
	w.mu.Unlock()
	w.poke()
}

// runtimeBack tells the worker that the runtime answers again.
func (w *podWorker) runtimeBack() {
	w.mu.Lock()
	w.stale, w.back = true, true
	w.mu.Unlock()
	w.poke()
}

// offer gives the worker the runtime pods of its UID that a runtime list
// saw: it adopts one if it has none, and removes the others.
func (w *podWorker) offer(ids []string) {
	w.mu.Lock()
	w.offered, w.hasOffer = append([]string(nil), ids...), true
	w.mu.Unlock()
}

// markDeleted tells the worker its pod left the store.
func (w *podWorker) markDeleted(last *corev1.Pod) {
	w.mu.Lock()
	w.deleted = true
	if last != nil {
		w.lastPod = last
	}
	w.mu.Unlock()
	w.poke()
}

func (w *podWorker) containerID(name string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ids[name]
}

// setNet records the pod's network (goroutine-owned) and its namespace
// for other goroutines (port forwarding).
func (w *podWorker) setNet(n *podnet.PodNetwork) {
	w.net = n
	w.mu.Lock()
	w.netnsPath = n.NetNSPath
	w.mu.Unlock()
}

// netNS is the pod's network namespace, "" before its network is set up.
func (w *podWorker) netNS() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.netnsPath
}

func (w *podWorker) podID() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.runtimeI
}

func (w *podWorker) setPodID(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.runtimeI = id
	if id == "" {
		w.ids = map[string]string{}
	}
}

// run is the worker goroutine: sync on pokes and whenever the next thing is
// due (a back-off ending, a probe, the resync interval).
func (w *podWorker) run(ctx context.Context) {
	timer := w.a.clock.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return // agent shutting down: leave the workload running
		case <-w.trigger:
		case <-timer.C():
		}
		w.mu.Lock()
		deleted := w.deleted
		w.mu.Unlock()
		if deleted {
			w.terminateSafely(ctx)
			return
		}
		next := w.syncSafely(ctx)
		if ctx.Err() != nil {
			return
		}
		timer.Stop()
		select { // drain a fired timer before Reset
		case <-timer.C():
		default:
		}
		timer.Reset(max(next.Sub(w.a.clock.Now()), 10*time.Millisecond))
	}
}

// syncSafely is sync with a panic recovered: one pod whose content trips a
// bug stops only itself. The panic is logged with its stack, the pod's
// status says so (reason AgentPanic), and the pod is synced again after a
// back-off (10s, 20s … 5m; reset by a sync that completes).
func (w *podWorker) syncSafely(ctx context.Context) (next time.Time) {
	defer func() {
		if r := recover(); r != nil {
			next = w.panicked(ctx, r, debug.Stack())
		}
	}()
	next = w.sync(ctx)
	w.panicBackoff = 0
	return next
}

// reasonAgentPanic is the pod status reason while the agent's sync of the
// pod panics.
const reasonAgentPanic = "AgentPanic"

func (w *podWorker) panicked(ctx context.Context, r any, stack []byte) time.Time {
	w.panicBackoff = nextBackoff(w.panicBackoff)
	w.log.Error("pod sync panicked; retrying the pod after a back-off (the agent and the other pods go on)",
		"panic", fmt.Sprint(r), "retry", w.panicBackoff, "stack", string(stack))
	w.cached = nil
	defer func() {
		if r2 := recover(); r2 != nil {
			w.log.Error("writing the status of a pod whose sync panicked panicked too", "panic", fmt.Sprint(r2))
		}
	}()
	if pod := w.a.currentPod(w.uid); pod != nil && ctx.Err() == nil {
		st := *pod.Status.DeepCopy()
		if st.Phase == "" {
			st.Phase = corev1.PodPending
		}
		st.Reason = reasonAgentPanic
		st.Message = fmt.Sprintf("the node agent failed on this pod (%v) and retries it in %s; this is a bug in Flotilla: the node's log has the stack", r, w.panicBackoff)
		if _, err := w.a.writeStatus(ctx, w.uid, st); err != nil {
			w.log.Warn("write pod status", "err", err)
		}
	}
	return w.a.clock.Now().Add(w.panicBackoff)
}

// terminateSafely is terminate with a panic recovered: the worker retires,
// and what it left in the runtime is removed as an orphan.
func (w *podWorker) terminateSafely(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			w.log.Error("pod termination panicked; the runtime resync removes what is left", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	w.terminate(ctx)
}

// terminate stops and removes the pod and its network, then retires the
// worker. On failure it leaves the pod for the resync's orphan removal.
func (w *podWorker) terminate(ctx context.Context) {
	defer w.a.workerDone(w)
	w.mu.Lock()
	pod := w.lastPod
	w.mu.Unlock()
	grace := defaultGrace
	if pod != nil && pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	if id := w.podID(); id != "" {
		w.log.Info("stopping pod", "grace", grace)
		if pod != nil {
			for i := range pod.Spec.Containers {
				w.a.events.Eventf(containerRef(pod, &pod.Spec.Containers[i]), corev1.EventTypeNormal, "Killing", "Stopping container %s", pod.Spec.Containers[i].Name)
			}
		}
		if err := w.a.rt.StopPod(ctx, id, grace); err != nil && !errors.Is(err, runtimeapi.ErrNotFound) {
			w.log.Warn("stop pod", "err", err)
		}
		if err := w.a.rt.RemovePod(ctx, id); err != nil {
			w.a.runtimeCallFailed(err)
			w.log.Warn("remove pod; the runtime resync removes it later", "err", err)
			return
		}
		w.setPodID("")
	}
	if err := w.a.cfg.Network.Teardown(ctx, w.uid); err != nil {
		w.log.Warn("tear down pod network", "err", err)
	}
	if err := w.a.vols.Teardown(w.uid); err != nil {
		w.log.Warn("tear down pod volumes", "err", err)
	}
	w.log.Info("pod removed")
}

// sync is one pass over the pod: create it if needed, restart and probe its
// containers, write its status if it changed. It returns when it wants to
// run again.
func (w *podWorker) sync(ctx context.Context) time.Time {
	now := w.a.clock.Now()
	next := now.Add(w.a.jitter(w.a.workerResync()))
	pod := w.a.currentPod(w.uid)
	if pod == nil {
		return next
	}
	if h := w.a.syncHook; h != nil {
		h(pod)
	}
	w.mu.Lock()
	w.lastPod = pod
	w.mu.Unlock()
	w.restoreCounts(pod)
	if w.a.runtimeErr() != nil || !w.a.listedRuntime() {
		// The runtime is down (the node is NotReady and the pod keeps its
		// last status), or not listed yet (a pod to adopt may be there):
		// poked when that changes.
		return next
	}
	w.takeRuntimeBack()
	w.adoptOffered(ctx)

	var rs *runtimeapi.PodStatus
	if w.podID() == "" {
		if !w.createRetryAt.IsZero() && now.Before(w.createRetryAt) {
			next = minTime(next, w.createRetryAt)
		} else if id, err := w.create(ctx, pod); err != nil {
			w.a.runtimeCallFailed(err)
			w.createFailed(now)
			next = minTime(next, w.createRetryAt)
			w.log.Info("pod not started", "reason", w.createReason, "err", err, "retry", w.createRetryAt.Sub(now))
		} else {
			w.setPodID(id)
			w.createSucceeded()
			w.log.Info("pod started", "id", id)
		}
	}
	if id := w.podID(); id != "" {
		st, err := w.runtimeStatus(ctx, pod, id)
		switch {
		case errors.Is(err, runtimeapi.ErrNotFound):
			w.log.Warn("runtime pod disappeared; recreating", "id", id)
			w.runtimePodGone()
			w.poke()
		case err != nil:
			w.a.runtimeCallFailed(err)
			if ctx.Err() == nil {
				w.log.Warn("read runtime pod status", "err", err)
			}
			// a status without the runtime's view would be wrong (all
			// Pending): keep the last one
			return minTime(next, now.Add(w.a.cfg.SyncInterval))
		case len(pod.Spec.InitContainers) == 0 && len(missingContainers(pod, st)) > 0:
			// An agent stopped (or was killed) between creating the runtime
			// pod and its last container: the pod can never be completed.
			// Remove it and create it whole; the network is kept (Setup is
			// idempotent).
			w.log.Warn("runtime pod is incomplete (an agent stopped while creating it); recreating it",
				"id", id, "missing", missingContainers(pod, st))
			if err := w.a.rt.RemovePod(ctx, id); err != nil && !errors.Is(err, runtimeapi.ErrNotFound) {
				w.log.Warn("remove incomplete runtime pod", "id", id, "err", err)
			} else {
				w.runtimePodGone()
				w.poke()
			}
		default:
			if w.net == nil {
				// adopted: Setup is idempotent and returns the same netns/IP
				if n, err := w.a.cfg.Network.Setup(ctx, podRef(pod)); err == nil {
					w.setNet(&n)
				} else {
					w.log.Warn("read pod network", "err", err)
				}
			}
			w.rememberIDs(st)
			wasEvicted := w.evicted != ""
			if due := w.syncVolumes(ctx, pod, &st, now); !due.IsZero() {
				next = minTime(next, due)
			}
			var due time.Time
			acted := w.evicted != "" && !wasEvicted // stopped: see it
			switch {
			case w.evicted != "":
				// stays stopped: its controller replaces it
			case len(pod.Spec.InitContainers) > 0:
				due, acted = w.reconcileInit(ctx, pod, &st, now)
				if acted { // containers were created or started: see them
					if st2, err := w.readStatus(ctx, id); err == nil {
						st = st2
						w.rememberIDs(st)
					}
				}
				if w.initDone && !w.initFailed {
					d, a := w.reconcileContainers(ctx, pod, &st, now)
					due, acted = minTime(due, d), acted || a
				}
			default:
				due, acted = w.reconcileContainers(ctx, pod, &st, now)
			}
			if !due.IsZero() {
				next = minTime(next, due)
			}
			if acted { // re-read after (re)starts so the status shows them
				if st2, err := w.readStatus(ctx, id); err == nil {
					st = st2
					w.rememberIDs(st)
				}
			}
			rs = &st
		}
	}
	if ctx.Err() != nil {
		return next // agent shutting down: a status from a cut-short sync would be wrong
	}
	status := w.buildStatus(pod, rs, w.a.clock.Now())
	if wrote, err := w.a.writeStatus(ctx, w.uid, status); err != nil {
		w.log.Warn("write pod status", "err", err)
	} else if wrote {
		w.log.Debug("pod status written", "phase", status.Phase)
	}
	return next
}

// workerResync is how often a worker syncs its pod without a poke: at
// store pace while the runtime is polled, rarely while its events stream.
func (a *Agent) workerResync() time.Duration {
	if a.eventsLive() {
		return a.cfg.RuntimeResyncInterval
	}
	return a.cfg.SyncInterval
}

// listedRuntime reports whether a runtime list succeeded since the agent
// started.
func (a *Agent) listedRuntime() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.runtimeListed
}

// runtimeStatus is the runtime's view of pod id: the last one read, unless
// an event made it stale, events do not stream, init containers are running
// (their exits are polled), or it is older than RuntimeResyncInterval.
func (w *podWorker) runtimeStatus(ctx context.Context, pod *corev1.Pod, id string) (runtimeapi.PodStatus, error) {
	w.mu.Lock()
	stale := w.stale
	w.stale = false
	w.mu.Unlock()
	initRunning := len(pod.Spec.InitContainers) > 0 && !w.initDone
	if !stale && !initRunning && w.cached != nil && w.cachedID == id && w.a.eventsLive() &&
		w.a.clock.Now().Before(w.cachedAt.Add(w.a.cfg.RuntimeResyncInterval)) {
		return w.cached.Clone(), nil
	}
	return w.readStatus(ctx, id)
}

// readStatus reads the runtime's view of pod id, and keeps it.
func (w *podWorker) readStatus(ctx context.Context, id string) (runtimeapi.PodStatus, error) {
	st, err := w.a.rt.PodStatus(ctx, id)
	if err != nil {
		w.cached = nil
		return st, err
	}
	c := st.Clone()
	w.cached, w.cachedID, w.cachedAt = &c, id, w.a.clock.Now()
	return st, nil
}

// takeRuntimeBack: after the runtime was down, what failed for that reason
// is retried at once, not after its back-off (a crash loop keeps its own).
func (w *podWorker) takeRuntimeBack() {
	w.mu.Lock()
	back := w.back
	w.back = false
	w.mu.Unlock()
	if !back {
		return
	}
	w.createRetryAt = time.Time{}
	for _, c := range w.containers {
		if c.waiting == "RunContainerError" {
			c.backoffUntil = time.Time{}
		}
	}
}

// adoptOffered takes the runtime pods of the last runtime list: with no
// runtime pod, the worker adopts the first (a pod left by an earlier agent,
// or by a RunPod cut short); every other one is a duplicate and removed, so
// that a pod runs once. A list never names a pod this worker created after
// it, and the worker's own pod is never removed.
func (w *podWorker) adoptOffered(ctx context.Context) {
	w.mu.Lock()
	ids, ok := w.offered, w.hasOffer
	w.offered, w.hasOffer = nil, false
	w.mu.Unlock()
	if !ok {
		return
	}
	cur := w.podID()
	for _, id := range ids {
		switch {
		case id == cur:
		case cur == "":
			cur = id
			w.setPodID(id)
			w.log.Info("adopting runtime pod", "id", id)
		default:
			w.log.Warn("removing a duplicate runtime pod of this pod", "id", id, "kept", cur)
			if err := w.a.rt.RemovePod(ctx, id); err != nil {
				w.log.Warn("remove duplicate runtime pod", "id", id, "err", err)
			}
		}
	}
}

// restoreCounts takes restart counts from the stored status once, so they
// survive an agent restart without the agent persisting anything.
func (w *podWorker) restoreCounts(pod *corev1.Pod) {
	if w.restored {
		return
	}
	w.restored = true
	if pod.Status.StartTime != nil {
		w.startTime = pod.Status.StartTime.Time
	}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, cs := range list {
			c := w.ctr(cs.Name)
			c.restartCount = cs.RestartCount
			if t := cs.LastTerminationState.Terminated; t != nil {
				c.lastTerm = t.DeepCopy()
			}
		}
	}
	if pod.Status.Phase == corev1.PodFailed && pod.Status.Reason == reasonEvicted {
		w.evicted = pod.Status.Message
		if w.evicted == "" {
			w.evicted = "evicted"
		}
		w.markAllDone(pod)
	}
}

// runtimePodGone forgets the runtime pod (it disappeared or is being
// recreated): a new one runs its init containers again.
func (w *podWorker) runtimePodGone() {
	w.setPodID("")
	w.initDone, w.initFailed = false, false
	for _, c := range w.containers {
		c.done, c.handledExit = false, time.Time{}
	}
}

// createFailed schedules the next try after create (or the creation of the
// app containers) failed.
func (w *podWorker) createFailed(now time.Time) {
	w.createBackoff = nextBackoff(w.createBackoff)
	w.createRetryAt = now.Add(w.createBackoff)
	if w.createPaced {
		// a ConfigMap, Secret or claim binding may come any time: retry at
		// resync pace
		w.createRetryAt = now.Add(w.a.cfg.SyncInterval)
	}
}

func (w *podWorker) createSucceeded() {
	w.createReason, w.createMessage, w.createPaced, w.createBackoff, w.createRetryAt = "", "", false, 0, time.Time{}
}

func (w *podWorker) ctr(name string) *ctrState {
	c, ok := w.containers[name]
	if !ok {
		c = &ctrState{}
		w.containers[name] = c
	}
	return c
}

func (w *podWorker) rememberIDs(st runtimeapi.PodStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range st.Containers {
		w.ids[c.Name] = c.ID
	}
}

func podRef(p *corev1.Pod) podnet.PodRef {
	return podnet.PodRef{UID: string(p.UID), Namespace: p.Namespace, Name: p.Name}
}

// create sets up the network and the volumes, resolves env, gets images
// and runs the pod. A pod with init containers is created empty: its
// containers come one at a time (reconcileInit). On failure it sets
// createReason/createMessage (the waiting reason shown on the containers)
// and returns the error.
func (w *podWorker) create(ctx context.Context, pod *corev1.Pod) (string, error) {
	fail := func(reason string, err error) (string, error) {
		w.createReason, w.createMessage = reason, err.Error()
		return "", err
	}
	if w.net == nil {
		n, err := w.a.cfg.Network.Setup(ctx, podRef(pod))
		if err != nil {
			return fail("ContainerCreating", fmt.Errorf("set up pod network: %w", err))
		}
		w.setNet(&n)
	}
	vp, err := w.a.vols.Setup(ctx, pod)
	if err != nil {
		reason, paced := volumeFailure(err)
		w.createPaced = paced
		return fail(reason, err)
	}
	if err := vp.ApplyFSGroup(pod, true); err != nil {
		return fail("ContainerCreating", err)
	}
	w.vols = vp
	w.nextVolSync = w.a.clock.Now().Add(w.a.cfg.SyncInterval)
	sb := w.sandbox(pod)
	if len(pod.Spec.InitContainers) == 0 {
		res := newEnvResolver(w.a.cfg.Store, pod.Namespace)
		for i := range pod.Spec.Containers {
			cs, reason, err := w.buildContainer(ctx, pod, &pod.Spec.Containers[i], res)
			if err != nil {
				return fail(reason, err)
			}
			sb.Containers = append(sb.Containers, cs)
		}
	}
	id, err := w.a.rt.RunPod(ctx, sb)
	if err != nil {
		return fail("RunContainerError", fmt.Errorf("run pod: %w", err))
	}
	for _, cs := range sb.Containers { // RunPod created and started them
		ref := containerRef(pod, &corev1.Container{Name: cs.Name})
		w.a.events.Eventf(ref, corev1.EventTypeNormal, "Created", "Created container %s", cs.Name)
		w.a.events.Eventf(ref, corev1.EventTypeNormal, "Started", "Started container %s", cs.Name)
	}
	if w.startTime.IsZero() {
		w.startTime = w.a.clock.Now()
	}
	w.initDone, w.initFailed = false, false
	return id, nil
}

// sandbox is the pod-level part of what the runtime runs (no containers).
// It needs the pod's network (w.net).
func (w *podWorker) sandbox(pod *corev1.Pod) runtimeapi.PodSandbox {
	sb := runtimeapi.PodSandbox{UID: string(pod.UID), Namespace: pod.Namespace, Name: pod.Name, Hostname: podHostname(pod),
		DNS: podDNS(pod, w.a.clusterDNS(), w.a.cfg.ClusterDomain)}
	if w.net != nil {
		sb.NetNSPath = w.net.NetNSPath
	}
	if pod.Spec.Hostname != "" {
		sb.Hostname = pod.Spec.Hostname
	}
	return sb
}

// buildContainer resolves a container's env and mounts and gets its image.
// On failure the reason is the container's waiting reason, and w.createPaced
// says whether to retry at resync pace.
func (w *podWorker) buildContainer(ctx context.Context, pod *corev1.Pod, c *corev1.Container, res *envResolver) (runtimeapi.ContainerSpec, string, error) {
	w.createPaced = false
	podIP := ""
	if w.net != nil && w.net.IP != nil {
		podIP = w.net.IP.String()
	}
	env, err := res.resolve(ctx, pod, c, podIP, w.a.cfg.NodeIP.String())
	var ce *configError
	if errors.As(err, &ce) {
		w.createPaced = true
		return runtimeapi.ContainerSpec{}, "CreateContainerConfigError", err
	}
	if err != nil {
		return runtimeapi.ContainerSpec{}, "ContainerCreating", err
	}
	if w.vols == nil {
		return runtimeapi.ContainerSpec{}, "ContainerCreating", errors.New("volumes not set up yet")
	}
	mounts, err := w.vols.Mounts(c, func(s string) string { return expand(s, env) })
	if err != nil {
		reason, paced := volumeFailure(err)
		if reason == "ContainerCreating" && !paced {
			reason = "CreateContainerError"
		}
		w.createPaced = paced
		return runtimeapi.ContainerSpec{}, reason, fmt.Errorf("container %s: %w", c.Name, err)
	}
	if reason, err := w.ensureImage(ctx, pod, c); err != nil {
		return runtimeapi.ContainerSpec{}, reason, err
	}
	sec, reason, err := w.security(ctx, pod, c)
	if err != nil {
		w.createPaced = errors.As(err, &ce)
		return runtimeapi.ContainerSpec{}, reason, err
	}
	cs := containerSpec(c, env)
	cs.Security = sec
	for _, m := range mounts {
		cs.Mounts = append(cs.Mounts, runtimeapi.Mount{Source: m.Source, Destination: m.Destination, ReadOnly: m.ReadOnly})
	}
	return cs, "", nil
}

// ensureImage pulls per imagePullPolicy; the reason names the failure. An
// image under localhost/ names this node's own storage, not a registry:
// it is never pulled, whatever the policy. A missing image that is never
// pulled fails at once (ErrImageNeverPull) and is looked for again at
// resync pace, so a `podman load` is noticed soon.
func (w *podWorker) ensureImage(ctx context.Context, pod *corev1.Pod, c *corev1.Container) (reason string, err error) {
	ref := containerRef(pod, c)
	rec := w.a.events
	defer func() {
		if err != nil {
			rec.Eventf(ref, corev1.EventTypeWarning, "Failed", "Error: %s", reason)
		}
	}()
	policy := c.ImagePullPolicy
	if policy == "" {
		policy = corev1.PullIfNotPresent
		if isLatest(c.Image) {
			policy = corev1.PullAlways
		}
	}
	local := isLocalImage(c.Image)
	if local {
		policy = corev1.PullNever
	}
	rt := w.a.rt
	if policy != corev1.PullAlways {
		ok, err := rt.ImageExists(ctx, c.Image)
		if err != nil {
			return "ErrImagePull", fmt.Errorf("check image %s: %w", c.Image, err)
		}
		if ok {
			rec.Eventf(ref, corev1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.Image)
			return "", nil
		}
		if policy == corev1.PullNever {
			w.createPaced = true
			if local {
				return "ErrImageNeverPull", fmt.Errorf("container %s: image %s is not in this node's storage; load it with `podman load` or `flotilla lab load` (images under localhost/ are never pulled): %w",
					c.Name, c.Image, runtimeapi.ErrImageNotPresent)
			}
			return "ErrImageNeverPull", fmt.Errorf("container %s: image %s is not in this node's storage and imagePullPolicy is Never: %w", c.Name, c.Image, runtimeapi.ErrImageNotPresent)
		}
	}
	if w.createBackoff > 0 {
		rec.Eventf(ref, corev1.EventTypeNormal, "BackOff", "Back-off pulling image %q", c.Image)
	}
	rec.Eventf(ref, corev1.EventTypeNormal, "Pulling", "Pulling image %q", c.Image)
	start := w.a.clock.Now()
	if err := rt.PullImage(ctx, c.Image); err != nil {
		rec.Eventf(ref, corev1.EventTypeWarning, "Failed", "Failed to pull image %q: %v", c.Image, err)
		if policy == corev1.PullAlways {
			// a local copy still lets the pod run, as with an offline registry
			if ok, _ := rt.ImageExists(ctx, c.Image); ok {
				w.log.Warn("pull failed, using local image", "image", c.Image, "err", err)
				return "", nil
			}
		}
		reason := "ErrImagePull"
		if w.createBackoff > 0 {
			reason = "ImagePullBackOff"
		}
		return reason, fmt.Errorf("pull image %s: %w", c.Image, err)
	}
	rec.Eventf(ref, corev1.EventTypeNormal, "Pulled", "Successfully pulled image %q in %s", c.Image, w.a.clock.Since(start).Round(time.Millisecond))
	return "", nil
}

// containerRef names a container of pod as the kubelet's Events do.
func containerRef(pod *corev1.Pod, c *corev1.Container) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
		ResourceVersion: pod.ResourceVersion, FieldPath: fmt.Sprintf("spec.containers{%s}", c.Name)}
}

// initContainerRef is containerRef for an init container.
func initContainerRef(pod *corev1.Pod, c *corev1.Container) *corev1.ObjectReference {
	ref := containerRef(pod, c)
	ref.FieldPath = fmt.Sprintf("spec.initContainers{%s}", c.Name)
	return ref
}

// isLocalImage reports whether the image is under localhost/ (no port):
// Podman's name for images made or loaded on this machine.
func isLocalImage(image string) bool {
	return strings.HasPrefix(image, "localhost/")
}

func isLatest(image string) bool {
	for i := len(image) - 1; i >= 0; i-- {
		switch image[i] {
		case '@':
			return false
		case ':':
			return image[i+1:] == "latest"
		case '/':
			return true
		}
	}
	return true
}

// containerSpec maps a Kubernetes container to the runtime's.
func containerSpec(c *corev1.Container, env map[string]string) runtimeapi.ContainerSpec {
	cs := runtimeapi.ContainerSpec{Name: c.Name, Image: c.Image, Env: env, WorkingDir: c.WorkingDir}
	for _, s := range c.Command {
		cs.Command = append(cs.Command, expand(s, env))
	}
	for _, s := range c.Args {
		cs.Args = append(cs.Args, expand(s, env))
	}
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		cs.CPUMillis = q.MilliValue()
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		cs.MemoryBytes = q.Value()
	}
	return cs
}

func nextBackoff(d time.Duration) time.Duration {
	if d <= 0 {
		return backoffInitial
	}
	return min(d*2, backoffMax)
}

func minTime(a, b time.Time) time.Time {
	if b.IsZero() || (!a.IsZero() && a.Before(b)) {
		return a
	}
	return b
}

// shouldRestart applies the pod's restartPolicy to an exit code.
func shouldRestart(policy corev1.RestartPolicy, exitCode int32) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return exitCode != 0
	default:
		return true
	}
}

// missingContainers names the pod's containers that the runtime pod lacks.
func missingContainers(pod *corev1.Pod, st runtimeapi.PodStatus) []string {
	var missing []string
	for _, c := range pod.Spec.Containers {
		if st.Container(c.Name) == nil {
			missing = append(missing, c.Name)
		}
	}
	return missing
}

// reconcileContainers handles exits (restart with back-off or not), starts
// and probes. It returns when something is next due (zero: nothing) and
// whether it started or restarted a container.
func (w *podWorker) reconcileContainers(ctx context.Context, pod *corev1.Pod, st *runtimeapi.PodStatus, now time.Time) (next time.Time, acted bool) {
	for i := range pod.Spec.Containers {
		spec := &pod.Spec.Containers[i]
		rc := st.Container(spec.Name)
		c := w.ctr(spec.Name)
		if rc == nil {
			continue
		}
		switch rc.State {
		case runtimeapi.ContainerExited:
			if rc.FinishedAt.After(c.handledExit) {
				c.handledExit = rc.FinishedAt
				c.lastTerm = terminated(rc)
				c.probes = probeState{}
				if !shouldRestart(pod.Spec.RestartPolicy, rc.ExitCode) {
					c.done = true
					break
				}
				c.done = false
				if !rc.StartedAt.IsZero() && rc.FinishedAt.Sub(rc.StartedAt) >= backoffReset {
					c.backoff = 0
				}
				c.backoff = nextBackoff(c.backoff)
				c.backoffUntil = rc.FinishedAt.Add(c.backoff)
				w.log.Info("container exited", "container", spec.Name, "code", rc.ExitCode, "restart_in", c.backoffUntil.Sub(now).Round(time.Second))
			}
			if c.done {
				break
			}
			if now.Before(c.backoffUntil) {
				next = minTime(next, c.backoffUntil)
				break
			}
			acted = true
			if !w.remountSubPaths(ctx, pod, spec, c, now) {
				next = minTime(next, c.backoffUntil)
			} else if w.startContainer(ctx, pod, c, rc.ID, spec.Name, now) {
				next = minTime(next, now) // re-check soon
			} else {
				next = minTime(next, c.backoffUntil)
			}
		case runtimeapi.ContainerCreated:
			acted = true
			if !w.startContainer(ctx, pod, c, rc.ID, spec.Name, now) {
				next = minTime(next, c.backoffUntil)
			}
		case runtimeapi.ContainerRunning:
			c.waiting, c.waitingMsg = "", ""
			if !rc.StartedAt.Equal(c.startedAt) {
				c.startedAt = rc.StartedAt
				c.probes = probeState{}
			}
			due, restart := w.probe(ctx, pod, spec, c, now)
			next = minTime(next, due)
			if restart {
				w.log.Info("liveness probe failed; restarting container", "container", spec.Name)
				w.a.events.Eventf(containerRef(pod, spec), corev1.EventTypeNormal, "Killing", "Container %s failed liveness probe, will be restarted", spec.Name)
				grace := defaultGrace
				if pod.Spec.TerminationGracePeriodSeconds != nil {
					grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
				}
				acted = true
				if err := w.a.rt.RestartContainer(ctx, rc.ID, grace); err != nil {
					w.log.Warn("restart container", "container", spec.Name, "err", err)
				} else {
					c.restartCount++
					c.lastTerm = &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "Error", Message: "liveness probe failed",
						StartedAt: rfcTime(rc.StartedAt), FinishedAt: rfcTime(w.a.clock.Now()), ContainerID: "podman://" + rc.ID}
					c.handledExit = w.a.clock.Now()
				}
				c.probes = probeState{}
			}
		}
	}
	return next, acted
}

// startContainer (re)starts an exited or created container; false on error,
// with a back-off set.
func (w *podWorker) startContainer(ctx context.Context, pod *corev1.Pod, c *ctrState, id, name string, now time.Time) bool {
	ref := containerRef(pod, &corev1.Container{Name: name})
	if !c.handledExit.IsZero() {
		w.a.events.Eventf(ref, corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s", name, pod.Name)
	}
	if err := w.a.rt.StartContainer(ctx, id); err != nil {
		w.a.events.Eventf(ref, corev1.EventTypeWarning, "Failed", "Error: %v", err)
		c.waiting, c.waitingMsg = "RunContainerError", err.Error()
		c.backoff = nextBackoff(c.backoff)
		c.backoffUntil = now.Add(c.backoff)
		w.log.Warn("start container", "container", name, "err", err)
		return false
	}
	c.waiting, c.waitingMsg = "", ""
	if !c.handledExit.IsZero() {
		c.restartCount++
	}
	w.a.events.Eventf(ref, corev1.EventTypeNormal, "Started", "Started container %s", name)
	return true
}

func terminated(rc *runtimeapi.ContainerStatus) *corev1.ContainerStateTerminated {
	reason := "Completed"
	if rc.ExitCode != 0 {
		reason = "Error"
	}
	if rc.OOMKilled {
		reason = "OOMKilled"
	}
	return &corev1.ContainerStateTerminated{
		ExitCode: rc.ExitCode, Reason: reason,
		StartedAt: rfcTime(rc.StartedAt), FinishedAt: rfcTime(rc.FinishedAt),
		ContainerID: "podman://" + rc.ID,
	}
}
