package reconciler_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler"
	"github.com/flotilla-dev/flotilla/reconciler/endpointslice"
	"github.com/flotilla-dev/flotilla/reconciler/nodelifecycle"
	"github.com/flotilla-dev/flotilla/reconciler/statefulset"
	"github.com/flotilla-dev/flotilla/schema"
)

// webManifests decodes testdata/web-statefulset.yaml (Kubernetes' own
// example: a headless Service nginx and a StatefulSet web of 2 with a
// volumeClaimTemplate www) into the default namespace.
func webManifests(t *testing.T) (*corev1.Service, *appsv1.StatefulSet) {
	t.Helper()
	data, err := os.ReadFile("testdata/web-statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var svc *corev1.Service
	var set *appsv1.StatefulSet
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatal(err)
		}
		obj, err := schema.DecodeAny(js)
		if err != nil {
			t.Fatal(err)
		}
		obj.SetNamespace("default")
		switch o := obj.(type) {
		case *corev1.Service:
			svc = o
		case *appsv1.StatefulSet:
			set = o
		}
	}
	if svc == nil || set == nil {
		t.Fatal("testdata/web-statefulset.yaml: want a Service and a StatefulSet")
	}
	return svc, set
}

// eventLog records, from store watches, the order (by revision) in which
// pods are created, become Running and Ready and are deleted, and claims
// are created: "+web-0", "ready web-0", "-web-0", "+claim www-web-0" (each
// pod UID's readiness is recorded once).
type eventLog struct {
	mu     sync.Mutex
	events map[int64]string
	ready  map[string]bool // by UID
}

func watchEvents(t *testing.T, st store.Interface) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &eventLog{events: map[int64]string{}, ready: map[string]bool{}}
	var wg sync.WaitGroup
	for _, res := range []string{"pods", "persistentvolumeclaims"} {
		ch, err := st.Watch(ctx, res, store.ListOptions{Namespace: "default"}, st.Revision())
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range ch {
				l.mu.Lock()
				switch o := ev.Object.(type) {
				case *corev1.PersistentVolumeClaim:
					if ev.Type == store.Added {
						l.events[ev.Revision] = "+claim " + o.Name
					}
				case *corev1.Pod:
					switch {
					case ev.Type == store.Added:
						l.events[ev.Revision] = "+" + o.Name
					case ev.Type == store.Deleted:
						l.events[ev.Revision] = "-" + o.Name
					case ready(o) && !l.ready[string(o.UID)]:
						l.ready[string(o.UID)] = true
						l.events[ev.Revision] = "ready " + o.Name
					}
				}
				l.mu.Unlock()
			}
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return l
}

// take returns the events so far in revision order and forgets them.
func (l *eventLog) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	revs := make([]int64, 0, len(l.events))
	for r := range l.events {
		revs = append(revs, r)
	}
	slices.Sort(revs)
	out := make([]string, 0, len(revs))
	for _, r := range revs {
		out = append(out, l.events[r])
	}
	l.events = map[int64]string{}
	return strings.Join(out, " ")
}

func getStatefulSet(t *testing.T, st store.Interface, name string) *appsv1.StatefulSet {
	t.Helper()
	o, err := st.Get(context.Background(), "statefulsets", "default", name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*appsv1.StatefulSet)
}

func getClaim(t *testing.T, st store.Interface, name string) *corev1.PersistentVolumeClaim {
	t.Helper()
	o, err := st.Get(context.Background(), "persistentvolumeclaims", "default", name)
	if err != nil {
		t.Fatalf("claim %s: %v", name, err)
	}
	return o.(*corev1.PersistentVolumeClaim)
}

