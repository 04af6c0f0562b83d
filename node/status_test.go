package node

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/schema"
)

// markNodeNotReady writes what the server's node lifecycle controller
// writes while the pod's node is not Ready.
func markNodeNotReady(t *testing.T, h *harness, name string) {
	t.Helper()
	p := schema.Copy(getPod(t, h.st, name))
	for i := range p.Status.Conditions {
		if c := &p.Status.Conditions[i]; c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
			c.Status, c.Reason, c.Message = corev1.ConditionFalse, "NodeNotReady", "node n1 is not ready (Ready=Unknown)"
			c.LastTransitionTime = metav1.NewTime(time.Now()).Rfc3339Copy()
		}
	}
	if _, err := h.st.UpdateStatus(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

func podReady(p *corev1.Pod) (corev1.ConditionStatus, string) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status, c.Reason
		}
	}
	return "", ""
}

// TestAgentCorrectsStatusChangedInTheStore: the agent compares what it
// computes with the store's copy of the status, not with its own last
// write, so a pod marked Ready=False/NodeNotReady by the server while its
// node was unreachable is marked Ready again by the agent, whether it kept
// running or restarted meanwhile; then it is idle again.
func TestAgentCorrectsStatusChangedInTheStore(t *testing.T) {
	h := newHarness(t)
	createPod(t, h.st, newPod("web"))
	_, stop := h.run(t)
	isReady := func() bool {
		st, reason := podReady(getPod(t, h.st, "web"))
		return st == corev1.ConditionTrue && reason == ""
	}
	testkit.EventuallyTrue(t, "pod Ready", 0, isReady)

	markNodeNotReady(t, h, "web")
	testkit.EventuallyTrue(t, "running agent marks the pod Ready again", 0, isReady)

	stop()
	markNodeNotReady(t, h, "web")
	if st, reason := podReady(getPod(t, h.st, "web")); st != corev1.ConditionFalse || reason != "NodeNotReady" {
		t.Fatalf("mark not in place: %s/%s", st, reason)
	}
	h.run(t)
	testkit.EventuallyTrue(t, "restarted agent marks the pod Ready again", 0, isReady)
	if n := h.rt.CountCalls("RunPod"); n != 1 {
		t.Fatalf("RunPod called %d times, want 1 (the pod adopted, not restarted)", n)
	}
	p := getPod(t, h.st, "web")
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.ContainersReady && c.Status != corev1.ConditionTrue {
			t.Fatalf("ContainersReady %+v", c)
		}
	}
	writes := h.st.podStatusWrites.Load()
	h.waitSyncs(t, 4) // several resyncs
	if w := h.st.podStatusWrites.Load(); w != writes {
		t.Fatalf("%d more status writes after the correction", w-writes)
	}
}
