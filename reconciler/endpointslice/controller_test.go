package endpointslice_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler"
	"github.com/flotilla-dev/flotilla/reconciler/endpointslice"
)

// openStore opens a Badger store on disk in a temporary directory.
func openStore(t *testing.T) *store.Badger {
	t.Helper()
	st, err := store.Open(store.Config{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// startManager runs the endpointslice controller alone. resync < 0
// disables the periodic resync, so that only the event handlers can bring
// changes in.
func startManager(t *testing.T, st store.Interface, resync time.Duration) *reconciler.Manager {
	t.Helper()
	m, err := reconciler.New(reconciler.Config{
		Store:        st,
		Logger:       testkit.Logger(t),
		Controllers:  []string{reconciler.EndpointSlice},
		ResyncPeriod: resync,
		MaxBackoff:   time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return m
}

func newService(name string, selector map[string]string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Selector: selector,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("web")}},
		},
	}
	s.APIVersion, s.Kind = "v1", "Service"
	return s
}

func newPod(name string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "node-0", Containers: []corev1.Container{{
			Name: "web", Image: "nginx", Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8080}},
		}}},
	}
	p.APIVersion, p.Kind = "v1", "Pod"
	return p
}

// setStatus writes a pod's status as the node agent would.
func setStatus(t *testing.T, st store.Interface, name, ip string, ready bool) {
	t.Helper()
	o, err := st.Get(context.Background(), "pods", "default", name)
	if err != nil {
		t.Fatal(err)
	}
	p := o.(*corev1.Pod)
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}},
	}
	if _, err := st.UpdateStatus(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

// slices renders the slices of service: "[name:port] {pod=ip[ notready] ...}",
// one per line; it also checks what every slice must carry.
func slices(t *testing.T, st store.Interface, service string) string {
	t.Helper()
	objs, _, err := st.List(context.Background(), "endpointslices", store.ListOptions{
		Namespace: "default", LabelSelector: endpointslice.LabelServiceName + "=" + service,
	})
	if err != nil {
		t.Fatal(err)
	}
	svc, _ := st.Get(context.Background(), "services", "default", service)
	var out []string
	for _, o := range objs {
		s := o.(*discoveryv1.EndpointSlice)
		if s.Labels[endpointslice.LabelManagedBy] != endpointslice.ManagedBy || s.AddressType != discoveryv1.AddressTypeIPv4 {
			t.Errorf("slice %s: labels %v addressType %s", s.Name, s.Labels, s.AddressType)
		}
		if ref := metav1.GetControllerOf(s); svc != nil && (ref == nil || ref.Kind != "Service" || ref.UID != svc.GetUID()) {
			t.Errorf("slice %s: owner %+v", s.Name, s.OwnerReferences)
		}
		var ports, eps []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%s:%d", *p.Name, *p.Port))
		}
		for _, e := range s.Endpoints {
			str := e.TargetRef.Name + "=" + strings.Join(e.Addresses, "+")
			if !*e.Conditions.Ready {
				str += " notready"
			}
			if *e.NodeName != "node-0" {
				str += " node=" + *e.NodeName
			}
			eps = append(eps, str)
		}
		name := strings.TrimPrefix(s.Name, service+"-")
		if strings.Contains(name, "-") || name == s.Name {
			t.Errorf("slice name %q is not %s-<hash>", s.Name, service)
		}
		out = append(out, fmt.Sprintf("[%s] {%s}", strings.Join(ports, ","), strings.Join(eps, " ")))
	}
	return strings.Join(out, "\n")
}

func expect(t *testing.T, st store.Interface, service, want string) {
	t.Helper()
	testkit.EventuallyWhy(t, service+" slices "+want, 0, func() string {
		if got := slices(t, st, service); got != want {
			return "got " + got
		}
		return ""
	})
}

