package scheduler

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// SyntheticCluster returns n Ready nodes (16 cpu, 64Gi, 110 pods, label
// zone=z0..z3) and p pending pods (100m cpu, 128Mi, owned by one of p/100+1
// ReplicaSets), for benchmarks and the `make bench` report.
func SyntheticCluster(p, n int) (pods []*corev1.Pod, nodes []*corev1.Node) {
	nodes = make([]*corev1.Node, n)
	for i := range nodes {
		nodes[i] = &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%04d", i), Labels: map[string]string{"zone": fmt.Sprintf("z%d", i%4)}},
			Status: corev1.NodeStatus{
				Allocatable: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("16"),
					corev1.ResourceMemory: resource.MustParse("64Gi"),
					corev1.ResourcePods:   resource.MustParse("110"),
				},
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			},
		}
	}
	owners := p/100 + 1
	yes := true
	req := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}
	pods = make([]*corev1.Pod, p)
	for i := range pods {
		o := i % owners
		pods[i] = &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("pod-%05d", i), Namespace: "default",
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: fmt.Sprintf("rs-%d", o), UID: types.UID(fmt.Sprintf("uid-rs-%d", o)), Controller: &yes}},
			},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox", Resources: corev1.ResourceRequirements{Requests: req}}}},
		}
	}
	return pods, nodes
}

// Throughput schedules a synthetic cluster of pods pending pods onto nodes
// nodes (SyntheticCluster) with Schedule and returns the pods bound per
// second of wall time. It is what the `make bench` report calls.
func Throughput(pods, nodes int) (podsPerSec float64) {
	ps, ns := SyntheticCluster(pods, nodes)
	start := time.Now()
	plan := Schedule(ps, ns, nil)
	el := time.Since(start)
	if el <= 0 {
		el = time.Nanosecond
	}
	return float64(len(plan.Bindings)) / el.Seconds()
}
