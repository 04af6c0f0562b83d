package scheduler

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

type nodeOpt func(*corev1.Node)

func node(name, cpu, mem string, pods int, opts ...nodeOpt) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse(cpu),
				corev1.ResourceMemory: resource.MustParse(mem),
				corev1.ResourcePods:   *resource.NewQuantity(int64(pods), resource.DecimalSI),
			},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, o := range opts {
		o(n)
	}
	return n
}

func notReady(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }
func cordoned(n *corev1.Node) { n.Spec.Unschedulable = true }
func label(k, v string) nodeOpt {
	return func(n *corev1.Node) { n.Labels[k] = v }
}

func pod(name, cpu, mem string, owner string) *corev1.Pod {
	req := corev1.ResourceList{}
	if cpu != "" {
		req[corev1.ResourceCPU] = resource.MustParse(cpu)
	}
	if mem != "" {
		req[corev1.ResourceMemory] = resource.MustParse(mem)
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Requests: req}}}},
	}
	if owner != "" {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: owner, UID: types.UID(owner), Controller: &yes}}
	}
	return p
}

func onNode(p *corev1.Pod, n string) *corev1.Pod { p.Spec.NodeName = n; return p }

func withSelector(p *corev1.Pod, k, v string) *corev1.Pod {
	p.Spec.NodeSelector = map[string]string{k: v}
	return p
}

func result(plan Plan) map[string]string {
	out := map[string]string{}
	for _, b := range plan.Bindings {
		out[b.Pod.Name] = b.NodeName
	}
	for _, f := range plan.Failures {
		out[f.Pod.Name] = "! " + f.Message
	}
	return out
}

func TestSchedule(t *testing.T) {
	cases := []struct {
		name    string
		pending []*corev1.Pod
		nodes   []*corev1.Node
		bound   []*corev1.Pod
		want    map[string]string
	}{
		{
			name:    "least requested node wins",
			pending: []*corev1.Pod{pod("p", "1", "1Gi", "")},
			nodes:   []*corev1.Node{node("a", "4", "8Gi", 10), node("b", "4", "8Gi", 10)},
			bound:   []*corev1.Pod{onNode(pod("busy", "3", "4Gi", ""), "a")},
			want:    map[string]string{"p": "b"},
		},
		{
			name:    "not ready and cordoned nodes are skipped",
			pending: []*corev1.Pod{pod("p", "100m", "", "")},
			nodes:   []*corev1.Node{node("a", "4", "8Gi", 10, notReady), node("b", "4", "8Gi", 10, cordoned), node("c", "1", "1Gi", 10)},
			want:    map[string]string{"p": "c"},
		},
		{
			name:    "node selector",
			pending: []*corev1.Pod{withSelector(pod("p", "", "", ""), "disk", "ssd")},
			nodes:   []*corev1.Node{node("a", "4", "8Gi", 10), node("b", "4", "8Gi", 10, label("disk", "ssd"))},
			want:    map[string]string{"p": "b"},
		},
		{
			name: "incremental accounting within one pass",
			pending: []*corev1.Pod{
				pod("p1", "2", "", ""), pod("p2", "2", "", ""), pod("p3", "2", "", ""),
			},
			nodes: []*corev1.Node{node("a", "2", "8Gi", 10), node("b", "2", "8Gi", 10)},
			want: map[string]string{
				"p1": "a", "p2": "b",
				"p3": "! 0/2 nodes are available: 2 Insufficient cpu.",
			},
		},
		{
			name:    "pods capacity",
			pending: []*corev1.Pod{pod("p", "", "", "")},
			nodes:   []*corev1.Node{node("a", "4", "8Gi", 1)},
			bound:   []*corev1.Pod{onNode(pod("x", "", "", ""), "a")},
			want:    map[string]string{"p": "! 0/1 nodes are available: 1 Too many pods."},
		},
		{
			name:    "finished pods free their resources",
			pending: []*corev1.Pod{pod("p", "2", "", "")},
			nodes:   []*corev1.Node{node("a", "2", "8Gi", 10)},
			bound: []*corev1.Pod{func() *corev1.Pod {
				p := onNode(pod("done", "2", "", ""), "a")
				p.Status.Phase = corev1.PodSucceeded
				return p
			}()},
			want: map[string]string{"p": "a"},
		},
		{
			name:    "spread over nodes by owner",
			pending: []*corev1.Pod{pod("p1", "", "", "rs"), pod("p2", "", "", "rs"), pod("p3", "", "", "rs")},
			nodes:   []*corev1.Node{node("a", "4", "8Gi", 10), node("b", "4", "8Gi", 10), node("c", "4", "8Gi", 10)},
			bound:   []*corev1.Pod{onNode(pod("other", "", "", "other-rs"), "c")},
			want:    map[string]string{"p1": "a", "p2": "b", "p3": "c"},
		},
		{
			name:    "unschedulable message counts every reason",
			pending: []*corev1.Pod{withSelector(pod("p", "3", "1Gi", ""), "zone", "a")},
			nodes: []*corev1.Node{
				node("n1", "2", "8Gi", 10, label("zone", "a")),
				node("n2", "2", "8Gi", 10, label("zone", "a")),
				node("n3", "8", "8Gi", 10, label("zone", "b")),
			},
			want: map[string]string{"p": "! 0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu."},
		},
		{
			name:    "several reasons on one node, not ready and cordoned",
			pending: []*corev1.Pod{pod("p", "3", "16Gi", "")},
			nodes:   []*corev1.Node{node("n1", "2", "8Gi", 10), node("n2", "8", "32Gi", 10, notReady), node("n3", "8", "32Gi", 10, cordoned)},
			want:    map[string]string{"p": "! 0/3 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 node(s) were not ready, 1 node(s) were unschedulable."},
		},
		{
			name: "taints must be tolerated",
			pending: []*corev1.Pod{
				pod("p", "", "", ""),
				func() *corev1.Pod {
					q := pod("tolerant", "", "", "")
					q.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "db", Effect: corev1.TaintEffectNoSchedule}}
					return q
				}(),
			},
			nodes: []*corev1.Node{node("a", "4", "8Gi", 10, func(n *corev1.Node) {
				n.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule}}
			})},
			want: map[string]string{"p": "! 0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: db}.", "tolerant": "a"},
		},
		{
			name:    "no nodes",
			pending: []*corev1.Pod{pod("p", "", "", "")},
			want:    map[string]string{"p": "! 0/0 nodes are available: no nodes registered."},
		},
		{
			name:    "already bound pods are not pending",
			pending: []*corev1.Pod{onNode(pod("p", "", "", ""), "a")},
			nodes:   []*corev1.Node{node("a", "4", "8Gi", 10)},
			want:    map[string]string{},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := result(Schedule(c.pending, c.nodes, c.bound))
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("got  %v\nwant %v", got, c.want)
			}
			for _, p := range c.pending {
				if p.Spec.NodeName != "" && p.Name == "p" && len(c.want) != 0 {
					t.Errorf("Schedule modified its input")
				}
			}
		})
	}
}

