package reconciler_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/events"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler"
)

// eventLines are the stored Events as "Kind/name Reason: message", sorted.
func eventLines(t *testing.T, st store.Interface) []string {
	t.Helper()
	objs, _, err := st.List(context.Background(), "events", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		ev := o.(*corev1.Event)
		out = append(out, fmt.Sprintf("%s/%s %s: %s", ev.InvolvedObject.Kind, ev.InvolvedObject.Name, ev.Reason, ev.Message))
	}
	sort.Strings(out)
	return out
}

func withEvents(t *testing.T, st store.Interface, cfg reconciler.Config) reconciler.Config {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	b := events.New(ctx, events.Config{Store: st, Host: "server", Logger: testLogger(t)})
	cfg.Events = b.Recorder
	return cfg
}

// hasAll says which of want (substrings) no line contains.
func missing(lines []string, want ...string) string {
	var miss []string
	for _, w := range want {
		found := false
		for _, l := range lines {
			if strings.Contains(l, w) {
				found = true
			}
		}
		if !found {
			miss = append(miss, w)
		}
	}
	if len(miss) == 0 {
		return ""
	}
	return fmt.Sprintf("missing %q in %q", miss, lines)
}

// TestScaleUpRecordsEvents: the deployment controller records
// ScalingReplicaSet, the replicaset controller SuccessfulCreate and
// SuccessfulDelete, the scheduler Scheduled.
func TestScaleUpRecordsEvents(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Interface) {
		startKubelets(t, st, 1)
		startManagerWith(t, withEvents(t, st, reconciler.Config{Store: st, Logger: testLogger(t), ResyncPeriod: 2 * time.Second, MaxBackoff: time.Second}))
		create(t, st, newDeployment("web", 1, "nginx:1"))
		testkit.EventuallyWhy(t, "one replica", time.Minute, func() string { return converged(t, st, "web", 1) })
		mutate(t, st, "web", func(d *appsv1.Deployment) { three := int32(3); d.Spec.Replicas = &three })
		testkit.EventuallyWhy(t, "scale-up events", time.Minute, func() string {
			return missing(eventLines(t, st),
				"Deployment/web ScalingReplicaSet: Scaled up replica set web-",
				" to 1", " from 1 to 3",
				"SuccessfulCreate: Created pod: web-",
				"Scheduled: Successfully assigned default/web-")
		})
		mutate(t, st, "web", func(d *appsv1.Deployment) { one := int32(1); d.Spec.Replicas = &one })
		testkit.EventuallyWhy(t, "scale-down events", time.Minute, func() string {
			return missing(eventLines(t, st), " from 3 to 1", "SuccessfulDelete: Deleted pod: web-")
		})
	})
}

// TestFailedSchedulingEvent: a pod that fits nowhere gets a Warning
// FailedScheduling Event with the reason.
func TestFailedSchedulingEvent(t *testing.T) {
	st := store.MemoryFor(t)
	startKubelets(t, st, 1)
	startManagerWith(t, withEvents(t, st, reconciler.Config{Store: st, Logger: testLogger(t), ResyncPeriod: 50 * time.Millisecond}))
	create(t, st, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "big", Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("60")}}}}}})
	testkit.EventuallyWhy(t, "FailedScheduling", time.Minute, func() string {
		return missing(eventLines(t, st), "Pod/big FailedScheduling: 0/1 nodes are available: 1 Insufficient cpu")
	})
}
