package node

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"golang.org/x/sys/unix"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/volumes"
)

// smallFS mounts a tmpfs of sizeMiB on a new directory for the test.
func smallFS(t *testing.T, sizeMiB int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small file system")
	}
	dir := t.TempDir()
	if err := unix.Mount("flotilla-test", dir, "tmpfs", 0, "size="+strconv.Itoa(sizeMiB)+"m"); err != nil {
		t.Fatalf("mounting a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fill writes a file of n KiB.
func fill(t *testing.T, path string, kib int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, make([]byte, kib<<10), 0o644); err != nil {
		t.Fatalf("filling %s: %v", path, err)
	}
}

func nodeCondition(t *testing.T, st store.Interface, typ corev1.NodeConditionType) *corev1.NodeCondition {
	t.Helper()
	obj, err := st.Get(context.Background(), "nodes", "", "n1")
	if err != nil {
		return nil
	}
	for _, c := range obj.(*corev1.Node).Status.Conditions {
		if c.Type == typ {
			return &c
		}
	}
	return nil
}

// emptyDirOf is the directory of the pod's emptyDir "data".
func emptyDirOf(t *testing.T, podDir string, p *corev1.Pod) string {
	t.Helper()
	plan, err := volumes.PlanPod(podDir, p)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range plan.Volumes {
		if v.Name == "data" {
			return v.Dir
		}
	}
	t.Fatalf("pod %s has no volume data", p.Name)
	return ""
}

func diskPod(name string, burstable bool) *corev1.Pod {
	p := newPod(name)
	p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	if burstable {
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}
	}
	return p
}

// TestDiskPressureEvicts runs the agent (fake runtime, real store) with its
// data on an 8 MiB tmpfs and a 25% threshold (2 MiB). Filling the file
// system past it puts DiskPressure=True on the Node in the store and
// evicts one pod per round: the BestEffort pod using the most disk first
// (its emptyDir is removed, which relieves the pressure, so the next round
// evicts nothing), then, under new pressure, the other BestEffort pod
// before the Burstable one although that one uses more. Evicted pods are
// Failed, reason Evicted, with a message; the condition stays True through
// the transition period.
func TestDiskPressureEvicts(t *testing.T) {
	fsDir := smallFS(t, 8)
	h := newHarness(t)
	h.podDir = filepath.Join(fsDir, "pods")
	a, err := New(Config{NodeName: "n1", Store: h.st, Runtime: h.rt, Network: h.net, PodDir: h.podDir, Mounter: h.mounter,
		SyncInterval: 50 * time.Millisecond, OrphanGracePeriod: time.Millisecond, Logger: testkit.Logger(t),
		DiskPressure: DiskPressureConfig{NodeFSMinAvailablePercent: 25, MinAvailableBytes: -1,
			Interval: time.Hour, TransitionPeriod: time.Hour}}) // rounds are run by the test
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	big := createPod(t, h.st, diskPod("be-big", false))
	small := createPod(t, h.st, diskPod("be-small", false))
	burst := createPod(t, h.st, diskPod("burst", true))
	for _, n := range []string{"be-big", "be-small", "burst"} {
		testkit.EventuallyTrue(t, n+" Running", 10*time.Second, func() bool { return phase(t, h.st, n) == corev1.PodRunning })
	}
	fill(t, filepath.Join(emptyDirOf(t, h.podDir, big), "blob"), 1536)
	fill(t, filepath.Join(emptyDirOf(t, h.podDir, small), "blob"), 256)
	fill(t, filepath.Join(emptyDirOf(t, h.podDir, burst), "blob"), 2048)

	// 3.75 MiB used of 8: no pressure, and the Node says so.
	a.checkDisk(ctx)
	testkit.EventuallyTrue(t, "DiskPressure=False on the Node", 10*time.Second, func() bool {
		c := nodeCondition(t, h.st, corev1.NodeDiskPressure)
		return c != nil && c.Status == corev1.ConditionFalse && c.Reason == ReasonNoDiskPressure
	})

	// 6.75 MiB used: 1.25 MiB available, below 2 MiB.
	fill(t, filepath.Join(fsDir, "filler1"), 3072)
	a.checkDisk(ctx)
	testkit.EventuallyTrue(t, "DiskPressure=True on the Node", 10*time.Second, func() bool {
		c := nodeCondition(t, h.st, corev1.NodeDiskPressure)
		return c != nil && c.Status == corev1.ConditionTrue && c.Reason == ReasonDiskPressure && strings.Contains(c.Message, "nodefs")
	})
	testkit.EventuallyTrue(t, "be-big evicted", 10*time.Second, func() bool { return phase(t, h.st, "be-big") == corev1.PodFailed })
	got := getPod(t, h.st, "be-big")
	if got.Status.Reason != "Evicted" || !strings.Contains(got.Status.Message, "low on resource: ephemeral-storage") {
		t.Errorf("evicted pod: reason %q, message %q", got.Status.Reason, got.Status.Message)
	}
	if _, err := os.Stat(volumes.PodDir(h.podDir, string(big.UID))); !os.IsNotExist(err) {
		t.Errorf("the evicted pod's emptyDir is still there (%v)", err)
	}

	// 5.25 MiB used: above the threshold again. The next round evicts
	// nothing, and the condition holds through the transition period.
	a.checkDisk(ctx)
	a.disk.mu.Lock()
	n := len(a.disk.evict)
	a.disk.mu.Unlock()
	if n != 0 {
		t.Errorf("%d evictions asked with the threshold no longer crossed", n)
	}
	for _, n := range []string{"be-small", "burst"} {
		if p := phase(t, h.st, n); p != corev1.PodRunning {
			t.Errorf("%s is %s, want Running", n, p)
		}
	}
	if c := nodeCondition(t, h.st, corev1.NodeDiskPressure); c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("DiskPressure %v, want still True within the transition period", c)
	}

	// Pressure again: BestEffort be-small goes before Burstable burst.
	fill(t, filepath.Join(fsDir, "filler2"), 1536)
	a.checkDisk(ctx)
	testkit.EventuallyTrue(t, "be-small evicted", 10*time.Second, func() bool { return phase(t, h.st, "be-small") == corev1.PodFailed })
	if p := phase(t, h.st, "burst"); p != corev1.PodRunning {
		t.Errorf("burst is %s, want Running (BestEffort pods go first)", p)
	}
}

