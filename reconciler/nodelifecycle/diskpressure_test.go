package nodelifecycle

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestPlanDiskPressureTaint: the disk-pressure taint follows the agent's
// DiskPressure condition (taint by condition, as Kubernetes), beside the
// Ready taints and other taints, and is dropped while the node is
// unreachable (its report is stale).
func TestPlanDiskPressureTaint(t *testing.T) {
	diskT := corev1.Taint{Key: TaintDiskPressure, Effect: corev1.TaintEffectNoSchedule}
	node := func(ready corev1.ConditionStatus, reason string, disk corev1.ConditionStatus, taints ...corev1.Taint) *corev1.Node {
		n := testNode("b", ready, reason, t0.Add(-10*time.Second), t0.Add(-time.Hour), taints...)
		if disk != "" {
			n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeDiskPressure, Status: disk})
		}
		return n
	}
	alive := &Member{Name: "b", Alive: true, Since: t0.Add(-time.Minute)}
	failed := &Member{Name: "b", Since: t0.Add(-2 * time.Second)}
	cases := []struct {
		name   string
		node   *corev1.Node
		member *Member
		taints []string // nil: no change
	}{
		{"pressure taints", node(corev1.ConditionTrue, "AgentReady", corev1.ConditionTrue, other), alive, []string{"dedicated", TaintDiskPressure}},
		{"pressure already tainted", node(corev1.ConditionTrue, "AgentReady", corev1.ConditionTrue, diskT), alive, nil},
		{"no pressure untaints", node(corev1.ConditionTrue, "AgentReady", corev1.ConditionFalse, other, diskT), alive, []string{"dedicated"}},
		{"no condition untaints", node(corev1.ConditionTrue, "AgentReady", "", diskT), alive, []string{}},
		{"not ready and pressure", node(corev1.ConditionFalse, "Down", corev1.ConditionTrue), alive, []string{TaintNotReady, TaintDiskPressure}},
		{"unreachable drops the stale pressure", node(corev1.ConditionTrue, "AgentReady", corev1.ConditionTrue, diskT), failed, []string{TaintUnreachable}},
		{"a NoExecute disk-pressure taint is not ours", node(corev1.ConditionTrue, "AgentReady", corev1.ConditionFalse,
			corev1.Taint{Key: TaintDiskPressure, Effect: corev1.TaintEffectNoExecute}), alive, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			acts := Plan(tc.node, tc.member, time.Time{}, nil, nil, t0, Config{})
			if tc.taints == nil {
				if acts.SetTaints {
					t.Errorf("taints changed to %v, want unchanged", taintKeys(acts.Taints))
				}
				return
			}
			if !acts.SetTaints {
				t.Fatalf("taints unchanged, want %v", tc.taints)
			}
			var got []string
			for _, tt := range acts.Taints {
				got = append(got, tt.Key)
			}
			if len(got) != len(tc.taints) {
				t.Fatalf("taints %v, want %v", got, tc.taints)
			}
			for i := range got {
				if got[i] != tc.taints[i] {
					t.Fatalf("taints %v, want %v", got, tc.taints)
				}
			}
		})
	}
}