func TestScheduleSampledLargeCluster(t *testing.T) {
	pods, nodes := SyntheticCluster(5000, 500)
	plan := Schedule(pods, nodes, nil)
	if len(plan.Bindings) != 5000 || len(plan.Failures) != 0 {
		t.Fatalf("bound %d, failed %d", len(plan.Bindings), len(plan.Failures))
	}
	perNode := map[string]int{}
	for _, b := range plan.Bindings {
		perNode[b.NodeName]++
	}
	lo, hi := 1<<30, 0
	for _, n := range nodes {
		c := perNode[n.Name]
		lo, hi = min(lo, c), max(hi, c)
	}
	if hi-lo > 2 {
		t.Errorf("unbalanced: %d..%d pods per node", lo, hi)
	}
}

func TestScheduleFillsToCapacity(t *testing.T) {
	// 100 nodes of 110 pods each: exactly 11000 pods fit, the next does not.
	pods, nodes := SyntheticCluster(11001, 100)
	plan := Schedule(pods, nodes, nil)
	if len(plan.Bindings) != 11000 || len(plan.Failures) != 1 {
		t.Fatalf("bound %d failed %d", len(plan.Bindings), len(plan.Failures))
	}
	if want := "0/100 nodes are available: 100 Too many pods."; plan.Failures[0].Message != want {
		t.Errorf("message %q, want %q", plan.Failures[0].Message, want)
	}
}

// TestSpreadByOwner: replicas of one owner spread evenly over equal nodes,
// even when one node starts emptier than the others; load only breaks ties.
func TestSpreadByOwner(t *testing.T) {
	nodes := []*corev1.Node{node("a", "4", "8Gi", 110), node("b", "4", "8Gi", 110), node("c", "4", "8Gi", 110)}
	var pending []*corev1.Pod
	for i := 0; i < 6; i++ {
		pending = append(pending, pod(fmt.Sprintf("p%d", i), "", "", "rs"))
	}
	count := func(plan Plan) map[string]int {
		got := map[string]int{}
		for _, b := range plan.Bindings {
			got[b.NodeName]++
		}
		return got
	}
	if got := count(Schedule(pending, nodes, nil)); fmt.Sprint(got) != "map[a:2 b:2 c:2]" {
		t.Errorf("6 replicas on 3 equal nodes: %v, want 2/2/2", got)
	}
	// Node c carries heavy unrelated load: spread still wins over load.
	busy := onNode(pod("busy", "3", "6Gi", "other"), "c")
	if got := count(Schedule(pending, nodes, []*corev1.Pod{busy})); fmt.Sprint(got) != "map[a:2 b:2 c:2]" {
		t.Errorf("with a busy node: %v, want 2/2/2", got)
	}
	// Replicas already running count: a and b hold 2 each, so c gets the next ones.
	bound := []*corev1.Pod{
		onNode(pod("x1", "", "", "rs"), "a"), onNode(pod("x2", "", "", "rs"), "a"),
		onNode(pod("x3", "", "", "rs"), "b"), onNode(pod("x4", "", "", "rs"), "b"),
	}
	if got := count(Schedule(pending[:2], nodes, bound)); fmt.Sprint(got) != "map[c:2]" {
		t.Errorf("after 2/2/0: %v, want both on c", got)
	}
}