// TestDiskPressureHysteresis steps a fake clock: the condition turns True
// at the first round below the threshold, stays True while free space is
// back above it for less than TransitionPeriod, and turns False only
// after a whole TransitionPeriod without pressure.
func TestDiskPressureHysteresis(t *testing.T) {
	fsDir := smallFS(t, 4)
	h := newHarness(t)
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a, err := New(Config{NodeName: "n1", Store: h.st, Runtime: h.rt, Network: h.net, PodDir: h.podDir, Mounter: h.mounter,
		Clock: clk, Logger: testkit.Logger(t),
		DiskPressure: DiskPressureConfig{NodeFS: fsDir, ImageFS: fsDir, NodeFSMinAvailablePercent: 10, MinAvailableBytes: -1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	status := func() corev1.ConditionStatus {
		c, ok := a.disk.condition(nil, metav1.NewTime(clk.Now()))
		if !ok {
			return ""
		}
		return c.Status
	}
	if status() != "" {
		t.Fatal("a condition before any measurement")
	}
	a.checkDisk(ctx)
	if s := status(); s != corev1.ConditionFalse {
		t.Fatalf("empty file system: DiskPressure %q", s)
	}
	filler := filepath.Join(fsDir, "filler")
	fill(t, filler, 3900) // 4096 KiB, 10% is 410 KiB
	a.checkDisk(ctx)
	if s := status(); s != corev1.ConditionTrue {
		t.Fatalf("full file system: DiskPressure %q", s)
	}
	os.Remove(filler)
	clk.Step(DefaultDiskTransitionPeriod - time.Second)
	a.checkDisk(ctx)
	if s := status(); s != corev1.ConditionTrue {
		t.Fatalf("freed for less than the transition period: DiskPressure %q, want True", s)
	}
	clk.Step(time.Second)
	a.checkDisk(ctx)
	if s := status(); s != corev1.ConditionFalse {
		t.Fatalf("freed for the transition period: DiskPressure %q, want False", s)
	}
	fill(t, filler, 3900)
	a.checkDisk(ctx)
	if s := status(); s != corev1.ConditionTrue {
		t.Fatalf("full again: DiskPressure %q, want True at once", s)
	}
}

// TestDiskPressureConfig: defaults, the absolute floor, validation.
func TestDiskPressureConfig(t *testing.T) {
	c := DiskPressureConfig{}.withDefaults("/pods")
	if c.NodeFS != "/pods" || c.NodeFSMinAvailablePercent != 10 || c.ImageFSMinAvailablePercent != 15 ||
		c.MinAvailableBytes != 100<<20 || c.TransitionPeriod != 5*time.Minute || c.Interval != 10*time.Second {
		t.Errorf("defaults: %+v", c)
	}
	s, err := statSignal("nodefs", t.TempDir(), 10, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	if !s.pressure() || s.threshold != 1<<62 {
		t.Errorf("a floor above the free space: %+v, want pressure", s)
	}
	// Podman's storage root not made yet: only nodefs is watched.
	d := newDiskMonitor(DiskPressureConfig{ImageFS: "/nonexistent/flotilla/storage"}.withDefaults(t.TempDir()), nil)
	if sigs, err := d.measure(); err != nil || len(sigs) != 1 || sigs[0].name != "nodefs" {
		t.Errorf("measure with a missing imagefs: %+v, %v", sigs, err)
	}
	if err := (DiskPressureConfig{NodeFSMinAvailablePercent: 100}).validate(); err == nil {
		t.Error("a 100% threshold was accepted")
	}
	if _, err := New(Config{NodeName: "n", Store: store.MemoryFor(t), Runtime: NewFakeRuntime(nil), Network: NewFakeNetwork(),
		PodDir: t.TempDir(), DiskPressure: DiskPressureConfig{ImageFSMinAvailablePercent: 150}}); err == nil {
		t.Error("New accepted an imagefs threshold of 150%")
	}
}

func TestQOSRank(t *testing.T) {
	be := newPod("be")
	burst := newPod("burst")
	burst.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Mi")}
	guar := newPod("guar")
	guar.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Mi")}
	for _, tc := range []struct {
		p    *corev1.Pod
		want int
	}{{be, 0}, {burst, 1}, {guar, 2}} {
		if got := qosRank(tc.p); got != tc.want {
			t.Errorf("%s: rank %d, want %d", tc.p.Name, got, tc.want)
		}
	}
}
