package reconciler_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler"
	"github.com/flotilla-dev/flotilla/reconciler/nodelifecycle"
)

func getNode(t *testing.T, st store.Interface, name string) *corev1.Node {
	t.Helper()
	o, err := st.Get(context.Background(), "nodes", "", name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*corev1.Node)
}

func nodeReadyCondition(n *corev1.Node) corev1.NodeCondition {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c
		}
	}
	return corev1.NodeCondition{}
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

// podsPerNode counts the pods of the default namespace by node ("" for unbound).
func podsPerNode(t *testing.T, st store.Interface) map[string]int {
	out := map[string]int{}
	for _, p := range pods(t, st) {
		out[p.Spec.NodeName]++
	}
	return out
}

// TestNodeFailureMovesPods is scope item "node lifecycle" end to end with
// the Badger store, the Manager, two simulated kubelets and a fake gossip
// membership: a Deployment of 4 spreads 2/2; node B's member fails → B is
// Ready=Unknown and tainted; after the eviction timeout its pods are
// deleted and recreated on A; B alive again and heartbeating → Ready and
// untainted, with no pods bound to it (its agent would remove the old ones
// as orphans).
func TestNodeFailureMovesPods(t *testing.T) {
	st := store.MemoryFor(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	kubelets := map[string]*reconciler.SimKubelet{}
	now := time.Now()
	members := nodelifecycle.NewFakeMembership()
	for _, name := range []string{"node-a", "node-b"} {
		k := &reconciler.SimKubelet{Store: st, NodeName: name, Logger: testLogger(t), HeartbeatInterval: -1}
		if err := k.Register(ctx); err != nil {
			t.Fatal(err)
		}
		kubelets[name] = k
		members.Join(name, now)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := k.Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("simkubelet: %v", err)
			}
		}()
	}
	startManagerWith(t, reconciler.Config{
		Store: st, Logger: testLogger(t), ResyncPeriod: 2 * time.Second, MaxBackoff: time.Second,
		Membership: members, PodEvictionTimeout: time.Second,
	})

	create(t, st, newDeployment("web", 4, "nginx:1"))
	eventually(t, "4 running pods", func() string { return converged(t, st, "web", 4) })
	if got := podsPerNode(t, st); got["node-a"] != 2 || got["node-b"] != 2 {
		t.Fatalf("pods per node %v, want 2/2", got)
	}

	members.Fail("node-b", time.Now())
	eventually(t, "node-b Unknown and tainted", func() string {
		n := getNode(t, st, "node-b")
		c := nodeReadyCondition(n)
		if c.Status != corev1.ConditionUnknown || c.Reason != nodelifecycle.ReasonNodeStatusUnknown || !hasTaint(n, nodelifecycle.TaintUnreachable) {
			return fmt.Sprintf("ready %s/%s %q, taints %v", c.Status, c.Reason, c.Message, n.Spec.Taints)
		}
		return ""
	})
	eventually(t, "all 4 pods running on node-a", func() string {
		if bad := converged(t, st, "web", 4); bad != "" {
			return bad
		}
		if got := podsPerNode(t, st); got["node-a"] != 4 {
			return fmt.Sprintf("pods per node %v", got)
		}
		return ""
	})
	if n := getNode(t, st, "node-a"); nodeReadyCondition(n).Status != corev1.ConditionTrue || len(n.Spec.Taints) != 0 {
		t.Errorf("node-a touched: %+v, taints %v", nodeReadyCondition(n), n.Spec.Taints)
	}

	members.Join("node-b", time.Now())
	if err := kubelets["node-b"].Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node-b Ready and untainted", func() string {
		n := getNode(t, st, "node-b")
		if c := nodeReadyCondition(n); c.Status != corev1.ConditionTrue || len(n.Spec.Taints) != 0 {
			return fmt.Sprintf("ready %s/%s, taints %v", c.Status, c.Reason, n.Spec.Taints)
		}
		return ""
	})
	if got := podsPerNode(t, st); got["node-b"] != 0 || got["node-a"] != 4 {
		t.Errorf("pods per node after node-b returned: %v, want all 4 on node-a", got)
	}
}

// TestHeartbeatOnlyEvictionHeldOnSingleNode: without gossip a silent agent
// marks its node Unknown after the grace period, but with no other Ready
// node the pods are kept (evicting them would only stop them).
func TestHeartbeatOnlyEvictionHeldOnSingleNode(t *testing.T) {
	st := store.MemoryFor(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := &reconciler.SimKubelet{Store: st, NodeName: "solo", Logger: testLogger(t), HeartbeatInterval: -1}
	if err := k.Register(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = k.Run(ctx) }()
	defer func() { cancel(); <-done }()
	startManagerWith(t, reconciler.Config{
		Store: st, Logger: testLogger(t), ResyncPeriod: 2 * time.Second, MaxBackoff: time.Second,
		PodEvictionTimeout: 100 * time.Millisecond, NodeMonitorGracePeriod: 2 * time.Second,
	})
	create(t, st, newDeployment("web", 2, "nginx:1"))
	eventually(t, "2 running pods", func() string {
		if err := k.Heartbeat(ctx); err != nil { // keep solo fresh until then
			return err.Error()
		}
		return converged(t, st, "web", 2)
	})
	before := podNames(pods(t, st))
	eventually(t, "solo Unknown after its heartbeat went stale", func() string {
		c := nodeReadyCondition(getNode(t, st, "solo"))
		if c.Status != corev1.ConditionUnknown {
			return fmt.Sprintf("ready %s/%s", c.Status, c.Reason)
		}
		return ""
	})
	time.Sleep(500 * time.Millisecond) // several eviction timeouts
	after := podNames(pods(t, st))
	sort.Strings(before)
	sort.Strings(after)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("pods changed on the only node: %v → %v", before, after)
	}
	if err := k.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "solo Ready again", func() string {
		n := getNode(t, st, "solo")
		if c := nodeReadyCondition(n); c.Status != corev1.ConditionTrue || len(n.Spec.Taints) != 0 {
			return fmt.Sprintf("ready %s/%s, taints %v", c.Status, c.Reason, n.Spec.Taints)
		}
		return ""
	})
}