func TestControllerThroughStore(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	if _, err := st.Create(ctx, newService("web", map[string]string{"app": "web"})); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, newService("nothing", map[string]string{"app": "nothing"})); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"a", "b", "c"} {
		if _, err := st.Create(ctx, newPod(name)); err != nil {
			t.Fatal(err)
		}
		setStatus(t, st, name, fmt.Sprintf("10.244.0.%d", i+10), true)
	}
	// A pod selected but without an address yet is not an endpoint.
	if _, err := st.Create(ctx, newPod("pending")); err != nil {
		t.Fatal(err)
	}
	startManager(t, st, -1)

	expect(t, st, "web", "[http:8080] {a=10.244.0.10 b=10.244.0.11 c=10.244.0.12}")
	// Selecting nothing: one empty slice; its named port resolves against
	// no pod, so it has no ports either.
	expect(t, st, "nothing", "[] {}")

	setStatus(t, st, "b", "10.244.0.11", false)
	expect(t, st, "web", "[http:8080] {a=10.244.0.10 b=10.244.0.11 notready c=10.244.0.12}")

	if _, err := st.Delete(ctx, "pods", "default", "c", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, st, "web", "[http:8080] {a=10.244.0.10 b=10.244.0.11 notready}")

	o, err := st.Get(ctx, "pods", "default", "a")
	if err != nil {
		t.Fatal(err)
	}
	a := o.(*corev1.Pod)
	a.Labels = map[string]string{"app": "nothing"}
	if _, err := st.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	expect(t, st, "web", "[http:8080] {b=10.244.0.11 notready}")
	// It joins the service now selecting it (named port resolved to 8080).
	expect(t, st, "nothing", "[http:8080] {a=10.244.0.10}")

	if _, err := st.Delete(ctx, "services", "default", "web", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, st, "web", "")
	expect(t, st, "nothing", "[http:8080] {a=10.244.0.10}")
}

// TestIdleWritesNothing: once converged, resyncs every 100ms and repeated
// identical pod statuses write nothing.
func TestIdleWritesNothing(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	if _, err := st.Create(ctx, newService("web", map[string]string{"app": "web"})); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, newService("nothing", map[string]string{"app": "nothing"})); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"a", "b"} {
		if _, err := st.Create(ctx, newPod(name)); err != nil {
			t.Fatal(err)
		}
		setStatus(t, st, name, fmt.Sprintf("10.244.0.%d", i+10), i == 0)
	}
	m := startManager(t, st, 100*time.Millisecond)
	expect(t, st, "web", "[http:8080] {a=10.244.0.10 b=10.244.0.11 notready}")
	expect(t, st, "nothing", "[] {}")
	testkit.EventuallyTrue(t, "idle", 0, m.Idle)
	rev := st.Revision()
	passes := m.Reconciles(reconciler.EndpointSlice)
	testkit.EventuallyTrue(t, "ten resyncs of both services", 0, func() bool { return m.Reconciles(reconciler.EndpointSlice) >= passes+20 })
	testkit.EventuallyTrue(t, "idle", 0, m.Idle)
	if now := st.Revision(); now != rev {
		t.Errorf("idle cluster wrote: revision %d → %d", rev, now)
	}
}

// TestForeignSlicesUntouched: a slice written by someone else for the same
// service survives every pass, even the service's deletion.
func TestForeignSlicesUntouched(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	if _, err := st.Create(ctx, newService("web", map[string]string{"app": "web"})); err != nil {
		t.Fatal(err)
	}
	foreign := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "web-manual", Namespace: "default", Labels: map[string]string{
			endpointslice.LabelServiceName: "web", endpointslice.LabelManagedBy: "someone-else",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.1"}}},
	}
	foreign.APIVersion, foreign.Kind = "discovery.k8s.io/v1", "EndpointSlice"
	created, err := st.Create(ctx, foreign)
	if err != nil {
		t.Fatal(err)
	}
	startManager(t, st, -1)
	managed := func() string {
		objs, _, err := st.List(ctx, "endpointslices", store.ListOptions{Namespace: "default"})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range objs {
			names = append(names, o.GetName()+"@"+o.GetResourceVersion())
		}
		return strings.Join(names, ",")
	}
	testkit.EventuallyWhy(t, "one managed slice beside the foreign one", 0, func() string {
		if got := managed(); strings.Count(got, ",") != 1 || !strings.Contains(got, "web-manual@"+created.GetResourceVersion()) {
			return got
		}
		return ""
	})
	if _, err := st.Delete(ctx, "services", "default", "web", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyWhy(t, "only the foreign slice, unchanged", 0, func() string {
		if got, want := managed(), "web-manual@"+created.GetResourceVersion(); got != want {
			return got
		}
		return ""
	})
}
