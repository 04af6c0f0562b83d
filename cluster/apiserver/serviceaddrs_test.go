package apiserver_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// TestServicesCannotTakeTraffic: through the API, a Service's externalIPs
// are refused unless the operator allowed their range, a clusterIP outside
// the service CIDR is refused, and a status naming a load balancer address
// outside the pool is refused (what agents announce comes from there).
func TestServicesCannotTakeTraffic(t *testing.T) {
	v, err := schema.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := ipalloc.ParsePool("192.0.2.240/29")
	if err != nil {
		t.Fatal(err)
	}
	allowed, err := admission.ParseExternalIPCIDRs("203.0.113.0/24")
	if err != nil {
		t.Fatal(err)
	}
	p, err := admission.New(admission.Config{Validator: v, LBPool: pool, ExternalIPs: allowed})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, store.MemoryFor(t), func(c *apiserver.Config) { c.Admission = p })
	const svcs = "/api/v1/namespaces/default/services"
	check := func(what, method, path, body string, want int, msg string) string {
		t.Helper()
		ct := "application/json"
		if method == http.MethodPatch {
			ct = "application/merge-patch+json"
		}
		resp, out := e.do(t, method, path, body, "Content-Type", ct)
		if resp.StatusCode != want || !strings.Contains(out, msg) {
			t.Errorf("%s: %d %s, want %d with %q", what, resp.StatusCode, out, want, msg)
		}
		return out
	}
	svc := func(name, extra string) string {
		return `{"apiVersion":"v1","kind":"Service","metadata":{"name":"` + name + `"},"spec":{"selector":{"app":"x"},"ports":[{"port":53,"protocol":"UDP"}]` + extra + `}}`
	}
	check("externalIPs", http.MethodPost, svcs, svc("dns-thief", `,"externalIPs":["10.0.0.2"]`), http.StatusUnprocessableEntity,
		"spec.externalIPs[0]: Forbidden: externalIPs are not allowed")
	check("an allowed externalIP", http.MethodPost, svcs, svc("ext", `,"externalIPs":["203.0.113.5"]`), http.StatusCreated, `"203.0.113.5"`)
	check("a clusterIP outside the service CIDR", http.MethodPost, svcs, svc("outside", `,"clusterIP":"10.0.0.2"`), http.StatusUnprocessableEntity,
		"is not in the service CIDR")
	check("a LoadBalancer", http.MethodPost, svcs, svc("lb", `,"type":"LoadBalancer"`), http.StatusCreated, `"LoadBalancer"`)
	status := func(ip string) string {
		return `{"apiVersion":"v1","kind":"Service","metadata":{"name":"lb"},"status":{"loadBalancer":{"ingress":[{"ip":"` + ip + `"}]}}}`
	}
	check("a status outside the pool", http.MethodPatch, svcs+"/lb/status", status("10.0.0.2"), http.StatusUnprocessableEntity,
		"written by the cluster's load-balancer controller only")
	check("a status in the pool, by a user", http.MethodPatch, svcs+"/lb/status", status("192.0.2.241"), http.StatusUnprocessableEntity,
		"written by the cluster's load-balancer controller only")

	// The controller's own writes (the cluster's) must stay in the pool.
	cluster := p.Store(e.store, admission.Cluster)
	obj, err := cluster.Get(context.Background(), "services", "default", "lb")
	if err != nil {
		t.Fatal(err)
	}
	lb := obj.(*corev1.Service).DeepCopy()
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.0.0.2"}}
	if _, err := cluster.UpdateStatus(context.Background(), lb); err == nil || !strings.Contains(err.Error(), "is not in the load balancer pool") {
		t.Errorf("the controller writing an address outside the pool: %v", err)
	}
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.241"}}
	if _, err := cluster.UpdateStatus(context.Background(), lb); err != nil {
		t.Errorf("the controller writing an address of the pool: %v", err)
	}
}