func scaleStatefulSet(t *testing.T, st store.Interface, name string, fn func(*appsv1.StatefulSet)) {
	t.Helper()
	for {
		s := getStatefulSet(t, st, name)
		fn(s)
		_, err := st.Update(context.Background(), s)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
}

// requireBinder waits for the PV/PVC binder's built-in StorageClass
// ("local", made at start): the set's claims are bound by it, and the
// scheduler places no pod whose claims cannot bind.
func requireBinder(t *testing.T, st store.Interface) {
	t.Helper()
	testkit.Eventually(t, "the built-in StorageClass \"local\" (is the PV/PVC binder in the Manager?)", 0, func() error {
		_, err := st.Get(context.Background(), "storageclasses", "", "local")
		return err
	})
}

// setConverged checks that set name has exactly want pods <name>-0 … all
// Running and Ready at the update revision, each mounting its own claim,
// and a status that says so.
func setConverged(t *testing.T, st store.Interface, name string, want int) string {
	s := getStatefulSet(t, st, name)
	rev := statefulset.RevisionName(s)
	var bad []string
	n := 0
	for _, p := range pods(t, st) {
		if ref := metav1.GetControllerOf(p); ref == nil || ref.UID != s.UID {
			continue
		}
		n++
		ord, ok := statefulset.Ordinal(s, p.Name)
		if !ok || ord >= want {
			bad = append(bad, "unexpected pod "+p.Name)
			continue
		}
		if !ready(p) || p.Labels[statefulset.LabelRevision] != rev {
			bad = append(bad, fmt.Sprintf("pod %s ready=%v revision %s", p.Name, ready(p), p.Labels[statefulset.LabelRevision]))
		}
	}
	if n != want {
		bad = append(bad, fmt.Sprintf("%d pods, want %d", n, want))
	}
	w := int32(want)
	st2 := s.Status
	if st2.ObservedGeneration != s.Generation || st2.Replicas != w || st2.ReadyReplicas != w || st2.AvailableReplicas != w ||
		st2.UpdatedReplicas != w || st2.CurrentReplicas != w || st2.CurrentRevision != rev || st2.UpdateRevision != rev {
		bad = append(bad, fmt.Sprintf("status %+v (generation %d, revision %s)", st2, s.Generation, rev))
	}
	return strings.Join(bad, "; ")
}

// TestStatefulSetWeb runs Kubernetes' web example through the Badger store,
// the Manager and two simulated kubelets that take a moment to start each
// pod: web-0 is created first and web-1 only once web-0 is Ready; each pod
// has its identity (hostname, subdomain, labels) and its claim www-web-N,
// made before it and owned by nobody; the headless service publishes the
// pods' hostnames. Scaling to 1 deletes web-1 and keeps www-web-1; back to
// 2, web-1 mounts the same claim. A new template rolls from web-1 down to
// web-0, each replacement Ready before the next goes. Deleting the set
// deletes its pods and keeps its claims.
func TestStatefulSetWeb(t *testing.T) {
	st := store.MemoryFor(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := 0; i < 2; i++ {
		k := &reconciler.SimKubelet{Store: st, NodeName: fmt.Sprintf("node-%d", i), Logger: testLogger(t), StartDelay: 300 * time.Millisecond}
		if err := k.Register(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := k.Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("simkubelet: %v", err)
			}
		}()
	}
	startManager(t, st)
	requireBinder(t, st)
	log := watchEvents(t, st)
	svc, set := webManifests(t)
	create(t, st, svc)
	create(t, st, set)

	testkit.EventuallyWhy(t, "web-0 and web-1 running", time.Minute, func() string { return setConverged(t, st, "web", 2) })
	if got, want := log.take(), "+claim www-web-0 +web-0 ready web-0 +claim www-web-1 +web-1 ready web-1"; got != want {
		t.Errorf("creation order\n got %s\nwant %s", got, want)
	}
	set = getStatefulSet(t, st, "web")
	claimUID := map[string]string{}
	for i, p := range []string{"web-0", "web-1"} {
		o, err := st.Get(ctx, "pods", "default", p)
		if err != nil {
			t.Fatal(err)
		}
		pod := o.(*corev1.Pod)
		if pod.Spec.Hostname != p || pod.Spec.Subdomain != "nginx" {
			t.Errorf("%s: hostname %q subdomain %q", p, pod.Spec.Hostname, pod.Spec.Subdomain)
		}
		if pod.Labels["app"] != "nginx" || pod.Labels[statefulset.LabelPodName] != p || pod.Labels[statefulset.LabelPodIndex] != fmt.Sprint(i) {
			t.Errorf("%s: labels %v", p, pod.Labels)
		}
		claim := "www-" + p
		if len(pod.Spec.Volumes) != 1 || pod.Spec.Volumes[0].Name != "www" || pod.Spec.Volumes[0].PersistentVolumeClaim == nil ||
			pod.Spec.Volumes[0].PersistentVolumeClaim.ClaimName != claim {
			t.Errorf("%s: volumes %+v, want www → %s", p, pod.Spec.Volumes, claim)
		}
		c := getClaim(t, st, claim)
		if c.Labels["app"] != "nginx" || len(c.OwnerReferences) != 0 || c.Spec.Resources.Requests.Storage().String() != "1Gi" {
			t.Errorf("claim %s: labels %v owners %v spec %+v", claim, c.Labels, c.OwnerReferences, c.Spec)
		}
		claimUID[claim] = string(c.UID)
	}
	testkit.EventuallyWhy(t, "the headless service publishes the pods' hostnames", time.Minute, func() string {
		objs, _, err := st.List(ctx, "endpointslices", store.ListOptions{Namespace: "default", LabelSelector: endpointslice.LabelServiceName + "=nginx"})
		if err != nil {
			return err.Error()
		}
		var hosts []string
		for _, o := range objs {
			for _, ep := range o.(*discoveryv1.EndpointSlice).Endpoints {
				if ep.Hostname != nil {
					hosts = append(hosts, *ep.Hostname)
				}
			}
		}
		slices.Sort(hosts)
		if got := strings.Join(hosts, ","); got != "web-0,web-1" {
			return "hostnames " + got
		}
		return ""
	})

	scaleStatefulSet(t, st, "web", func(s *appsv1.StatefulSet) { one := int32(1); s.Spec.Replicas = &one })
	testkit.EventuallyWhy(t, "scaled to 1", time.Minute, func() string { return setConverged(t, st, "web", 1) })
	if got, want := log.take(), "-web-1"; got != want {
		t.Errorf("scale down\n got %s\nwant %s", got, want)
	}
	if c := getClaim(t, st, "www-web-1"); string(c.UID) != claimUID["www-web-1"] {
		t.Error("www-web-1 was replaced")
	}

	scaleStatefulSet(t, st, "web", func(s *appsv1.StatefulSet) { two := int32(2); s.Spec.Replicas = &two })
	testkit.EventuallyWhy(t, "scaled to 2 again", time.Minute, func() string { return setConverged(t, st, "web", 2) })
	if got, want := log.take(), "+web-1 ready web-1"; got != want {
		t.Errorf("scale up\n got %s\nwant %s", got, want)
	}
	for claim, uid := range claimUID {
		if c := getClaim(t, st, claim); string(c.UID) != uid {
			t.Errorf("%s replaced: the pod must re-attach to its claim", claim)
		}
	}

	scaleStatefulSet(t, st, "web", func(s *appsv1.StatefulSet) {
		s.Spec.Template.Spec.Containers[0].Image = "registry.k8s.io/nginx-slim:0.8"
	})
	testkit.EventuallyWhy(t, "rolled out", time.Minute, func() string { return setConverged(t, st, "web", 2) })
	if got, want := log.take(), "-web-1 +web-1 ready web-1 -web-0 +web-0 ready web-0"; got != want {
		t.Errorf("rolling update\n got %s\nwant %s", got, want)
	}

	if _, err := st.Delete(ctx, "statefulsets", "default", "web", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyWhy(t, "the set's pods collected", time.Minute, func() string {
		if ps := pods(t, st); len(ps) != 0 {
			return fmt.Sprintf("pods %v", podNames(ps))
		}
		return ""
	})
	for claim, uid := range claimUID {
		if c := getClaim(t, st, claim); string(c.UID) != uid {
			t.Errorf("%s replaced", claim)
		}
	}
}

// TestStatefulSetPodOnLostNode is point 4 of the storage scope end to end:
// the node running web-1 dies (its agent stops, gossip says failed); after
// the eviction timeout web-1 is not deleted but kept, marked NodeLost, and
// no second web-1 appears anywhere; when the operator deletes the Node,
// web-1 is collected and recreated with the same claim. With volumes any
// node reaches (a static class of network volumes) it runs on the other
// node; with the default local volumes its claim is on the dead node, so
// it stays Pending, unschedulable, until that node comes back.
func TestStatefulSetPodOnLostNode(t *testing.T) {
	t.Run("network volumes", func(t *testing.T) { testPodOnLostNode(t, true) })
	t.Run("local volumes", func(t *testing.T) { testPodOnLostNode(t, false) })
}

func testPodOnLostNode(t *testing.T, network bool) {
	st := store.MemoryFor(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	members := nodelifecycle.NewFakeMembership()
	stop := map[string]context.CancelFunc{}
	for _, name := range []string{"node-a", "node-b"} {
		// Heartbeats every 500ms: eviction needs them stale as well as
		// gossip saying the node failed.
		k := &reconciler.SimKubelet{Store: st, NodeName: name, Logger: testLogger(t), HeartbeatInterval: 500 * time.Millisecond}
		if err := k.Register(ctx); err != nil {
			t.Fatal(err)
		}
		members.Join(name, time.Now())
		kctx, kcancel := context.WithCancel(ctx)
		stop[name] = kcancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := k.Run(kctx); err != nil && kctx.Err() == nil {
				t.Errorf("simkubelet: %v", err)
			}
		}()
	}
	m := startManagerWith(t, reconciler.Config{
		Store: st, Logger: testLogger(t), ResyncPeriod: 2 * time.Second, MaxBackoff: time.Second,
		Membership: members, PodEvictionTimeout: 200 * time.Millisecond, NodeMonitorGracePeriod: 3 * time.Second,
	})
	requireBinder(t, st)
	_, set := webManifests(t)
	if network {
		immediate := storagev1.VolumeBindingImmediate
		sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "nfs"}, Provisioner: "kubernetes.io/no-provisioner", VolumeBindingMode: &immediate}
		sc.APIVersion, sc.Kind = "storage.k8s.io/v1", "StorageClass"
		create(t, st, sc)
		for i := 0; i < 2; i++ {
			pv := &corev1.PersistentVolume{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("nfs-%d", i)},
				Spec: corev1.PersistentVolumeSpec{
					StorageClassName: "nfs",
					Capacity:         corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					PersistentVolumeSource: corev1.PersistentVolumeSource{
						NFS: &corev1.NFSVolumeSource{Server: "nfs.example", Path: fmt.Sprintf("/export/%d", i)},
					},
				},
			}
			pv.APIVersion, pv.Kind = "v1", "PersistentVolume"
			create(t, st, pv)
		}
		class := "nfs"
		set.Spec.VolumeClaimTemplates[0].Spec.StorageClassName = &class
	}
	create(t, st, set)
	testkit.EventuallyWhy(t, "web-0 and web-1 running", time.Minute, func() string { return setConverged(t, st, "web", 2) })
	if got := podsPerNode(t, st); got["node-a"] != 1 || got["node-b"] != 1 {
		t.Fatalf("pods per node %v, want one on each", got)
	}
	var lost *corev1.Pod
	for _, p := range pods(t, st) {
		if p.Spec.NodeName == "node-b" {
			lost = p
		}
	}
	claim := getClaim(t, st, "www-"+lost.Name)

	stop["node-b"]()
	members.Fail("node-b", time.Now())
	testkit.EventuallyWhy(t, lost.Name+" kept on the lost node, marked NodeLost", time.Minute, func() string {
		o, err := st.Get(ctx, "pods", "default", lost.Name)
		if err != nil {
			return err.Error()
		}
		if p := o.(*corev1.Pod); p.UID != lost.UID || p.Status.Reason != nodelifecycle.ReasonNodeLost {
			return fmt.Sprintf("uid %s (was %s), reason %q", p.UID, lost.UID, p.Status.Reason)
		}
		return ""
	})
	m.quiet(t, reconciler.NodeLifecycle, 5) // five eviction timeouts
	o, err := st.Get(ctx, "pods", "default", lost.Name)
	if err != nil || o.GetUID() != lost.UID || o.(*corev1.Pod).Spec.NodeName != "node-b" {
		t.Fatalf("%s replaced while its node was only unreachable: %v %+v", lost.Name, err, o)
	}
	if n := len(pods(t, st)); n != 2 {
		t.Fatalf("%d pods, want 2", n)
	}

	// The operator confirms node-b gone.
	if _, err := st.Delete(ctx, "nodes", "", "node-b", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyWhy(t, lost.Name+" recreated with its claim", time.Minute, func() string {
		o, err := st.Get(ctx, "pods", "default", lost.Name)
		if err != nil {
			return err.Error()
		}
		p := o.(*corev1.Pod)
		if p.UID == lost.UID {
			return "not replaced yet"
		}
		if v := p.Spec.Volumes; len(v) != 1 || v[0].PersistentVolumeClaim == nil || v[0].PersistentVolumeClaim.ClaimName != claim.Name {
			return fmt.Sprintf("volumes %+v", v)
		}
		if network {
			if p.Spec.NodeName != "node-a" {
				return fmt.Sprintf("%s on %q", p.Name, p.Spec.NodeName)
			}
			return setConverged(t, st, "web", 2)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && p.Spec.NodeName == "" {
				t.Logf("%s pending: %s", p.Name, c.Message)
				return ""
			}
		}
		return fmt.Sprintf("%s on %q, conditions %+v", p.Name, p.Spec.NodeName, p.Status.Conditions)
	})
	if c := getClaim(t, st, claim.Name); c.UID != claim.UID || c.Spec.VolumeName != claim.Spec.VolumeName {
		t.Errorf("claim %s replaced or rebound: %s → %s", claim.Name, claim.Spec.VolumeName, c.Spec.VolumeName)
	}
}

