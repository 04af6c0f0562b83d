package apiserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/promtest"
)

// get is a GET of path with hc, the body read.
func get(t *testing.T, hc *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// TestMetricsEndpoint: /metrics answers cluster-admin and system:monitoring
// in Prometheus' text format with the request counter and latency (which
// move with requests) and the watch gauge; a view user gets a 403 Status.
func TestMetricsEndpoint(t *testing.T) {
	e := newAuthEnv(t)
	admin := e.client(t, e.cred(t, "root", auth.GroupMasters))
	prom := e.client(t, e.cred(t, "prometheus", auth.GroupMonitoring))
	e.put(t, clusterRoleBinding("viewers", "view", group("viewers")))
	viewer := e.client(t, e.cred(t, "vera", "viewers"))

	lists := map[string]string{"verb": "LIST", "resource": "pods", "version": "v1", "scope": "namespace", "code": "200"}
	code, body := get(t, admin, e.url+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics as admin: %d\n%s", code, body)
	}
	before, _ := promtest.Value(body, "apiserver_request_total", lists)
	for range 3 {
		if code, body := get(t, viewer, e.url+"/api/v1/namespaces/default/pods"); code != http.StatusOK {
			t.Fatalf("list pods: %d %s", code, body)
		}
	}
	// A watch runs while the scrape happens.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/api/v1/pods?watch=1", nil)
	resp, err := admin.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	code, body = get(t, prom, e.url+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics as system:monitoring: %d\n%s", code, body)
	}
	for _, fam := range []string{"apiserver_request_total", "apiserver_request_duration_seconds", "apiserver_longrunning_requests", "go_goroutines", "process_cpu_seconds_total"} {
		if !promtest.HasFamily(body, fam) {
			t.Errorf("/metrics lacks %s", fam)
		}
	}
	if after, ok := promtest.Value(body, "apiserver_request_total", lists); !ok || after != before+3 {
		t.Errorf("apiserver_request_total %v: %v after 3 lists, %v before", lists, after, before)
	}
	if n, ok := promtest.Value(body, "apiserver_request_duration_seconds_count", map[string]string{"verb": "LIST", "resource": "pods"}); !ok || n < 3 {
		t.Errorf("apiserver_request_duration_seconds_count of pod lists: %v", n)
	}
	if n, ok := promtest.Value(body, "apiserver_longrunning_requests", map[string]string{"verb": "WATCH", "resource": "pods", "scope": "cluster"}); !ok || n != 1 {
		t.Errorf("apiserver_longrunning_requests of the pod watch: %v (found %v)\n%s", n, ok, promtest.Lines(body, "apiserver_longrunning_requests"))
	}

	code, body = get(t, viewer, e.url+"/metrics")
	var st metav1.Status
	if code != http.StatusForbidden || json.Unmarshal([]byte(body), &st) != nil || st.Kind != "Status" || st.Reason != metav1.StatusReasonForbidden {
		t.Fatalf("GET /metrics as a view user: %d %s, want a 403 Status", code, body)
	}
	if !strings.Contains(st.Message, `cannot get path "/metrics"`) {
		t.Errorf("403 message: %s", st.Message)
	}
	// The refusal is counted too.
	_, body = get(t, admin, e.url+"/metrics")
	if n, ok := promtest.Value(body, "apiserver_request_total", map[string]string{"verb": "GET", "code": "403"}); !ok || n < 1 {
		t.Errorf("the 403 is not counted:\n%s", promtest.Lines(body, "apiserver_request_total"))
	}

	// What a client makes up — paths, versions, subresources, methods,
	// bytes that are not UTF-8 — is counted as "other": no new series per
	// request, and no 500.
	_, body = get(t, admin, e.url+"/metrics")
	series := strings.Count(promtest.Lines(body, "apiserver_request_total"), "\n")
	for i := range 50 {
		for _, c := range []struct{ method, path string }{
			{"GET", fmt.Sprintf("/api/v1/made-up-%d", i)},
			{"GET", fmt.Sprintf("/apis/apps/v%d/deployments", i+2)},
			{"GET", fmt.Sprintf("/api/v1/namespaces/default/pods/web/sub%d", i)},
			{fmt.Sprintf("VERB%d", i), "/api/v1/pods"},
			{"GET", "/api//\x8f" + strconv.Itoa(i)},
		} {
			req, _ := http.NewRequest(c.method, e.url+c.path, nil)
			resp, err := admin.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				t.Fatalf("%s %q: %d", c.method, c.path, resp.StatusCode)
			}
		}
	}
	_, body = get(t, admin, e.url+"/metrics")
	if after := strings.Count(promtest.Lines(body, "apiserver_request_total"), "\n"); after > series+10 {
		t.Errorf("250 made-up requests added %d series:\n%s", after-series, promtest.Lines(body, "apiserver_request_total"))
	}
	if n, ok := promtest.Value(body, "apiserver_request_total", map[string]string{"resource": "other"}); !ok || n < 150 {
		t.Errorf("made-up resources counted as other: %v", n)
	}
}

