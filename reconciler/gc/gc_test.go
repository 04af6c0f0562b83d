package gc

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestDangling(t *testing.T) {
	yes := true
	ref := func(name, uid string, controller bool) metav1.OwnerReference {
		r := metav1.OwnerReference{Kind: "ReplicaSet", Name: name, UID: types.UID(uid)}
		if controller {
			r.Controller = &yes
		}
		return r
	}
	live := map[string]types.UID{"rs1": "u1", "rs2": "u2"}
	lookup := func(_ string, r metav1.OwnerReference) (bool, error) {
		if r.Name == "broken" {
			return false, errors.New("store down")
		}
		return live[r.Name] == r.UID, nil
	}
	cases := []struct {
		name    string
		refs    []metav1.OwnerReference
		want    bool
		wantErr bool
	}{
		{name: "bare pod is never collected"},
		{name: "owner exists", refs: []metav1.OwnerReference{ref("rs1", "u1", true)}},
		{name: "owner gone", refs: []metav1.OwnerReference{ref("rs9", "u9", true)}, want: true},
		{name: "owner recreated under the same name", refs: []metav1.OwnerReference{ref("rs1", "old-uid", true)}, want: true},
		{name: "another owner still exists", refs: []metav1.OwnerReference{ref("rs9", "u9", true), ref("rs2", "u2", false)}},
		{name: "lookup error keeps the object", refs: []metav1.OwnerReference{ref("broken", "x", true)}, wantErr: true},
	}
	for _, c := range cases {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", OwnerReferences: c.refs}}
		got, err := Dangling(p, lookup)
		if got != c.want || (err != nil) != c.wantErr {
			t.Errorf("%s: got %v, %v; want %v, error %v", c.name, got, err, c.want, c.wantErr)
		}
	}
}
