package endpointslice

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func testService(opts ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "svc-uid"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

type podOpt func(*corev1.Pod)

func ip(addr string) podOpt { return func(p *corev1.Pod) { p.Status.PodIP = addr } }
func isReady(p *corev1.Pod) {
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
}
func notReady(p *corev1.Pod) {
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse})
}
func labeled(k, v string) podOpt { return func(p *corev1.Pod) { p.Labels = map[string]string{k: v} } }
func inNamespace(ns string) podOpt {
	return func(p *corev1.Pod) { p.Namespace = ns }
}
func phase(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }
func deleting(p *corev1.Pod) {
	ts := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	p.DeletionTimestamp = &ts
}
func containerPort(name string, port int32, proto corev1.Protocol) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{Name: name, ContainerPort: port, Protocol: proto})
	}
}

func testPod(name string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name), Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// describe renders slices compactly and completely enough to assert on:
// name [ports] endpoints(name=ip ready/serving node host).
func describe(slices []*discoveryv1.EndpointSlice) string {
	var out []string
	for _, s := range slices {
		var ports, eps []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%s/%s:%d", deref(p.Name), deref(p.Protocol), deref(p.Port)))
		}
		for _, e := range s.Endpoints {
			str := fmt.Sprintf("%s=%s", e.TargetRef.Name, strings.Join(e.Addresses, "+"))
			if !deref(e.Conditions.Ready) {
				str += " notready"
			}
			if !deref(e.Conditions.Serving) {
				str += " notserving"
			}
			if deref(e.Conditions.Terminating) {
				str += " terminating"
			}
			if e.Hostname != nil {
				str += " host=" + *e.Hostname
			}
			eps = append(eps, str)
		}
		out = append(out, fmt.Sprintf("%s [%s] {%s}", s.Name, strings.Join(ports, ","), strings.Join(eps, "; ")))
	}
	return strings.Join(out, "\n")
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// hashOf is the name suffix of a port set, for expected names.
func hashOf(ports ...string) string {
	var eps []discoveryv1.EndpointPort
	for _, s := range ports {
		var name string
		var proto corev1.Protocol
		var num int32
		fmt.Sscanf(strings.NewReplacer("/", " ", ":", " ").Replace(s), "%s %s %d", &name, &proto, &num)
		if name == "-" {
			name = ""
		}
		eps = append(eps, discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &num})
	}
	if eps == nil {
		eps = []discoveryv1.EndpointPort{}
	}
	return portsHash(eps)
}

