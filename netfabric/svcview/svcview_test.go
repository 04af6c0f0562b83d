package svcview

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

func ptr[T any](v T) *T { return &v }

func service(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: ports, Selector: map[string]string{"app": name}}}
}

func slice(ns, svc, name string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: ports, Endpoints: eps,
	}
}

func endpoint(ip string, ready *bool, hostname string) discoveryv1.Endpoint {
	ep := discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
	if hostname != "" {
		ep.Hostname = &hostname
	}
	return ep
}

func TestBackends(t *testing.T) {
	svc := service("default", "web",
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
		corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	http := []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}, {Name: ptr("dns"), Protocol: ptr(corev1.ProtocolUDP), Port: ptr(int32(5353))}}
	http9 := []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(9090))}}
	snap := NewSnapshot([]*corev1.Service{svc}, []*discoveryv1.EndpointSlice{
		slice("default", "web", "web-a", http, endpoint("10.244.2.7", ptr(true), "web-1"), endpoint("10.244.1.5", nil, ""), endpoint("10.244.1.9", ptr(false), "")),
		slice("default", "web", "web-b", http9, endpoint("10.244.3.2", ptr(true), "")),
		slice("other", "web", "web-a", http, endpoint("10.244.9.9", ptr(true), "")), // another namespace's service
	}, nil, nil)

	got := snap.ReadyBackends(svc, svc.Spec.Ports[0])
	want := []Backend{
		{Addr: netip.MustParseAddr("10.244.1.5"), Port: 8080, Ready: true},
		{Addr: netip.MustParseAddr("10.244.2.7"), Port: 8080, Ready: true, Hostname: "web-1"},
		{Addr: netip.MustParseAddr("10.244.3.2"), Port: 9090, Ready: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ready http backends:\n got %+v\nwant %+v", got, want)
	}
	if all := snap.Backends(svc, svc.Spec.Ports[0]); len(all) != 4 {
		t.Errorf("all http backends = %d, want 4 (the not-ready one included)", len(all))
	}
	udp := snap.ReadyBackends(svc, svc.Spec.Ports[1])
	if len(udp) != 2 || udp[0].Port != 5353 {
		t.Errorf("udp backends = %+v, want the two ready ones on 5353", udp)
	}
	if snap.Service("default", "web") != svc || snap.Service("default", "nope") != nil {
		t.Error("Service lookup is wrong")
	}
}

func TestAddresses(t *testing.T) {
	svc := service("default", "web")
	if got := ClusterIPs(svc); len(got) != 1 || got[0] != netip.MustParseAddr("10.96.0.10") {
		t.Errorf("ClusterIPs = %v", got)
	}
	svc.Spec.ClusterIP = corev1.ClusterIPNone
	if !IsHeadless(svc) || len(ClusterIPs(svc)) != 0 {
		t.Error("a headless service has a VIP")
	}
	ext := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ClusterIP: "10.96.0.3"}}
	if len(ClusterIPs(ext)) != 0 {
		t.Error("an ExternalName service has a VIP")
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.200"}}
	if got := LoadBalancerIPs(svc); len(got) != 1 || got[0].String() != "192.0.2.200" {
		t.Errorf("LoadBalancerIPs = %v", got)
	}
}

// TestWatch follows a real (in-memory Badger) store: the first snapshot
// comes after the initial list, changes arrive coalesced, and a deleted
// service leaves the view.
func TestWatch(t *testing.T) {
	st, err := store.Open(store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := st.Create(ctx, service("default", "a")); err != nil {
		t.Fatal(err)
	}
	snaps := make(chan *Snapshot, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch(ctx, WatchConfig{Store: st, Coalesce: 20 * time.Millisecond}, func(s *Snapshot) { snaps <- s })
	}()
	waitFor := func(what string, ok func(*Snapshot) bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case s := <-snaps:
				if ok(s) {
					return
				}
			case <-deadline:
				t.Fatalf("no snapshot with %s", what)
			}
		}
	}
	waitFor("service a", func(s *Snapshot) bool { return s.Service("default", "a") != nil })
	for i := range 20 {
		if _, err := st.Create(ctx, service("default", fmt.Sprintf("b%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Create(ctx, slice("default", "a", "a-1", nil, endpoint("10.244.1.2", nil, ""))); err != nil {
		t.Fatal(err)
	}
	waitFor("21 services and a's slice", func(s *Snapshot) bool { return len(s.Services) == 21 && len(s.SlicesOf("default", "a")) == 1 })
	if _, err := st.Delete(ctx, "services", "default", "a", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("a deleted", func(s *Snapshot) bool { return s.Service("default", "a") == nil && len(s.Services) == 20 })
	cancel()
	<-done
}
