package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/schema"
)

// BenchmarkScheduleThroughStore is scheduling end to end through the store:
// the scheduler controller over a Badger store on disk with every commit
// fsynced, 10,000 pending pods and 1,000 nodes, one pass, until every
// binding is committed. It reports pods/s (the target: 5,000). batch=1 is
// one transaction per binding, for comparison, on 1,000 pods.
func BenchmarkScheduleThroughStore(b *testing.B) {
	for _, bc := range []struct {
		batch, pods int
	}{{DefaultBatchSize, 10000}, {1, 1000}} {
		b.Run(fmt.Sprintf("pods=%d/nodes=1000/batch=%d", bc.pods, bc.batch), func(b *testing.B) {
			bound := 0
			var elapsed time.Duration
			for range b.N {
				b.StopTimer()
				c, st := throughStore(b, bc.pods, 1000, bc.batch)
				b.StartTimer()
				start := time.Now()
				if _, err := c.Reconcile(context.Background(), passKey); err != nil {
					b.Fatal(err)
				}
				elapsed += time.Since(start)
				b.StopTimer()
				n := countBound(b, st)
				if n != bc.pods {
					b.Fatalf("%d of %d pods bound", n, bc.pods)
				}
				bound += n
				b.StartTimer()
			}
			b.ReportMetric(float64(bound)/elapsed.Seconds(), "pods/s")
		})
	}
}

// throughStore opens a fsynced store in a fresh directory holding the
// synthetic cluster, and the scheduler over it with its cache synced. The
// scheduler writes through the admission pipeline, with the real CUE
// validator, as it does in a server: the figure is what binding costs
// end to end.
func throughStore(b *testing.B, pods, nodes, batch int) (*Controller, store.Interface) {
	b.Helper()
	st, err := store.Open(store.Config{Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	ps, ns := SyntheticCluster(pods, nodes)
	var objs []schema.Object
	for _, n := range ns {
		n.APIVersion, n.Kind = "v1", "Node"
		objs = append(objs, n)
	}
	for _, p := range ps {
		p.APIVersion, p.Kind = "v1", "Pod"
		objs = append(objs, p)
	}
	for start := 0; start < len(objs); start += 500 {
		if _, err := st.Txn(context.Background(), func(tx store.Tx) error {
			for _, o := range objs[start:min(start+500, len(objs))] {
				if _, err := tx.Create(o); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	v, err := schema.NewValidator()
	if err != nil {
		b.Fatal(err)
	}
	pipe, err := admission.New(admission.Config{Validator: v})
	if err != nil {
		b.Fatal(err)
	}
	writes := pipe.Store(st, admission.Cluster)
	log := slog.New(slog.DiscardHandler)
	ca := cache.New(st, log, 0)
	q := controller.NewQueue("scheduler", 0)
	c := New(controller.Deps{Name: "scheduler", Store: writes, Cache: ca, Queue: q, Clock: clock.RealClock{}, Log: log,
		Status: controller.NewStatusWriter(writes, ca, clock.RealClock{})}, Config{Settle: -1, BatchSize: batch})
	ctx, cancel := context.WithCancel(context.Background())
	ca.Start(ctx)
	b.Cleanup(func() { cancel(); ca.Wait() })
	if !ca.WaitForSync(ctx) {
		b.Fatal("cache did not sync")
	}
	for len(ca.Informer("pods").Keys()) < pods {
		select {
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return c, st
}

func countBound(b *testing.B, st store.Interface) int {
	b.Helper()
	objs, _, err := st.List(context.Background(), "pods", store.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, o := range objs {
		if o.(*corev1.Pod).Spec.NodeName != "" {
			n++
		}
	}
	return n
}
