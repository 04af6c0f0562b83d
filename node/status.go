package node

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// rfcTime is t at the precision the API keeps (seconds), so that a status
// read back compares equal to the one computed; zero stays zero.
func rfcTime(t time.Time) metav1.Time {
	if t.IsZero() {
		return metav1.Time{}
	}
	return metav1.NewTime(t).Rfc3339Copy()
}

func rfcTimePtr(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	v := rfcTime(t)
	return &v
}

// statusEqual compares pod statuses as the API would (times by instant).
func statusEqual(a, b corev1.PodStatus) bool {
	return equality.Semantic.DeepEqual(a, b)
}

// buildStatus computes the pod status from the runtime's view (nil: no
// runtime pod) and the worker's bookkeeping. It reads no clock but now and
// does no I/O. Condition transition times are kept from the stored status
// when the condition did not change, so an unchanged pod gives an equal
// status.
func (w *podWorker) buildStatus(pod *corev1.Pod, rs *runtimeapi.PodStatus, now time.Time) corev1.PodStatus {
	old := pod.Status
	st := corev1.PodStatus{HostIP: w.a.cfg.NodeIP.String(), QOSClass: old.QOSClass}
	st.HostIPs = []corev1.HostIP{{IP: st.HostIP}}
	if w.net != nil && w.net.IP != nil && rs != nil {
		st.PodIP = w.net.IP.String()
		st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
	}
	if !w.startTime.IsZero() {
		st.StartTime = rfcTimePtr(w.startTime)
	}

	initializing := len(pod.Spec.InitContainers) > 0 && !w.initDone
	var incomplete []string
	st.InitContainerStatuses, incomplete = w.initStatuses(pod, rs)

	allReady := len(pod.Spec.Containers) > 0
	var running, waiting, succeeded, failed, neverStarted int
	for i := range pod.Spec.Containers {
		spec := &pod.Spec.Containers[i]
		c, cs, rc := w.containerStatusBase(spec, rs)
		started := false
		switch {
		case rc == nil:
			reason, msg := "ContainerCreating", ""
			switch {
			case initializing:
				reason = "PodInitializing"
			case w.createReason != "":
				reason, msg = w.createReason, w.createMessage
			}
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
			waiting++
			neverStarted++
		case rc.State == runtimeapi.ContainerRunning:
			cs.ContainerID = "podman://" + rc.ID
			cs.ImageID = rc.ImageID
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: rfcTime(rc.StartedAt)}
			started = true
			cs.Ready = spec.ReadinessProbe == nil || c.probes.ready
			running++
		case rc.State == runtimeapi.ContainerExited && c.done:
			cs.ContainerID = "podman://" + rc.ID
			cs.ImageID = rc.ImageID
			cs.State.Terminated = terminated(rc)
			if c.lastTerm != nil && c.lastTerm.FinishedAt.Equal(&cs.State.Terminated.FinishedAt) {
				cs.LastTerminationState = corev1.ContainerState{} // it is the current state
			}
			if rc.ExitCode == 0 {
				succeeded++
			} else {
				failed++
			}
		case rc.State == runtimeapi.ContainerExited:
			cs.ContainerID = "podman://" + rc.ID
			cs.ImageID = rc.ImageID
			reason, msg := "CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", c.backoff, spec.Name, pod.Name, pod.Namespace, pod.UID)
			if c.waiting != "" {
				reason, msg = c.waiting, c.waitingMsg
			}
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
			waiting++
		default: // created, never started (or unknown)
			cs.ContainerID = "podman://" + rc.ID
			cs.ImageID = rc.ImageID
			reason := "ContainerCreating"
			if c.waiting != "" {
				reason = c.waiting
			}
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: c.waitingMsg}
			waiting++
			neverStarted++
		}
		cs.Started = &started
		if !cs.Ready {
			allReady = false
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}

	n := len(pod.Spec.Containers)
	switch {
	case w.evicted != "" || w.initFailed:
		st.Phase = corev1.PodFailed
	case rs == nil || initializing || (running == 0 && neverStarted > 0):
		st.Phase = corev1.PodPending
	case running == 0 && waiting == 0 && failed > 0:
		st.Phase = corev1.PodFailed
	case running == 0 && waiting == 0 && succeeded == n:
		st.Phase = corev1.PodSucceeded
	default:
		st.Phase = corev1.PodRunning
	}
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		allReady = false
	}

	if w.evicted != "" {
		st.Reason, st.Message = reasonEvicted, w.evicted
	}
	initialized, initReason, initMsg := corev1.ConditionTrue, "", ""
	if len(incomplete) > 0 {
		initialized, initReason = corev1.ConditionFalse, "ContainersNotInitialized"
		initMsg = fmt.Sprintf("containers with incomplete status: %v", incomplete)
	}
	ready := corev1.ConditionFalse
	reason := "ContainersNotReady"
	if allReady {
		ready, reason = corev1.ConditionTrue, ""
	}
	if st.Phase == corev1.PodSucceeded {
		reason = "PodCompleted"
	}
	conds := []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
		{Type: corev1.PodInitialized, Status: initialized, Reason: initReason, Message: initMsg},
		{Type: corev1.ContainersReady, Status: ready, Reason: reason},
		{Type: corev1.PodReady, Status: ready, Reason: reason},
	}
	for i := range conds {
		conds[i].LastTransitionTime = rfcTime(now)
		for _, oc := range old.Conditions {
			if oc.Type == conds[i].Type && oc.Status == conds[i].Status {
				conds[i].LastTransitionTime = oc.LastTransitionTime
			}
		}
	}
	st.Conditions = conds
	return st
}

// containerStatusBase is what an init or app container's status starts
// from: its bookkeeping, the status with name, image, restarts and last
// termination, and what the runtime reports of it (nil if nothing).
func (w *podWorker) containerStatusBase(spec *corev1.Container, rs *runtimeapi.PodStatus) (*ctrState, corev1.ContainerStatus, *runtimeapi.ContainerStatus) {
	c := w.ctr(spec.Name)
	cs := corev1.ContainerStatus{Name: spec.Name, Image: spec.Image, RestartCount: c.restartCount}
	if c.lastTerm != nil {
		cs.LastTerminationState.Terminated = c.lastTerm.DeepCopy()
	}
	var rc *runtimeapi.ContainerStatus
	if rs != nil {
		rc = rs.Container(spec.Name)
	}
	return c, cs, rc
}