func TestDesired(t *testing.T) {
	h8080 := hashOf("http/TCP:8080")
	cases := []struct {
		name string
		svc  *corev1.Service
		pods []*corev1.Pod
		want string
	}{
		{name: "ready and not ready pods, sorted by name",
			svc: testService(),
			pods: []*corev1.Pod{
				testPod("c", ip("10.0.0.3"), isReady), testPod("a", ip("10.0.0.1"), isReady), testPod("b", ip("10.0.0.2"), notReady),
			},
			want: "web-" + h8080 + " [http/TCP:8080] {a=10.0.0.1; b=10.0.0.2 notready notserving; c=10.0.0.3}"},
		{name: "excluded: no IP, terminating, finished, other labels, other namespace, IPv6 only",
			svc: testService(),
			pods: []*corev1.Pod{
				testPod("ok", ip("10.0.0.1"), isReady),
				testPod("noip", isReady),
				testPod("term", ip("10.0.0.2"), isReady, deleting),
				testPod("done", ip("10.0.0.3"), phase(corev1.PodSucceeded)),
				testPod("failed", ip("10.0.0.4"), phase(corev1.PodFailed)),
				testPod("other", ip("10.0.0.5"), isReady, labeled("app", "db")),
				testPod("elsewhere", ip("10.0.0.6"), isReady, inNamespace("prod")),
				testPod("v6", ip("fd00::1"), isReady),
			},
			want: "web-" + h8080 + " [http/TCP:8080] {ok=10.0.0.1}"},
		{name: "selecting nothing keeps one empty slice with the static ports",
			svc:  testService(),
			pods: []*corev1.Pod{testPod("other", ip("10.0.0.5"), labeled("app", "db"))},
			want: "web-" + h8080 + " [http/TCP:8080] {}"},
		{name: "publishNotReadyAddresses: ready for all, serving is the pod's readiness",
			svc:  testService(func(s *corev1.Service) { s.Spec.PublishNotReadyAddresses = true }),
			pods: []*corev1.Pod{testPod("a", ip("10.0.0.1"))},
			want: "web-" + h8080 + " [http/TCP:8080] {a=10.0.0.1 notserving}"},
		{name: "unset targetPort is the port; protocol defaults to TCP",
			svc: testService(func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, {Port: 443}}
			}),
			pods: []*corev1.Pod{testPod("a", ip("10.0.0.1"), isReady)},
			want: "web-" + hashOf("dns/UDP:53", "-/TCP:443") + " [dns/UDP:53,/TCP:443] {a=10.0.0.1}"},
		{name: "named targetPort resolved per pod: one slice per port set; unresolved ports left out",
			svc: testService(func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{
					{Name: "http", Port: 80, TargetPort: intstr.FromString("web")},
					{Name: "metrics", Port: 9090},
				}
			}),
			pods: []*corev1.Pod{
				testPod("a", ip("10.0.0.1"), isReady, containerPort("web", 8080, "")),
				testPod("b", ip("10.0.0.2"), isReady, containerPort("web", 8080, corev1.ProtocolTCP)),
				testPod("c", ip("10.0.0.3"), isReady, containerPort("web", 9000, "")),
				testPod("d", ip("10.0.0.4"), isReady, containerPort("web", 7000, corev1.ProtocolUDP)),
			},
			want: sortedLines(
				"web-"+hashOf("http/TCP:8080", "metrics/TCP:9090")+" [http/TCP:8080,metrics/TCP:9090] {a=10.0.0.1; b=10.0.0.2}",
				"web-"+hashOf("http/TCP:9000", "metrics/TCP:9090")+" [http/TCP:9000,metrics/TCP:9090] {c=10.0.0.3}",
				"web-"+hashOf("metrics/TCP:9090")+" [metrics/TCP:9090] {d=10.0.0.4}",
			)},
		{name: "hostname only when the subdomain is the service",
			svc: testService(),
			pods: []*corev1.Pod{
				testPod("db-0", ip("10.0.0.1"), isReady, func(p *corev1.Pod) { p.Spec.Hostname, p.Spec.Subdomain = "db-0", "web" }),
				testPod("db-1", ip("10.0.0.2"), isReady, func(p *corev1.Pod) { p.Spec.Hostname, p.Spec.Subdomain = "db-1", "other" }),
			},
			want: "web-" + h8080 + " [http/TCP:8080] {db-0=10.0.0.1 host=db-0; db-1=10.0.0.2}"},
		{name: "no selector: nothing", svc: testService(func(s *corev1.Service) { s.Spec.Selector = nil }),
			pods: []*corev1.Pod{testPod("a", ip("10.0.0.1"), isReady)}},
		{name: "ExternalName: nothing", svc: testService(func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName }),
			pods: []*corev1.Pod{testPod("a", ip("10.0.0.1"), isReady)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Desired(c.svc, c.pods)
			if d := describe(got); d != c.want {
				t.Errorf("slices\n got %s\nwant %s", d, c.want)
			}
			for _, s := range got {
				checkMeta(t, s, c.svc)
			}
		})
	}
}