// fakeSummaries is a ResourceMetrics with fixed numbers per node.
type fakeSummaries map[string]*statsv1alpha1.Summary

func (f fakeSummaries) NodeSummary(_ context.Context, node string) (*statsv1alpha1.Summary, error) {
	if s, ok := f[node]; ok {
		return s, nil
	}
	return nil, io.ErrUnexpectedEOF
}

func u64(v uint64) *uint64 { return &v }

func summary(node string, cpuNano, mem uint64, pods ...statsv1alpha1.PodStats) *statsv1alpha1.Summary {
	now := metav1.Now()
	return &statsv1alpha1.Summary{
		Node: statsv1alpha1.NodeStats{NodeName: node,
			CPU:    &statsv1alpha1.CPUStats{Time: now, UsageNanoCores: u64(cpuNano)},
			Memory: &statsv1alpha1.MemoryStats{Time: now, WorkingSetBytes: u64(mem)}},
		Pods: pods,
	}
}

func podStats(ns, name, uid string, containers map[string][2]uint64) statsv1alpha1.PodStats {
	now := metav1.Now()
	ps := statsv1alpha1.PodStats{PodRef: statsv1alpha1.PodReference{Namespace: ns, Name: name, UID: uid}}
	for c, v := range containers {
		ps.Containers = append(ps.Containers, statsv1alpha1.ContainerStats{Name: c,
			CPU:    &statsv1alpha1.CPUStats{Time: now, UsageNanoCores: u64(v[0])},
			Memory: &statsv1alpha1.MemoryStats{Time: now, WorkingSetBytes: u64(v[1])}})
	}
	return ps
}

// TestKubectlTop: the metrics API is discovered, and kubectl top pods and
// top nodes show the agents' numbers to a view user; an unreachable node
// is left out.
func TestKubectlTop(t *testing.T) {
	sums := fakeSummaries{}
	e := newAuthEnvOn(t, store.MemoryFor(t), true, func(cfg *apiserver.Config) { cfg.ResourceMetrics = sums })
	for _, n := range []string{"node-a", "node-b"} {
		node := &corev1.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: n},
			Status: corev1.NodeStatus{
				Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi")},
				Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi")}}}
		mustCreate(t, e.store, node)
	}
	web := mustCreate(t, e.store, pod("default", "web-1", "node-a", map[string]string{"app": "web"}))
	mustCreate(t, e.store, pod("default", "db-1", "node-b", map[string]string{"app": "db"}))
	sums["node-a"] = summary("node-a", 1_500_000_000, 2<<30,
		podStats("default", "web-1", string(web.GetUID()), map[string][2]uint64{"app": {250_000_000, 64 << 20}, "side": {1_000_000, 8 << 20}}))
	e.put(t, clusterRoleBinding("viewers", "view", group("viewers")))

	k := newKubectlAs(t, e.env, e.cred(t, "vera", "viewers"))
	out := k.run(false, "top", "pods")
	expect(t, out, "web-1", "251m", "72Mi")
	if strings.Contains(out, "db-1") {
		t.Errorf("db-1 (on a node without stats) is listed:\n%s", out)
	}
	expect(t, k.run(false, "top", "pods", "--containers", "-l", "app=web"), "app", "250m", "64Mi", "side", "1m", "8Mi")
	// top nodes lists Nodes too, which view may not (in Kubernetes neither).
	expect(t, k.run(true, "top", "nodes"), `cannot list resource "nodes"`)
	out = newKubectlAs(t, e.env, e.cred(t, "root", auth.GroupMasters)).run(false, "top", "nodes")
	expect(t, out, "node-a", "1500m", "75%", "2048Mi", "50%")
	expect(t, out, "node-b", "<unknown>")

	// A get of one object, and its 404 when the node has no numbers.
	admin := e.client(t, e.cred(t, "root", auth.GroupMasters))
	code, body := get(t, admin, e.url+"/apis/metrics.k8s.io/v1beta1/nodes/node-b")
	if code != http.StatusNotFound {
		t.Errorf("node-b's metrics: %d %s, want 404", code, body)
	}
	code, body = get(t, admin, e.url+"/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web-1")
	if code != http.StatusOK || !strings.Contains(body, `"kind":"PodMetrics"`) || !strings.Contains(body, `"cpu":"250m"`) {
		t.Errorf("web-1's metrics: %d %s", code, body)
	}
	// Without the view role: 403.
	nobody := e.client(t, e.cred(t, "nobody"))
	if code, body := get(t, nobody, e.url+"/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"); code != http.StatusForbidden {
		t.Errorf("an unbound user's list of pod metrics: %d %s", code, body)
	}
}
