package reconciler_test

import (
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	appsv1 "k8s.io/api/apps/v1"
)

// TestScale500 rolls out a Deployment of 500 pods over 10 simulated nodes
// and then a new template: a smoke test that nothing is quadratic enough
// to hurt at the size of a small cluster. Skipped with -short.
func TestScale500(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	st := store.MemoryFor(t)
	startKubelets(t, st, 10)
	startManager(t, st)
	start := time.Now()
	create(t, st, newDeployment("big", 500, "app:1"))
	testkit.EventuallyWhy(t, "500 running pods", time.Minute, func() string { return converged(t, st, "big", 500) })
	t.Logf("500 pods running after %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	mutate(t, st, "big", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "app:2" })
	testkit.EventuallyWhy(t, "rolled out", time.Minute, func() string { return converged(t, st, "big", 500) })
	t.Logf("rolling update of 500 pods took %s", time.Since(start).Round(time.Millisecond))
}
