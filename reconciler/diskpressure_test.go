package reconciler_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler/nodelifecycle"
)

// setDiskPressure writes node's DiskPressure condition, as its agent does.
func setDiskPressure(t *testing.T, st store.Interface, name string, pressure bool) {
	t.Helper()
	n := getNode(t, st, name)
	status := corev1.ConditionFalse
	if pressure {
		status = corev1.ConditionTrue
	}
	c := corev1.NodeCondition{Type: corev1.NodeDiskPressure, Status: status, LastTransitionTime: metav1.Now()}
	found := false
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeDiskPressure {
			n.Status.Conditions[i], found = c, true
		}
	}
	if !found {
		n.Status.Conditions = append(n.Status.Conditions, c)
	}
	if _, err := st.UpdateStatus(context.Background(), n); err != nil {
		t.Fatal(err)
	}
}

// TestDiskPressureNodeGetsNoPods, through the Badger store and the
// Manager: a node whose agent reports DiskPressure=True is tainted
// node.kubernetes.io/disk-pressure:NoSchedule by the node lifecycle
// controller, the scheduler binds nothing there, and the taint goes when
// the pressure does.
func TestDiskPressureNodeGetsNoPods(t *testing.T) {
	st := store.MemoryFor(t)
	startKubelets(t, st, 2)
	setDiskPressure(t, st, "node-1", true)
	startManager(t, st)
	testkit.EventuallyWhy(t, "node-1 tainted disk-pressure", time.Minute, func() string {
		if n := getNode(t, st, "node-1"); !hasTaint(n, nodelifecycle.TaintDiskPressure) {
			return fmt.Sprintf("taints %v", n.Spec.Taints)
		}
		return ""
	})
	create(t, st, newDeployment("web", 4, "nginx:1"))
	testkit.EventuallyWhy(t, "4 running pods", time.Minute, func() string { return converged(t, st, "web", 4) })
	for _, p := range pods(t, st) {
		if p.Spec.NodeName != "node-0" {
			t.Errorf("pod %s on %s, want node-0 (node-1 has disk pressure)", p.Name, p.Spec.NodeName)
		}
	}
	setDiskPressure(t, st, "node-1", false)
	testkit.EventuallyWhy(t, "node-1 untainted", time.Minute, func() string {
		if n := getNode(t, st, "node-1"); len(n.Spec.Taints) != 0 {
			return fmt.Sprintf("taints %v", n.Spec.Taints)
		}
		return ""
	})
}
