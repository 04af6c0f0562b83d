package node

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// initPoll is how often a running init container is checked for its exit.
const initPoll = time.Second

// reconcileInit drives a pod that has init containers: it runs them in
// order, each to completion (exit 0) before the next, then creates the app
// containers (reconcileContainers starts them). The init containers are
// containers of the runtime pod, created when their turn comes and left
// exited, so that their status survives an agent restart; a runtime pod
// that has any app container has completed its init containers, and they
// never run again in it. It returns when it wants to run again and whether
// it created or started something.
func (w *podWorker) reconcileInit(ctx context.Context, pod *corev1.Pod, st *runtimeapi.PodStatus, now time.Time) (next time.Time, acted bool) {
	if w.net == nil {
		return time.Time{}, false // adopted, and the network could not be read: a container now would have none
	}
	if !w.initDone {
		for _, c := range pod.Spec.Containers {
			if st.Container(c.Name) != nil {
				w.initDone = true // adopted after the init containers completed
			}
		}
	}
	if !w.initDone {
		var done bool
		next, acted, done = w.runInitContainers(ctx, pod, st, now)
		if !done {
			return next, acted
		}
		w.initDone = true
		w.log.Info("init containers completed")
	}
	if len(missingContainers(pod, *st)) == 0 {
		return next, acted
	}
	if now.Before(w.createRetryAt) {
		return minTime(next, w.createRetryAt), acted
	}
	res := newEnvResolver(w.a.cfg.Store, pod.Namespace)
	sb := w.sandbox(pod)
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if st.Container(c.Name) != nil {
			continue
		}
		cs, reason, err := w.buildContainer(ctx, pod, c, res)
		if err == nil {
			if _, err = w.a.rt.CreateContainer(ctx, w.podID(), sb, cs); err != nil {
				reason, w.createPaced = "CreateContainerError", false
			} else {
				w.a.events.Eventf(containerRef(pod, c), corev1.EventTypeNormal, "Created", "Created container %s", c.Name)
			}
		}
		if err != nil {
			w.createReason, w.createMessage = reason, err.Error()
			w.createFailed(now)
			w.log.Info("container not created", "container", c.Name, "reason", reason, "err", err, "retry", w.createRetryAt.Sub(now))
			return minTime(next, w.createRetryAt), acted
		}
		acted = true
	}
	w.createSucceeded()
	return next, acted
}

// runInitContainers advances the init containers by one step. done reports
// that all of them completed.
func (w *podWorker) runInitContainers(ctx context.Context, pod *corev1.Pod, st *runtimeapi.PodStatus, now time.Time) (next time.Time, acted, done bool) {
	poll := now.Add(initPoll)
	for i := range pod.Spec.InitContainers {
		spec := &pod.Spec.InitContainers[i]
		c := w.ctr(spec.Name)
		rc := st.Container(spec.Name)
		if rc == nil { // its turn: create and start it
			if now.Before(c.backoffUntil) {
				return c.backoffUntil, false, false
			}
			if !w.createInit(ctx, pod, spec, c, now) {
				return c.backoffUntil, false, false
			}
			return poll, true, false
		}
		switch rc.State {
		case runtimeapi.ContainerExited:
			if rc.FinishedAt.After(c.handledExit) {
				c.handledExit = rc.FinishedAt
				c.lastTerm = terminated(rc)
				c.waiting, c.waitingMsg = "", ""
				switch {
				case rc.ExitCode == 0:
					c.done = true
				case pod.Spec.RestartPolicy == corev1.RestartPolicyNever:
					c.done, w.initFailed = true, true
					w.log.Info("init container failed; the pod fails (restartPolicy Never)", "container", spec.Name, "code", rc.ExitCode)
				default:
					c.done = false
					c.backoff = nextBackoff(c.backoff)
					c.backoffUntil = rc.FinishedAt.Add(c.backoff)
					w.log.Info("init container failed", "container", spec.Name, "code", rc.ExitCode, "restart_in", c.backoffUntil.Sub(now).Round(time.Second))
				}
			}
			switch {
			case c.done && rc.ExitCode == 0:
				continue
			case w.initFailed:
				return time.Time{}, false, false
			case now.Before(c.backoffUntil):
				return c.backoffUntil, false, false
			}
			if !w.startContainer(ctx, pod, c, rc.ID, spec.Name, now) {
				return c.backoffUntil, true, false
			}
			return poll, true, false
		case runtimeapi.ContainerCreated:
			if !w.startContainer(ctx, pod, c, rc.ID, spec.Name, now) {
				return c.backoffUntil, true, false
			}
			return poll, true, false
		default: // running: wait for its exit
			return poll, false, false
		}
	}
	return time.Time{}, false, true
}