// TestStatefulSetClaimRetentionDelete: with persistentVolumeClaimRetentionPolicy
// Delete/Delete (and Parallel pod management), scaling down deletes the
// claims of the removed pods once they are gone, and deleting the set lets
// the garbage collector delete the rest.
func TestStatefulSetClaimRetentionDelete(t *testing.T) {
	st := store.MemoryFor(t)
	startKubelets(t, st, 2)
	startManager(t, st)
	requireBinder(t, st)
	_, set := webManifests(t)
	set.Spec.PodManagementPolicy = appsv1.ParallelPodManagement
	set.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
		WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType,
		WhenScaled:  appsv1.DeletePersistentVolumeClaimRetentionPolicyType,
	}
	create(t, st, set)
	testkit.EventuallyWhy(t, "2 running", time.Minute, func() string { return setConverged(t, st, "web", 2) })
	claims := func() string {
		objs, _, err := st.List(context.Background(), "persistentvolumeclaims", store.ListOptions{Namespace: "default"})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range objs {
			names = append(names, o.GetName())
		}
		return strings.Join(names, ",")
	}
	if got := claims(); got != "www-web-0,www-web-1" {
		t.Fatalf("claims %s", got)
	}
	scaleStatefulSet(t, st, "web", func(s *appsv1.StatefulSet) { one := int32(1); s.Spec.Replicas = &one })
	testkit.EventuallyWhy(t, "www-web-1 deleted with web-1", time.Minute, func() string {
		if bad := setConverged(t, st, "web", 1); bad != "" {
			return bad
		}
		if got := claims(); got != "www-web-0" {
			return "claims " + got
		}
		return ""
	})
	if _, err := st.Delete(context.Background(), "statefulsets", "default", "web", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyWhy(t, "pods and claims collected with the set", time.Minute, func() string {
		if got := claims(); got != "" || len(pods(t, st)) != 0 {
			return fmt.Sprintf("claims %q, pods %v", got, podNames(pods(t, st)))
		}
		return ""
	})
}
