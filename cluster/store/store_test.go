package store

// The behaviour every store.Interface shares is tested by storetest (see
// conformance_test.go); these tests cover the Badger store's own choices
// and its persistence.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/schema"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pod(ns, name string, labels map[string]string, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
}

func configMap(ns, name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
}

func mustCreate[T schema.Object](t *testing.T, s Interface, obj T) T {
	t.Helper()
	out, err := s.Create(context.Background(), obj)
	if err != nil {
		t.Fatalf("create %s/%s: %v", obj.GetNamespace(), obj.GetName(), err)
	}
	return out.(T)
}

func rv(t *testing.T, obj schema.Object) int64 {
	t.Helper()
	v, err := strconv.ParseInt(obj.GetResourceVersion(), 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", obj.GetResourceVersion(), err)
	}
	return v
}

func TestInvalid(t *testing.T) {
	ctx := context.Background()
	s := MemoryFor(t)
	p := mustCreate(t, s, pod("web", "a", nil, ""))
	cm := mustCreate(t, s, configMap("web", "c", nil))
	tests := []struct {
		name    string
		do      func() error
		wantErr error
		inErr   string
	}{
		{"create nil", func() error { _, err := s.Create(ctx, (*corev1.Pod)(nil)); return err }, ErrInvalid, "nil"},
		{"create slash in name", func() error { _, err := s.Create(ctx, pod("web", "a/b", nil, "")); return err }, ErrInvalid, "a/b"},
		{"get unknown resource", func() error { _, err := s.Get(ctx, "widgets", "", "x"); return err }, ErrInvalid, "widgets"},
		{"get missing names key", func() error { _, err := s.Get(ctx, "pods", "web", "nope"); return err }, ErrNotFound, "/registry/pods/web/nope"},
		{"update bad resourceVersion", func() error {
			in := schema.Copy(p)
			in.ResourceVersion = "x"
			_, err := s.Update(ctx, in)
			return err
		}, ErrConflict, "/registry/pods/web/a"},
		{"status of a kind without one", func() error { _, err := s.UpdateStatus(ctx, cm); return err }, ErrInvalid, "ConfigMap"},
		{"delete namespace on cluster kind", func() error {
			_, err := s.Delete(ctx, "nodes", "web", "n", DeleteOptions{})
			return err
		}, ErrInvalid, "cluster-scoped"},
		{"list unsupported field", func() error {
			_, _, err := s.List(ctx, "pods", ListOptions{FieldSelector: "status.phase=Running"})
			return err
		}, ErrInvalid, "status.phase"},
		{"list nodeName on configmaps", func() error {
			_, _, err := s.List(ctx, "configmaps", ListOptions{FieldSelector: "spec.nodeName=n1"})
			return err
		}, ErrInvalid, "spec.nodeName"},
		{"list namespace of cluster kind", func() error {
			_, _, err := s.List(ctx, "nodes", ListOptions{Namespace: "a"})
			return err
		}, ErrInvalid, "cluster-scoped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.inErr) {
				t.Errorf("err %v, want %v mentioning %q", err, tt.wantErr, tt.inErr)
			}
		})
	}
	if s.Revision() != 2 {
		t.Errorf("failed calls wrote: revision %d", s.Revision())
	}
}

func TestCreateKeepsStatus(t *testing.T) {
	s := MemoryFor(t)
	n := mustCreate(t, s, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Phase: "Running"}})
	if n.Status.Phase != "Running" {
		t.Errorf("status phase %q, want Running", n.Status.Phase)
	}
}

func TestGenerationWithoutSpec(t *testing.T) {
	ctx := context.Background()
	s := MemoryFor(t)
	c := mustCreate(t, s, configMap("web", "cfg", map[string]string{"a": "1"}))
	c.Labels = map[string]string{"l": "v"}
	c2, err := s.Update(ctx, c)
	if err != nil || c2.GetGeneration() != 1 {
		t.Fatalf("label change: gen %d err %v, want 1", c2.GetGeneration(), err)
	}
	c3 := c2.(*corev1.ConfigMap)
	c3.Data["a"] = "2"
	c4, err := s.Update(ctx, c3)
	if err != nil || c4.GetGeneration() != 2 {
		t.Fatalf("data change: gen %d err %v, want 2", c4.GetGeneration(), err)
	}
	d := mustCreate(t, s, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "web"}})
	d.Spec.Replicas = new(int32(3))
	d2, err := s.Update(ctx, d)
	if err != nil || d2.GetGeneration() != 2 {
		t.Fatalf("deployment replicas: gen %d err %v, want 2", d2.GetGeneration(), err)
	}
}