// sortedLines joins lines sorted, as Desired sorts slices by name.
func sortedLines(lines ...string) string {
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func checkMeta(t *testing.T, s *discoveryv1.EndpointSlice, svc *corev1.Service) {
	t.Helper()
	if s.Namespace != svc.Namespace || s.Labels[LabelServiceName] != svc.Name || s.Labels[LabelManagedBy] != ManagedBy {
		t.Errorf("%s: namespace %q labels %v", s.Name, s.Namespace, s.Labels)
	}
	if s.AddressType != discoveryv1.AddressTypeIPv4 || s.APIVersion != "discovery.k8s.io/v1" || s.Kind != "EndpointSlice" {
		t.Errorf("%s: addressType %q type %s/%s", s.Name, s.AddressType, s.APIVersion, s.Kind)
	}
	ref := metav1.GetControllerOf(s)
	if ref == nil || ref.Kind != "Service" || ref.APIVersion != "v1" || ref.Name != svc.Name || ref.UID != svc.UID {
		t.Errorf("%s: owner %+v", s.Name, s.OwnerReferences)
	}
	for _, e := range s.Endpoints {
		if e.TargetRef == nil || e.TargetRef.Kind != "Pod" || e.TargetRef.Namespace != svc.Namespace || e.TargetRef.UID != types.UID("uid-"+e.TargetRef.Name) {
			t.Errorf("%s: targetRef %+v", s.Name, e.TargetRef)
		}
		if deref(e.NodeName) != "n1" {
			t.Errorf("%s: nodeName %v", s.Name, e.NodeName)
		}
	}
}

func TestDesiredSplitsAt100(t *testing.T) {
	var pods []*corev1.Pod
	for i := 0; i < 2*MaxEndpointsPerSlice+5; i++ {
		pods = append(pods, testPod(fmt.Sprintf("p%03d", i), ip(fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)), isReady))
	}
	got := Desired(testService(), pods)
	h := hashOf("http/TCP:8080")
	wantNames := []string{"web-" + h, "web-" + h + "-2", "web-" + h + "-3"}
	wantSizes := []int{100, 100, 5}
	if len(got) != 3 {
		t.Fatalf("%d slices, want 3", len(got))
	}
	for i, s := range got {
		if s.Name != wantNames[i] || len(s.Endpoints) != wantSizes[i] {
			t.Errorf("slice %d: %s with %d endpoints, want %s with %d", i, s.Name, len(s.Endpoints), wantNames[i], wantSizes[i])
		}
	}
	if first, last := got[0].Endpoints[0].TargetRef.Name, got[2].Endpoints[4].TargetRef.Name; first != "p000" || last != "p204" {
		t.Errorf("order: first %s last %s", first, last)
	}
}

func TestSliceName(t *testing.T) {
	long := strings.Repeat("s", 63)
	for _, c := range []struct {
		svc  string
		i    int
		want string
	}{
		{"web", 0, "web-abc"},
		{"web", 1, "web-abc-2"},
		{long, 0, long[:59] + "-abc"},
		{long, 11, long[:56] + "-abc-12"},
	} {
		if got := SliceName(c.svc, "abc", c.i); got != c.want || len(got) > 63 {
			t.Errorf("SliceName(%q, %d) = %q, want %q", c.svc, c.i, got, c.want)
		}
	}
}

// stored is s as the store would return it: a resourceVersion and uid.
func stored(s *discoveryv1.EndpointSlice, rv string) *discoveryv1.EndpointSlice {
	c := s.DeepCopy()
	c.ResourceVersion, c.UID = rv, types.UID("uid-"+s.Name)
	return c
}

func names(ss []*discoveryv1.EndpointSlice) string {
	var n []string
	for _, s := range ss {
		n = append(n, s.Name)
	}
	return strings.Join(n, ",")
}

