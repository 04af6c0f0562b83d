package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
	"github.com/flotilla-dev/flotilla/volumes"
)

// reasonEvicted is the pod status reason of a pod the agent evicted (an
// emptyDir over its sizeLimit).
const reasonEvicted = "Evicted"

// volumeFailure classes an error of volumes.Manager: the container waiting
// reason, and whether to retry at resync pace (the cause is a change in
// the store, not a transient failure to back off from).
func volumeFailure(err error) (reason string, paced bool) {
	var ce *volumes.ConfigError
	var we *volumes.WaitError
	switch {
	case errors.As(err, &ce):
		return "CreateContainerConfigError", true
	case errors.As(err, &we):
		return "ContainerCreating", true
	}
	return "ContainerCreating", false
}

// syncVolumes keeps a running pod's volumes current. After an agent
// restart it sets them up once (idempotent: nothing is rewritten that did
// not change, a tmpfs lost with a reboot is mounted again); then every
// SyncInterval it rewrites the API volumes whose ConfigMaps or Secrets
// changed (in place: running containers see the new files) and measures
// the emptyDirs that have a sizeLimit, evicting the pod when one is over.
// It returns when it is next due (zero: never).
func (w *podWorker) syncVolumes(ctx context.Context, pod *corev1.Pod, st *runtimeapi.PodStatus, now time.Time) time.Time {
	if w.evictForDisk(ctx, pod) { // diskpressure.go
		return time.Time{}
	}
	if w.evicted != "" {
		if anyRunning(st) { // evicted by an agent that stopped before stopping it
			w.stopEvicted(ctx, pod)
		}
		return time.Time{}
	}
	if w.vols != nil {
		if len(pod.Spec.Volumes) == 0 {
			return time.Time{}
		}
		if now.Before(w.nextVolSync) {
			return w.nextVolSync
		}
	}
	w.nextVolSync = now.Add(w.a.cfg.SyncInterval)
	vp, err := w.a.vols.Setup(ctx, pod)
	if vp != nil && (err == nil || w.vols == nil) {
		w.vols = vp
	}
	if err == nil {
		err = vp.ApplyFSGroup(pod, false) // API volumes rewritten by this refresh
	}
	switch {
	case err != nil && err.Error() != w.volErr:
		// the pod keeps running with the volumes it has (a ConfigMap that
		// went keeps its last files, as with the kubelet)
		w.volErr = err.Error()
		w.log.Warn("refresh pod volumes", "err", err)
	case err == nil:
		w.volErr = ""
	}
	if len(pod.Spec.Volumes) == 0 {
		return time.Time{}
	}
	if volumes.HasSizeLimits(pod) {
		msg, err := w.a.vols.Exceeded(pod)
		if err != nil {
			w.log.Warn("measure emptyDir usage", "err", err)
		} else if msg != "" {
			w.evicted = msg
			w.markAllDone(pod)
			w.log.Warn("evicting pod", "reason", msg)
			w.stopEvicted(ctx, pod)
			return time.Time{}
		}
	}
	return w.nextVolSync
}

// stopEvicted stops an evicted pod's containers (they stay, exited, for
// their status and logs, until the pod is deleted).
func (w *podWorker) stopEvicted(ctx context.Context, pod *corev1.Pod) {
	grace := defaultGrace
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	if err := w.a.rt.StopPod(ctx, w.podID(), grace); err != nil && !errors.Is(err, runtimeapi.ErrNotFound) {
		w.log.Warn("stop evicted pod", "err", err)
	}
}

// markAllDone marks every container as not to be (re)started.
func (w *podWorker) markAllDone(pod *corev1.Pod) {
	for _, c := range pod.Spec.InitContainers {
		w.ctr(c.Name).done = true
	}
	for _, c := range pod.Spec.Containers {
		w.ctr(c.Name).done = true
	}
}

func anyRunning(st *runtimeapi.PodStatus) bool {
	for _, c := range st.Containers {
		if c.State == runtimeapi.ContainerRunning {
			return true
		}
	}
	return false
}

// remountSubPaths sets up the subPath mounts of container spec again before
// it is restarted (the same runtime container, whose mount sources are the
// subPath targets volumes.Pod.Mounts made): each subPath is opened safely
// again and its target re-bound when the file changed, so that a restart
// sees what the subPath names now, and a target lost with a host reboot is
// mounted again. False, with the container waiting and a back-off set, when
// that fails (a symlink planted in the volume: CreateContainerConfigError).
func (w *podWorker) remountSubPaths(ctx context.Context, pod *corev1.Pod, spec *corev1.Container, c *ctrState, now time.Time) bool {
	if w.vols == nil || !hasSubPath(spec) {
		return true
	}
	podIP := ""
	if w.net != nil && w.net.IP != nil {
		podIP = w.net.IP.String()
	}
	env, err := newEnvResolver(w.a.cfg.Store, pod.Namespace).resolve(ctx, pod, spec, podIP, w.a.cfg.NodeIP.String())
	var reason string
	var ce *configError
	switch {
	case errors.As(err, &ce):
		reason = "CreateContainerConfigError"
	case err != nil:
		reason = "ContainerCreating"
	default:
		if _, err = w.vols.Mounts(spec, func(s string) string { return expand(s, env) }); err == nil {
			return true
		}
		reason, _ = volumeFailure(err)
	}
	c.waiting, c.waitingMsg = reason, fmt.Sprintf("container %s: %v", spec.Name, err)
	c.backoff = nextBackoff(c.backoff)
	c.backoffUntil = now.Add(c.backoff)
	w.log.Warn("set up subPath mounts for a restart", "container", spec.Name, "err", err)
	return false
}

func hasSubPath(c *corev1.Container) bool {
	for _, vm := range c.VolumeMounts {
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			return true
		}
	}
	return false
}