// createInit creates and starts an init container; false (with the
// container's waiting reason and a retry time set) on failure.
func (w *podWorker) createInit(ctx context.Context, pod *corev1.Pod, spec *corev1.Container, c *ctrState, now time.Time) bool {
	retry := func(reason string, err error) bool {
		c.waiting, c.waitingMsg = reason, err.Error()
		if w.createPaced {
			c.backoffUntil = now.Add(w.a.cfg.SyncInterval)
		} else {
			c.backoff = nextBackoff(c.backoff)
			c.backoffUntil = now.Add(c.backoff)
		}
		w.log.Info("init container not started", "container", spec.Name, "reason", reason, "err", err, "retry", c.backoffUntil.Sub(now))
		return false
	}
	cs, reason, err := w.buildContainer(ctx, pod, spec, newEnvResolver(w.a.cfg.Store, pod.Namespace))
	if err != nil {
		return retry(reason, err)
	}
	w.createPaced = false
	id, err := w.a.rt.CreateContainer(ctx, w.podID(), w.sandbox(pod), cs)
	if err != nil {
		return retry("CreateContainerError", fmt.Errorf("create init container %s: %w", spec.Name, err))
	}
	ref := initContainerRef(pod, spec)
	w.a.events.Eventf(ref, corev1.EventTypeNormal, "Created", "Created container %s", spec.Name)
	if err := w.a.rt.StartContainer(ctx, id); err != nil {
		return retry("RunContainerError", fmt.Errorf("start init container %s: %w", spec.Name, err))
	}
	w.a.events.Eventf(ref, corev1.EventTypeNormal, "Started", "Started container %s", spec.Name)
	c.waiting, c.waitingMsg = "", ""
	w.log.Info("init container started", "container", spec.Name)
	return true
}

// initStatus is the status of the init containers, and the names of
// those not completed (for the Initialized condition).
func (w *podWorker) initStatuses(pod *corev1.Pod, rs *runtimeapi.PodStatus) ([]corev1.ContainerStatus, []string) {
	var out []corev1.ContainerStatus
	var incomplete []string
	for i := range pod.Spec.InitContainers {
		spec := &pod.Spec.InitContainers[i]
		c, cs, rc := w.containerStatusBase(spec, rs)
		started := false
		switch {
		case rc == nil:
			reason, msg := "PodInitializing", ""
			switch {
			case c.waiting != "":
				reason, msg = c.waiting, c.waitingMsg
			case rs == nil && i == 0 && w.createReason != "":
				reason, msg = w.createReason, w.createMessage // the pod could not be created
			}
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
		case rc.State == runtimeapi.ContainerRunning:
			cs.ContainerID, cs.ImageID = "podman://"+rc.ID, rc.ImageID
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: rfcTime(rc.StartedAt)}
			started = true
		case rc.State == runtimeapi.ContainerExited && (c.done || rc.ExitCode == 0 || w.initDone):
			cs.ContainerID, cs.ImageID = "podman://"+rc.ID, rc.ImageID
			cs.State.Terminated = terminated(rc)
			cs.Ready = rc.ExitCode == 0
			if c.lastTerm != nil && c.lastTerm.FinishedAt.Equal(&cs.State.Terminated.FinishedAt) {
				cs.LastTerminationState = corev1.ContainerState{}
			}
		case rc.State == runtimeapi.ContainerExited:
			cs.ContainerID, cs.ImageID = "podman://"+rc.ID, rc.ImageID
			reason, msg := "CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", c.backoff, spec.Name, pod.Name, pod.Namespace, pod.UID)
			if c.waiting != "" {
				reason, msg = c.waiting, c.waitingMsg
			}
			if c.backoff == 0 && c.waiting == "" { // exit not handled yet: show it
				cs.State.Terminated = terminated(rc)
			} else {
				cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
			}
		default:
			cs.ContainerID, cs.ImageID = "podman://"+rc.ID, rc.ImageID
			reason := "PodInitializing"
			if c.waiting != "" {
				reason = c.waiting
			}
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: c.waitingMsg}
		}
		cs.Started = &started
		if !cs.Ready && !w.initDone {
			incomplete = append(incomplete, spec.Name)
		}
		out = append(out, cs)
	}
	return out, incomplete
}
