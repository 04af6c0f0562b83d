package loadbalancer

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// lb is a LoadBalancer Service "name" created age minutes after epoch,
// publishing ip ("" for none) and asking for want ("" for any).
func lb(name string, age int, ip, want string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Minute))},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerIP: want},
	}
	if ip != "" {
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
	}
	return s
}

func withType(s *corev1.Service, t corev1.ServiceType) *corev1.Service {
	s.Spec.Type = t
	return s
}

func TestAssign(t *testing.T) {
	pool, err := ipalloc.ParsePool("10.0.0.200-10.0.0.202")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		pool    *ipalloc.Pool // default pool
		svc     *corev1.Service
		others  []*corev1.Service
		want    string // the address, or "" for none
		pending string // a substring of Pending
	}{
		{name: "first address", svc: lb("a", 0, "", ""), want: "10.0.0.200"},
		{name: "skips held and asked-for addresses", svc: lb("a", 0, "", ""),
			others: []*corev1.Service{lb("b", 0, "10.0.0.200", ""), lb("c", 0, "", "10.0.0.201")}, want: "10.0.0.202"},
		{name: "ignores addresses of services that are no longer LoadBalancers", svc: lb("a", 0, "", ""),
			others: []*corev1.Service{withType(lb("b", 0, "10.0.0.200", ""), corev1.ServiceTypeClusterIP)}, want: "10.0.0.200"},
		{name: "keeps its address", svc: lb("a", 0, "10.0.0.202", ""), others: []*corev1.Service{lb("a", 0, "10.0.0.202", "")}, want: "10.0.0.202"},
		{name: "keeps its address even when another now asks for it", svc: lb("a", 0, "10.0.0.201", ""),
			others: []*corev1.Service{lb("b", 0, "", "10.0.0.201")}, want: "10.0.0.201"},
		{name: "an address out of the pool is replaced", svc: lb("a", 0, "10.0.0.9", ""), want: "10.0.0.200"},
		{name: "two claim one address: the older keeps it", svc: lb("old", 0, "10.0.0.200", ""),
			others: []*corev1.Service{lb("new", 5, "10.0.0.200", "")}, want: "10.0.0.200"},
		{name: "two claim one address: the younger moves", svc: lb("new", 5, "10.0.0.200", ""),
			others: []*corev1.Service{lb("old", 0, "10.0.0.200", "")}, want: "10.0.0.201"},
		{name: "a requested free address", svc: lb("a", 0, "10.0.0.200", "10.0.0.202"), want: "10.0.0.202"},
		{name: "a requested address another has", svc: lb("a", 0, "10.0.0.202", "10.0.0.200"),
			others: []*corev1.Service{lb("b", 9, "10.0.0.200", "")}, pending: "spec.loadBalancerIP 10.0.0.200 is already the address of service default/b"},
		{name: "a requested address outside the pool", svc: lb("a", 0, "", "192.168.1.1"),
			pending: "spec.loadBalancerIP 192.168.1.1 is not in the load balancer pool 10.0.0.200-10.0.0.202 (--lb-pool)"},
		{name: "a requested non-address", svc: lb("a", 0, "", "lb.example.com"), pending: `spec.loadBalancerIP "lb.example.com" is not an IP address`},
		{name: "pool exhausted", svc: lb("d", 0, "", ""),
			others:  []*corev1.Service{lb("a", 0, "10.0.0.200", ""), lb("b", 0, "10.0.0.201", ""), lb("c", 0, "10.0.0.202", "")},
			pending: "no free address left in the load balancer pool 10.0.0.200-10.0.0.202 (--lb-pool)"},
		{name: "no pool", pool: &ipalloc.Pool{}, svc: lb("a", 0, "10.0.0.200", ""), pending: "no load balancer address pool is configured (server flag --lb-pool)"},
		{name: "not a LoadBalancer: released", svc: withType(lb("a", 0, "10.0.0.200", ""), corev1.ServiceTypeNodePort)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pool
			if tc.pool != nil {
				p = *tc.pool
			}
			d := Assign(p, tc.svc, tc.others)
			got := ""
			if d.IP.IsValid() {
				got = d.IP.String()
			}
			if got != tc.want || (tc.pending == "") != (d.Pending == "") || !strings.Contains(d.Pending, tc.pending) {
				t.Errorf("Assign = %q, pending %q; want %q, pending %q", got, d.Pending, tc.want, tc.pending)
			}
			if in := d.Ingress(); (got == "") != (len(in) == 0) || (got != "" && in[0].IP != got) {
				t.Errorf("Ingress() = %v", in)
			}
		})
	}
}
