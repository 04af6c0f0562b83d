package admission_test

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/schema"
)

// diskStore is a Badger store on disk that fsyncs every commit (the store's default).
func diskStore(b *testing.B) *store.Badger {
	b.Helper()
	st, err := store.Open(store.Config{Dir: filepath.Join(b.TempDir(), "db"), Logger: testkit.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

func pendingPod(i int) *corev1.Pod {
	yes := true
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("web-%05d", i), Labels: map[string]string{"app": "web"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-abc", UID: "uid-rs", Controller: &yes}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "localhost/busybox:latest",
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
	}
	k, _ := schema.KindByName("Pod")
	schema.SetTypeMeta(p, k)
	schema.SetDefaults(p) // as created through the pipeline
	return p
}

// BenchmarkBindings binds 10,000 pending pods in Txns of 500 through the
// admission store (the cluster's, the CUE schema on) over a Badger store
// on disk with fsync: what the scheduler does. Reports pods/s.
//
// The store-only variant is the same without the pipeline, for the
// pipeline's share.
//
//	go test -run '^$' -bench Bindings -benchtime 3x ./cluster/admission/
func BenchmarkBindings(b *testing.B) {
	b.Run("admitted", func(b *testing.B) { benchBindings(b, true) })
	b.Run("store-only", func(b *testing.B) { benchBindings(b, false) })
}

func benchBindings(b *testing.B, admitted bool) {
	const pods, batch = 10000, 500
	v := cueValidator(b)
	p, err := admission.New(admission.Config{Validator: v})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var total, cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		raw := diskStore(b)
		for i := 0; i < pods; i += batch {
			if _, err := raw.Txn(ctx, func(tx store.Tx) error {
				for j := i; j < i+batch; j++ {
					if _, err := tx.Create(pendingPod(j)); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
		objs, _, err := raw.List(ctx, "pods", store.ListOptions{Namespace: "default"})
		if err != nil || len(objs) != pods {
			b.Fatalf("%d pods: %v", len(objs), err)
		}
		var st store.Interface = raw
		if admitted {
			st = p.Store(raw, admission.Cluster)
		}
		b.StartTimer()
		start, cpuStart := time.Now(), cpuTime()
		for i := 0; i < pods; i += batch {
			if _, err := st.Txn(ctx, func(tx store.Tx) error {
				for _, o := range objs[i : i+batch] {
					pod := schema.Copy(o.(*corev1.Pod))
					pod.Spec.NodeName = fmt.Sprintf("node-%d", i/batch%10)
					if _, err := tx.Update(pod); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
		total += time.Since(start)
		cpu += cpuTime() - cpuStart
	}
	b.ReportMetric(float64(pods)*float64(b.N)/total.Seconds(), "pods/s")
	// The CPU time per binding (the process's, Badger's goroutines
	// included) is steadier than pods/s on a shared machine.
	b.ReportMetric(float64(cpu.Microseconds())/float64(pods*b.N), "cpu-µs/pod")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAdmitPodCreate is the pipeline's cost for one pod create
// (defaults, Go checks, the CUE schema), without the store.
//
//	go test -run '^$' -bench AdmitPodCreate ./cluster/admission/
func BenchmarkAdmitPodCreate(b *testing.B) {
	p, err := admission.New(admission.Config{Validator: cueValidator(b)})
	if err != nil {
		b.Fatal(err)
	}
	k, _ := schema.KindByName("Pod")
	for b.Loop() {
		w := &admission.Write{Op: admission.Create, Kind: k, Object: pendingPod(1)}
		p.Prepare(w, true)
		if w.Refused() {
			b.Fatal(w.Err())
		}
	}
}
