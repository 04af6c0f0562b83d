package gitsync

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/schema"
)

func TestChainAdmit(t *testing.T) {
	var order []string
	label := func(name string) AdmitFunc {
		return func(_ Reader, objs []Admission) (schema.Problems, error) {
			order = append(order, name)
			for _, o := range objs {
				ls := o.Object.GetLabels()
				if ls == nil {
					ls = map[string]string{}
				}
				ls["by"] += name
				o.Object.SetLabels(ls)
			}
			return schema.Problems{{File: name, Reason: "from " + name}}, nil
		}
	}
	objs := []Admission{{Resource: "configmaps", Object: &corev1.ConfigMap{}}}
	ps, err := ChainAdmit(label("a"), nil, label("b"))(nil, objs)
	if err != nil || len(ps) != 2 || ps[0].File != "a" || ps[1].File != "b" || objs[0].Object.GetLabels()["by"] != "ab" {
		t.Errorf("ChainAdmit = %v, %v; labels %v", ps, err, objs[0].Object.GetLabels())
	}
	boom := errors.New("read failed")
	order = nil
	_, err = ChainAdmit(func(Reader, []Admission) (schema.Problems, error) { return nil, boom }, label("c"))(nil, objs)
	if !errors.Is(err, boom) || len(order) != 0 {
		t.Errorf("after an error: %v, ran %v", err, order)
	}
}
