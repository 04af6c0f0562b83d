package admission_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler"
	"github.com/flotilla-dev/flotilla/schema"
)

// TestControllersConvergeThroughThePipeline runs every controller and two
// simulated agents writing through the pipeline (the CUE schema on), on
// objects from Git: what the cluster writes on its own — ReplicaSets, pods,
// bindings, claims, volumes, endpoint slices, statuses, a Deployment's
// revision annotation on Git's object — passes it, and everything
// converges.
func TestControllersConvergeThroughThePipeline(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := range 2 {
		k := &reconciler.SimKubelet{Store: f.ctrl, NodeName: fmt.Sprintf("node-%d", i), Logger: testkit.Logger(t)}
		if err := k.Register(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := k.Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("simkubelet: %v", err)
			}
		}()
	}
	m, err := reconciler.New(reconciler.Config{Store: f.ctrl, Logger: testkit.Logger(t), ResyncPeriod: 2 * time.Second, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := m.Run(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()

	git := f.p.Store(f.raw, admission.Git)
	fromGit := func(o schema.Object) {
		t.Helper()
		o.SetAnnotations(map[string]string{schema.AnnotationManagedBy: schema.ManagedByGit, schema.AnnotationSource: "app.yaml:1"})
		if o.GetNamespace() == "" {
			o.SetNamespace("default")
		}
		if _, err := git.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	fromGit(obj(t, fmt.Sprintf(deployYAML, 3)))
	fromGit(obj(t, fmt.Sprintf(svcYAML, "web")))
	data, err := os.ReadFile("../../reconciler/testdata/web-statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		fromGit(obj(t, doc))
	}

	testkit.Eventually(t, "the deployment, the statefulset and the service converge", time.Minute, func() error {
		d := getAs[*appsv1.Deployment](t, f, "deployments", "web")
		if d.Status.ReadyReplicas != 3 || d.Status.UpdatedReplicas != 3 || d.Annotations["deployment.kubernetes.io/revision"] != "1" {
			return fmt.Errorf("deployment status %+v, annotations %v", d.Status, d.Annotations)
		}
		s := getAs[*appsv1.StatefulSet](t, f, "statefulsets", "web")
		if s.Status.ReadyReplicas != 2 {
			return fmt.Errorf("statefulset status %+v", s.Status)
		}
		for _, c := range []string{"www-web-0", "www-web-1"} {
			if pvc := getAs[*corev1.PersistentVolumeClaim](t, f, "persistentvolumeclaims", c); pvc.Status.Phase != corev1.ClaimBound {
				return fmt.Errorf("claim %s is %s", c, pvc.Status.Phase)
			}
		}
		slices, _, err := f.raw.List(ctx, "endpointslices", store.ListOptions{Namespace: "default", LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil || len(slices) == 0 || len(slices[0].(*discoveryv1.EndpointSlice).Endpoints) != 3 {
			return fmt.Errorf("endpoint slices of web: %d (%v)", len(slices), err)
		}
		return nil
	})
	// Every pod was defaulted on its way in, and bound.
	objs, _, err := f.raw.List(ctx, "pods", store.ListOptions{Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if p.Spec.NodeName == "" || p.Spec.EnableServiceLinks == nil || p.Spec.SchedulerName != corev1.DefaultSchedulerName {
			t.Errorf("pod %s: node %q, not defaulted", p.Name, p.Spec.NodeName)
		}
	}
	// Git's object kept Git's fields and bookkeeping.
	d := getAs[*appsv1.Deployment](t, f, "deployments", "web")
	if *d.Spec.Replicas != 3 || d.Annotations[schema.AnnotationManagedBy] != schema.ManagedByGit || d.Generation != 1 {
		t.Errorf("Git's deployment changed: replicas %d, annotations %v, generation %d", *d.Spec.Replicas, d.Annotations, d.Generation)
	}
}

func getAs[T schema.Object](t *testing.T, f *fixture, resource, name string) T {
	t.Helper()
	o, err := f.raw.Get(context.Background(), resource, "default", name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(T)
}
