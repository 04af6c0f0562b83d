package reconciler_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler"
	"github.com/flotilla-dev/flotilla/reconciler/endpointslice"
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
	stop := map[string]context.CancelFunc{}
	now := time.Now()
	members := nodelifecycle.NewFakeMembership()
	run := func(k *reconciler.SimKubelet) {
		kctx, kcancel := context.WithCancel(ctx)
		stop[k.NodeName] = kcancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := k.Run(kctx); err != nil && kctx.Err() == nil {
				t.Errorf("simkubelet: %v", err)
			}
		}()
	}
	for _, name := range []string{"node-a", "node-b"} {
		// Heartbeats every 500ms: a node is judged by them as well as by
		// gossip (eviction needs a stale heartbeat).
		k := &reconciler.SimKubelet{Store: st, NodeName: name, Logger: testLogger(t), HeartbeatInterval: 500 * time.Millisecond}
		if err := k.Register(ctx); err != nil {
			t.Fatal(err)
		}
		kubelets[name] = k
		members.Join(name, now)
		run(k)
	}
	startManagerWith(t, reconciler.Config{
		Store: st, Logger: testLogger(t), ResyncPeriod: 2 * time.Second, MaxBackoff: time.Second,
		Membership: members, PodEvictionTimeout: time.Second, NodeMonitorGracePeriod: 3 * time.Second,
	})

	create(t, st, newDeployment("web", 4, "nginx:1"))
	testkit.EventuallyWhy(t, "4 running pods", time.Minute, func() string { return converged(t, st, "web", 4) })
	if got := podsPerNode(t, st); got["node-a"] != 2 || got["node-b"] != 2 {
		t.Fatalf("pods per node %v, want 2/2", got)
	}

	stop["node-b"]() // node-b dies: no more heartbeats
	members.Fail("node-b", time.Now())
	testkit.EventuallyWhy(t, "node-b Unknown and tainted", time.Minute, func() string {
		n := getNode(t, st, "node-b")
		c := nodeReadyCondition(n)
		if c.Status != corev1.ConditionUnknown || c.Reason != nodelifecycle.ReasonNodeStatusUnknown || !hasTaint(n, nodelifecycle.TaintUnreachable) {
			return fmt.Sprintf("ready %s/%s %q, taints %v", c.Status, c.Reason, c.Message, n.Spec.Taints)
		}
		return ""
	})
	testkit.EventuallyWhy(t, "all 4 pods running on node-a", time.Minute, func() string {
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
	run(kubelets["node-b"])
	testkit.EventuallyWhy(t, "node-b Ready and untainted", time.Minute, func() string {
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
	m := startManagerWith(t, reconciler.Config{
		Store: st, Logger: testLogger(t), ResyncPeriod: 2 * time.Second, MaxBackoff: time.Second,
		PodEvictionTimeout: 100 * time.Millisecond, NodeMonitorGracePeriod: 2 * time.Second,
	})
	create(t, st, newDeployment("web", 2, "nginx:1"))
	testkit.EventuallyWhy(t, "2 running pods", time.Minute, func() string {
		if err := k.Heartbeat(ctx); err != nil { // keep solo fresh until then
			return err.Error()
		}
		return converged(t, st, "web", 2)
	})
	before := podNames(pods(t, st))
	testkit.EventuallyWhy(t, "solo Unknown after its heartbeat went stale", time.Minute, func() string {
		c := nodeReadyCondition(getNode(t, st, "solo"))
		if c.Status != corev1.ConditionUnknown {
			return fmt.Sprintf("ready %s/%s", c.Status, c.Reason)
		}
		return ""
	})
	m.quiet(t, reconciler.NodeLifecycle, 5) // several eviction timeouts
	after := podNames(pods(t, st))
	sort.Strings(before)
	sort.Strings(after)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("pods changed on the only node: %v → %v", before, after)
	}
	if err := k.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyWhy(t, "solo Ready again", time.Minute, func() string {
		n := getNode(t, st, "solo")
		if c := nodeReadyCondition(n); c.Status != corev1.ConditionTrue || len(n.Spec.Taints) != 0 {
			return fmt.Sprintf("ready %s/%s, taints %v", c.Status, c.Reason, n.Spec.Taints)
		}
		return ""
	})
}

func podCondition(p *corev1.Pod, typ corev1.PodConditionType) corev1.PodCondition {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return corev1.PodCondition{}
}

// endpointsReady maps the endpoints of service svc's slices by pod name to
// their ready condition.
func endpointsReady(t *testing.T, st store.Interface, svc string) map[string]bool {
	t.Helper()
	objs, _, err := st.List(context.Background(), "endpointslices", store.ListOptions{Namespace: "default", LabelSelector: endpointslice.LabelServiceName + "=" + svc})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, o := range objs {
		for _, ep := range o.(*discoveryv1.EndpointSlice).Endpoints {
			out[ep.TargetRef.Name] = ep.Conditions.Ready != nil && *ep.Conditions.Ready
		}
	}
	return out
}

// TestNodeUnknownMarksPodsNotReady: the Manager with two simulated kubelets
// and fake gossip; node-b's agent dies and its member fails → node-b goes
// Unknown and its pods Ready=False (NodeNotReady) at once, long before any
// eviction, so that the service's EndpointSlice stops sending traffic
// there; node-a's pods are not written. Idle resyncs write nothing more.
// node-b back (member alive, agent running and heartbeating) → its agent
// marks the pods Ready again and they are back in the service.
func TestNodeUnknownMarksPodsNotReady(t *testing.T) {
	st := store.MemoryFor(t)
	members := nodelifecycle.NewFakeMembership()
	kubelets := map[string]*reconciler.SimKubelet{}
	stops := map[string]func(){} // stop a kubelet and wait for it
	run := func(name string) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		stops[name] = func() { cancel(); <-done }
		go func() {
			defer close(done)
			if err := kubelets[name].Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("simkubelet %s: %v", name, err)
			}
		}()
	}
	for _, name := range []string{"node-a", "node-b"} {
		k := &reconciler.SimKubelet{Store: st, NodeName: name, Logger: testLogger(t), HeartbeatInterval: -1}
		if err := k.Register(context.Background()); err != nil {
			t.Fatal(err)
		}
		kubelets[name] = k
		members.Join(name, time.Now())
	}
	run("node-a")
	run("node-b")
	t.Cleanup(func() {
		for _, stop := range stops {
			stop()
		}
	})
	m := startManagerWith(t, reconciler.Config{
		Store: st, Logger: testLogger(t), ResyncPeriod: 100 * time.Millisecond, MaxBackoff: time.Second,
		Membership: members, PodEvictionTimeout: time.Hour, // no eviction in this test
	})
	create(t, st, newDeployment("web", 4, "nginx:1"))
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	svc.APIVersion, svc.Kind = "v1", "Service"
	create(t, st, svc)
	testkit.EventuallyWhy(t, "4 running pods, 4 ready endpoints", time.Minute, func() string {
		if bad := converged(t, st, "web", 4); bad != "" {
			return bad
		}
		eps := endpointsReady(t, st, "web")
		for _, p := range pods(t, st) {
			if !eps[p.Name] {
				return fmt.Sprintf("endpoints %v", eps)
			}
		}
		return ""
	})
	onA := map[string]string{} // name → resourceVersion
	var onB []string
	for _, p := range pods(t, st) {
		switch p.Spec.NodeName {
		case "node-a":
			onA[p.Name] = p.ResourceVersion
		case "node-b":
			onB = append(onB, p.Name)
		}
	}
	if len(onA) != 2 || len(onB) != 2 {
		t.Fatalf("pods per node %v, want 2/2", podsPerNode(t, st))
	}

	stops["node-b"]() // the agent dies with its node
	members.Fail("node-b", time.Now())
	testkit.EventuallyWhy(t, "node-b's pods not ready and out of the service", time.Minute, func() string {
		if c := nodeReadyCondition(getNode(t, st, "node-b")); c.Status != corev1.ConditionUnknown {
			return fmt.Sprintf("node-b ready %s/%s", c.Status, c.Reason)
		}
		eps := endpointsReady(t, st, "web")
		for _, p := range pods(t, st) {
			if p.Spec.NodeName != "node-b" {
				continue
			}
			for _, typ := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
				if c := podCondition(p, typ); c.Status != corev1.ConditionFalse || c.Reason != nodelifecycle.ReasonNodeNotReady || !strings.Contains(c.Message, "node-b") {
					return fmt.Sprintf("pod %s %s %s/%s %q", p.Name, typ, c.Status, c.Reason, c.Message)
				}
			}
			if ready, ok := eps[p.Name]; !ok || ready {
				return fmt.Sprintf("pod %s endpoint ready=%v present=%v", p.Name, ready, ok)
			}
		}
		return ""
	})
	rvs := map[string]string{}
	for _, p := range pods(t, st) {
		rvs[p.Name] = p.ResourceVersion
		if want, ok := onA[p.Name]; ok && p.ResourceVersion != want {
			t.Errorf("pod %s on the healthy node-a rewritten: %+v", p.Name, p.Status.Conditions)
		}
		if p.Spec.NodeName == "node-a" && !ready(p) {
			t.Errorf("pod %s on node-a not ready", p.Name)
		}
	}
	if got := len(rvs); got != 4 {
		t.Errorf("%d pods, want 4 (nothing evicted)", got)
	}
	m.quiet(t, reconciler.NodeLifecycle, 20) // 10 resyncs of both nodes
	for _, p := range pods(t, st) {
		if p.ResourceVersion != rvs[p.Name] {
			t.Errorf("pod %s rewritten while nothing changed: %s → %s", p.Name, rvs[p.Name], p.ResourceVersion)
		}
	}

	members.Join("node-b", time.Now())
	if err := kubelets["node-b"].Heartbeat(context.Background()); err != nil {
		t.Fatal(err)
	}
	run("node-b")
	testkit.EventuallyWhy(t, "node-b Ready, its pods ready and back in the service", time.Minute, func() string {
		if c := nodeReadyCondition(getNode(t, st, "node-b")); c.Status != corev1.ConditionTrue {
			return fmt.Sprintf("node-b ready %s/%s", c.Status, c.Reason)
		}
		eps := endpointsReady(t, st, "web")
		for _, p := range pods(t, st) {
			if !ready(p) || !eps[p.Name] {
				return fmt.Sprintf("pod %s on %s ready=%v, endpoints %v", p.Name, p.Spec.NodeName, ready(p), eps)
			}
		}
		return ""
	})
}
