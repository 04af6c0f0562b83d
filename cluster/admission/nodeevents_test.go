package admission_test

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/cluster/auth"
)

// TestNodeEventsOnlyAboutItsOwn: an agent may write Events about itself
// and the pods bound to it, not about other nodes' pods, other nodes or
// other kinds.
func TestNodeEventsOnlyAboutItsOwn(t *testing.T) {
	f := newFixture(t)
	for _, p := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: "default"}, Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "x"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "theirs", Namespace: "default"}, Spec: corev1.PodSpec{NodeName: "n2", Containers: []corev1.Container{{Name: "c", Image: "x"}}}},
	} {
		p.APIVersion, p.Kind = "v1", "Pod"
		if _, err := f.raw.Create(f.ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	ctx := auth.WithUser(f.ctx, &auth.User{Username: auth.NodeUserPrefix + "n1", Groups: []string{auth.GroupNodes}})
	for _, c := range []struct {
		name string
		ref  corev1.ObjectReference
		ok   bool
	}{
		{"own-pod", corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: "default", Name: "mine"}, true},
		{"own-node", corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: "n1"}, true},
		{"other-pod", corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: "default", Name: "theirs"}, false},
		{"absent-pod", corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: "default", Name: "gone"}, false},
		{"other-node", corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: "n2"}, false},
		{"deployment", corev1.ObjectReference{Kind: "Deployment", APIVersion: "apps/v1", Namespace: "default", Name: "web"}, false},
	} {
		ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: c.name, Namespace: "default"}, InvolvedObject: c.ref, Reason: "Test", Type: corev1.EventTypeNormal}
		ev.APIVersion, ev.Kind = "v1", "Event"
		_, err := f.user.Create(ctx, ev)
		if c.ok && err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if !c.ok && !errors.Is(err, admission.ErrForbidden) {
			t.Errorf("%s: err %v, want Forbidden", c.name, err)
		}
	}
}
