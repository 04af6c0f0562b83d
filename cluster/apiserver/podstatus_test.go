package apiserver_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
)

// TestPodStatusInit: the STATUS column of `flotilla get pods` while init
// containers run, as kubectl shows it.
func TestPodStatusInit(t *testing.T) {
	done := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	waiting := func(r string) corev1.ContainerState {
		return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: r}}
	}
	failed := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}
	for _, tc := range []struct {
		inits []corev1.ContainerState
		app   corev1.ContainerState
		want  string
	}{
		{[]corev1.ContainerState{running, waiting("PodInitializing")}, waiting("PodInitializing"), "Init:0/2"},
		{[]corev1.ContainerState{done, running}, waiting("PodInitializing"), "Init:1/2"},
		{[]corev1.ContainerState{done, waiting("CrashLoopBackOff")}, waiting("PodInitializing"), "Init:CrashLoopBackOff"},
		{[]corev1.ContainerState{failed, waiting("PodInitializing")}, waiting("PodInitializing"), "Init:Error"},
		{[]corev1.ContainerState{waiting("CreateContainerConfigError")}, waiting("PodInitializing"), "Init:CreateContainerConfigError"},
		{[]corev1.ContainerState{done, done}, running, "Running"},
		{[]corev1.ContainerState{done}, waiting("CrashLoopBackOff"), "CrashLoopBackOff"},
	} {
		p := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}
		for i, s := range tc.inits {
			p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: string(rune('a' + i))})
			p.Status.InitContainerStatuses = append(p.Status.InitContainerStatuses, corev1.ContainerStatus{State: s})
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{State: tc.app}}
		if tc.app.Running != nil {
			p.Status.Phase = corev1.PodRunning
		}
		if got := apiserver.PodStatus(p); got != tc.want {
			t.Errorf("%+v: status %q, want %q", tc.inits, got, tc.want)
		}
	}
}