// TestTxnRevisions: each write of a Txn has its own revision; the Tx ends
// with its function and can update status.
func TestTxnRevisions(t *testing.T) {
	ctx := context.Background()
	s := MemoryFor(t)
	mustCreate(t, s, pod("web", "old", nil, ""))
	var leaked Tx
	rev, err := s.Txn(ctx, func(tx Tx) error {
		leaked = tx
		a, err := tx.Create(pod("web", "a", nil, ""))
		if err != nil {
			return err
		}
		a.SetLabels(map[string]string{"v": "2"})
		if a, err = tx.Update(a); err != nil {
			return err
		}
		a.(*corev1.Pod).Status.Phase = corev1.PodRunning
		if _, err := tx.(TxStatusWriter).UpdateStatus(a); err != nil {
			return err
		}
		_, err = tx.Delete("pods", "web", "old", DeleteOptions{})
		return err
	})
	if err != nil || rev != 5 || s.Revision() != 5 {
		t.Fatalf("txn: rev %d revision %d err %v, want 5", rev, s.Revision(), err)
	}
	if _, err := leaked.Get("pods", "web", "a"); err == nil {
		t.Errorf("Tx usable after its Txn returned")
	}
	a, err := s.Get(ctx, "pods", "web", "a")
	if err != nil || rv(t, a) != 4 || a.(*corev1.Pod).Status.Phase != corev1.PodRunning {
		t.Errorf("after txn: %v rv %s", err, a.GetResourceVersion())
	}
}

// TestNoopWritesNothing: an idle cluster, whose controllers rewrite what is
// already stored, must not write to the disk at all.
func TestNoopWritesNothing(t *testing.T) {
	ctx := context.Background()
	s, err := Open(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := mustCreate(t, s, pod("web", "a", map[string]string{"app": "web"}, "n1"))
	p.Status.Phase = corev1.PodRunning
	st, err := s.UpdateStatus(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	version, rev := s.db.MaxVersion(), s.Revision()
	for range 10 {
		fresh := pod("web", "a", map[string]string{"app": "web"}, "n1") // as Git has it
		if _, err := s.Update(ctx, fresh); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Txn(ctx, func(tx Tx) error {
			_, err := tx.Update(fresh)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if s.db.MaxVersion() != version || s.Revision() != rev {
		t.Errorf("no-op writes committed: badger version %d -> %d, revision %d -> %d",
			version, s.db.MaxVersion(), rev, s.Revision())
	}
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, History: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		mustCreate(t, s, pod("web", fmt.Sprintf("p%02d", i), nil, ""))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := s.Get(ctx, "pods", "web", "p00"); !errors.Is(err, ErrClosed) {
		t.Errorf("get after close: %v, want ErrClosed", err)
	}
	if _, err := s.Create(ctx, pod("web", "late", nil, "")); !errors.Is(err, ErrClosed) {
		t.Errorf("create after close: %v, want ErrClosed", err)
	}

	s, err = Open(Config{Dir: dir, History: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Revision() != 30 {
		t.Fatalf("revision after reopen %d, want 30", s.Revision())
	}
	objs, rev, err := s.List(ctx, "pods", ListOptions{})
	if err != nil || len(objs) != 30 || rev != 30 {
		t.Fatalf("list after reopen: %d objects rev %d err %v", len(objs), rev, err)
	}
	if _, err := s.Watch(ctx, "pods", ListOptions{}, 5); !errors.Is(err, ErrCompacted) {
		t.Errorf("watch from compacted revision after reopen: %v", err)
	}
	w, err := s.Watch(ctx, "pods", ListOptions{}, 25)
	if err != nil {
		t.Fatal(err)
	}
	p := mustCreate(t, s, pod("web", "new", nil, ""))
	if rv(t, p) != 31 {
		t.Errorf("first write after reopen rv %s, want 31", p.ResourceVersion)
	}
	for want := int64(26); want <= 31; want++ {
		if ev := next(t, w); ev.Revision != want {
			t.Fatalf("event rev %d, want %d", ev.Revision, want)
		}
	}
}

// TestOpenEmptyLogFiles: a crash between the creation of a log file and its
// first write leaves it empty; the store still opens, with its data.
func TestOpenEmptyLogFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, pod("web", "a", nil, ""))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"00009.mem", "000009.vlog"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err = Open(Config{Dir: dir})
	if err != nil {
		t.Fatalf("open with empty log files: %v", err)
	}
	defer s.Close()
	if _, err := s.Get(context.Background(), "pods", "web", "a"); err != nil || s.Revision() != 1 {
		t.Errorf("after reopen: revision %d, get: %v", s.Revision(), err)
	}
}
