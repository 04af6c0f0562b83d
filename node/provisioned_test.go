package node

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/volumes/pvbinding"
)

// TestSweepProvisioned: a provisioned volume's directory on this node goes
// when its PersistentVolume is deleted (reclaim policy Delete), also after
// the last one is gone; other nodes' directories, volumes that were not
// provisioned and live volumes stay.
func TestSweepProvisioned(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := store.MemoryFor(t)
	ctx := context.Background()
	base := t.TempDir()
	root := filepath.Join(base, "volumes")
	mine := func(name string) string { return filepath.Join(root, "n1", name) }
	for _, d := range []string{mine("pvc-a"), mine("pvc-b"), mine("keep-me"), filepath.Join(root, "n2", "pvc-c")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Hour) // younger ones are left for a later sweep
		if err := os.Chtimes(d, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(mine("pvc-new"), 0o755); err != nil {
		t.Fatal(err)
	}
	pv := func(name, dir string) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{pvbinding.AnnProvisionedDir: dir}}}
	}
	for _, v := range []*corev1.PersistentVolume{pv("pvc-a", mine("pvc-a")), pv("pvc-b", mine("pvc-b")), pv("pvc-c", filepath.Join(root, "n2", "pvc-c"))} {
		if _, err := st.Create(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	a, err := New(Config{NodeName: "n1", Store: st, Runtime: NewFakeRuntime(clk), Network: NewFakeNetwork(), Clock: clk, Logger: testkit.Logger(t),
		PodDir: filepath.Join(base, "pods")})
	if err != nil {
		t.Fatal(err)
	}
	exists := func(d string) bool { _, err := os.Stat(d); return err == nil }
	if err := a.sweepProvisioned(ctx); err != nil {
		t.Fatal(err)
	}
	if !exists(mine("pvc-a")) || !exists(mine("pvc-b")) {
		t.Fatal("a live volume's directory was removed")
	}
	for _, name := range []string{"pvc-a", "pvc-b"} {
		if _, err := st.Delete(ctx, "persistentvolumes", "", name, store.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := a.sweepProvisioned(ctx); err != nil {
			t.Fatal(err)
		}
		if exists(mine(name)) {
			t.Fatalf("%s's directory stays after its volume was deleted", name)
		}
	}
	if !exists(mine("keep-me")) || !exists(filepath.Join(root, "n2", "pvc-c")) || !exists(mine("pvc-new")) {
		t.Error("a directory that is not this node's provisioned volume was removed")
	}
}
