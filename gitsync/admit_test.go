package gitsync

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// recordingHook is an admission hook that records what it is shown, sets
// data["admitted"] on config maps, and refuses or fails on demand.
type recordingHook struct {
	calls  [][]string // per call: "create a.yaml:1 configmaps/a" ...
	refuse string     // refuse the object of this name
	fail   error
}

func (h *recordingHook) admit(r Reader, objs []Admission) (schema.Problems, error) {
	if h.fail != nil {
		return nil, h.fail
	}
	var call []string
	var probs schema.Problems
	for _, o := range objs {
		op, name := "update", ""
		switch {
		case o.Object == nil:
			op, name = "delete", o.Stored.GetName()
		case o.Stored == nil:
			op, name = "create", o.Object.GetName()
		default:
			name = o.Object.GetName()
			if o.Stored.GetName() != name || o.Stored.GetResourceVersion() == "" {
				return nil, fmt.Errorf("update of %s shows stored %s rv %q", name, o.Stored.GetName(), o.Stored.GetResourceVersion())
			}
		}
		call = append(call, fmt.Sprintf("%s %s:%d %s/%s", op, o.File, o.Line, o.Resource, name))
		if cm, ok := o.Object.(*corev1.ConfigMap); ok {
			cm.Data["admitted"] = "yes"
		}
		if name == h.refuse && o.Object != nil {
			probs = append(probs, schema.Problem{File: o.File, Line: o.Line, Field: "data", Reason: "refused by the hook"})
		}
	}
	// The hook reads the transaction's view: the objects being replaced.
	if _, err := r.Get("configmaps", "default", "a"); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	sort.Strings(call)
	h.calls = append(h.calls, call)
	return probs, nil
}

func TestAdmissionHook(t *testing.T) {
	hook := &recordingHook{}
	h := newHarness(t, func(c *Config) { c.Admit = hook.admit })
	h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1"), "b.yaml": configMap("b", "apps", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	// The namespaces the objects use are admitted too, without a file.
	if got := fmt.Sprint(hook.calls); got != "[[create :0 namespaces/apps create :0 namespaces/default create a.yaml:1 configmaps/a create b.yaml:1 configmaps/b]]" {
		t.Errorf("calls = %s", got)
	}
	if cm := h.get("configmaps", "default", "a").(*corev1.ConfigMap); cm.Data["admitted"] != "yes" {
		t.Errorf("the hook's change was not written: %v", cm.Data)
	}

	// Unchanged: no call, no write.
	rev := h.store.Revision()
	if body, err := h.sync(); err != nil || body.Result != schema.SyncUnchanged || h.store.Revision() != rev || len(hook.calls) != 1 {
		t.Fatalf("idle sync: %s, %v, %d calls", body.Result, err, len(hook.calls))
	}

	// An update and a prune are shown with the stored objects.
	h.remote.commit("two", map[string]string{"a.yaml": configMap("a", "", "2"), "b.yaml": ""})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(hook.calls[1]); got != "[delete :0 configmaps/b delete :0 namespaces/apps update a.yaml:1 configmaps/a]" {
		t.Errorf("second call = %s", got)
	}

	// A hook's problem refuses the whole commit.
	hook.refuse = "c"
	h.remote.commit("three", map[string]string{"a.yaml": configMap("a", "", "3"), "c.yaml": configMap("c", "", "1")})
	body, err := h.sync()
	if !errors.Is(err, ErrRefused) || len(body.Problems) != 1 || body.Problems[0].String() != "c.yaml:1:0: data: refused by the hook" {
		t.Fatalf("refused sync = %+v, %v", body, err)
	}
	h.absent("configmaps", "default", "c")
	if cm := h.get("configmaps", "default", "a").(*corev1.ConfigMap); cm.Data["key"] != "2" {
		t.Errorf("the refused commit changed a: %v", cm.Data)
	}

	// A hook's error is transient: nothing written, retried.
	hook.refuse, hook.fail = "", errors.New("disk on fire")
	h.remote.commit("four", map[string]string{"c.yaml": configMap("c", "", "2")})
	rev = h.store.Revision()
	if _, err := h.sync(); !errors.Is(err, ErrTransient) || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("failing hook: %v", err)
	}
	h.absent("configmaps", "default", "c")
	hook.fail = nil
	if body, err := h.sync(); err != nil || body.Result != schema.SyncApplied {
		t.Fatalf("after the hook recovered: %+v, %v", body, err)
	}
	if h.store.Revision() == rev {
		t.Error("nothing written after the hook recovered")
	}
}