func TestPlan(t *testing.T) {
	svc := testService()
	podA := testPod("a", ip("10.0.0.1"), isReady)
	podB := testPod("b", ip("10.0.0.2"), isReady)
	current := Desired(svc, []*corev1.Pod{podA, podB})[0]
	h := hashOf("http/TCP:8080")
	foreign := stored(current, "5")
	foreign.Name = "web-by-someone"
	foreign.Labels = map[string]string{LabelServiceName: "web", LabelManagedBy: "someone-else"}
	oldPorts := stored(Desired(testService(func(s *corev1.Service) { s.Spec.Ports[0].TargetPort = intstr.FromInt32(9000) }), []*corev1.Pod{podA})[0], "6")
	otherService := stored(current, "7")
	otherService.Name, otherService.Labels = "api-x", map[string]string{LabelServiceName: "api", LabelManagedBy: ManagedBy}

	cases := []struct {
		name                               string
		svc                                *corev1.Service
		pods                               []*corev1.Pod
		existing                           []*discoveryv1.EndpointSlice
		wantCreate, wantUpdate, wantDelete string
	}{
		{name: "first pass creates", svc: svc, pods: []*corev1.Pod{podA, podB},
			wantCreate: "web-" + h},
		{name: "unchanged writes nothing, resourceVersion and extra metadata ignored", svc: svc, pods: []*corev1.Pod{podA, podB},
			existing: []*discoveryv1.EndpointSlice{func() *discoveryv1.EndpointSlice {
				s := stored(current, "9")
				s.Labels["extra"] = "x"
				s.Annotations = map[string]string{"note": "y"}
				return s
			}(), foreign, otherService}},
		{name: "a pod left: update", svc: svc, pods: []*corev1.Pod{podA},
			existing: []*discoveryv1.EndpointSlice{stored(current, "9")}, wantUpdate: "web-" + h},
		{name: "port set changed: create the new, delete the old, never the foreign", svc: svc, pods: []*corev1.Pod{podA, podB},
			existing:   []*discoveryv1.EndpointSlice{oldPorts, foreign},
			wantCreate: "web-" + h, wantDelete: oldPorts.Name},
		{name: "selector removed: delete managed slices only", svc: testService(func(s *corev1.Service) { s.Spec.Selector = nil }),
			pods: []*corev1.Pod{podA}, existing: []*discoveryv1.EndpointSlice{stored(current, "9"), foreign, otherService},
			wantDelete: "web-" + h},
		{name: "deleted service (stub): delete its managed slices",
			svc:        &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}},
			existing:   []*discoveryv1.EndpointSlice{stored(current, "9"), oldPorts, foreign},
			wantDelete: strings.Join([]string{"web-" + h, oldPorts.Name}, ",")},
		{name: "recreated service (new UID): owner updated", svc: testService(func(s *corev1.Service) { s.UID = "new-uid" }),
			pods: []*corev1.Pod{podA, podB}, existing: []*discoveryv1.EndpointSlice{stored(current, "9")},
			wantUpdate: "web-" + h},
		{name: "wrong addressType: delete first, create on the next pass", svc: svc, pods: []*corev1.Pod{podA, podB},
			existing: []*discoveryv1.EndpointSlice{func() *discoveryv1.EndpointSlice {
				s := stored(current, "9")
				s.AddressType = discoveryv1.AddressTypeIPv6
				return s
			}()},
			wantDelete: "web-" + h},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Delete is sorted by name.
			del := strings.Split(c.wantDelete, ",")
			sort.Strings(del)
			c.wantDelete = strings.Join(del, ",")
			a := Plan(c.svc, c.pods, c.existing)
			if names(a.Create) != c.wantCreate || names(a.Update) != c.wantUpdate || names(a.Delete) != c.wantDelete {
				t.Errorf("create %q update %q delete %q\nwant   %q        %q        %q",
					names(a.Create), names(a.Update), names(a.Delete), c.wantCreate, c.wantUpdate, c.wantDelete)
			}
			for _, u := range a.Update {
				if u.ResourceVersion != "9" {
					t.Errorf("update of %s has resourceVersion %q, want the stored 9", u.Name, u.ResourceVersion)
				}
				want := Desired(c.svc, c.pods)[0]
				if !sameContent(u, want) {
					t.Errorf("update of %s:\n%s\nwant\n%s", u.Name, describe([]*discoveryv1.EndpointSlice{u}), describe([]*discoveryv1.EndpointSlice{want}))
				}
			}
		})
	}
	// Plan does not modify what it is given.
	before := describe([]*discoveryv1.EndpointSlice{current})
	Plan(svc, []*corev1.Pod{podA}, []*discoveryv1.EndpointSlice{current})
	if describe([]*discoveryv1.EndpointSlice{current}) != before {
		t.Error("Plan modified an existing slice")
	}
}

func TestSelects(t *testing.T) {
	svc := testService()
	if !Selects(svc, testPod("a")) {
		t.Error("matching pod not selected")
	}
	if Selects(svc, testPod("a", labeled("app", "db"))) || Selects(svc, testPod("a", inNamespace("prod"))) {
		t.Error("other labels or namespace selected")
	}
	if Selects(testService(func(s *corev1.Service) { s.Spec.Selector = nil }), testPod("a")) {
		t.Error("service without selector selects")
	}
}
