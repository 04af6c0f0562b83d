package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/internal/promtest"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// allowNodeMetrics is an RBAC stand-in: user may get nodes/metrics.
type allowNodeMetrics string

func (u allowNodeMetrics) Authorize(usr *auth.User, at auth.Attributes) (bool, string) {
	return usr.Username == string(u) && at.Verb == "get" && at.Resource == "nodes" && at.Subresource == "metrics", ""
}

// TestStatsAndMetricsHandler: the agent measures its pods from the
// runtime's stats, serves them as the kubelet's summary (CPU as a rate
// between two samples) and as Prometheus families, to the API server and
// to a user allowed get nodes/metrics; anyone else gets 403.
func TestStatsAndMetricsHandler(t *testing.T) {
	h := newHarness(t)
	p := createPod(t, h.st, newPod("burn"))
	a, _ := h.run(t)
	testkit.EventuallyTrue(t, "running", 0, func() bool { return phase(t, h.st, "burn") == corev1.PodRunning })
	h.rt.SetUsage("default", "burn", 500, 64<<20)
	ctx := context.Background()
	if err := a.stats.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // CPU time is a rate over real time here
	if err := a.stats.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	sum := a.Summary()
	if len(sum.Pods) != 1 || sum.Pods[0].PodRef.UID != string(p.UID) || len(sum.Pods[0].Containers) != 1 {
		t.Fatalf("summary pods: %+v", sum.Pods)
	}
	c := sum.Pods[0].Containers[0]
	if c.Name != "main" || c.CPU.UsageNanoCores == nil || *c.CPU.UsageNanoCores < 450e6 || *c.CPU.UsageNanoCores > 550e6 {
		t.Errorf("container %s CPU %v nanocores, want about 500m", c.Name, c.CPU.UsageNanoCores)
	}
	if *c.Memory.WorkingSetBytes != 64<<20 {
		t.Errorf("container memory %d", *c.Memory.WorkingSetBytes)
	}
	if sum.Node.NodeName != "n1" || sum.Node.CPU == nil || sum.Node.CPU.UsageNanoCores == nil || sum.Node.Memory.WorkingSetBytes == nil {
		t.Errorf("node stats: %+v", sum.Node)
	}

	hdl := a.MetricsHandler(Either{OnlyUser(auth.APIServerUser), allowNodeMetrics("prometheus")})
	masters := a.MetricsHandler(Either{OnlyUser(auth.APIServerUser), OnlyGroup(auth.GroupMasters)})
	for _, tc := range []struct {
		groups []string
		code   int
	}{{[]string{auth.GroupMasters}, 200}, {[]string{"viewers"}, 403}, {nil, 403}} {
		req := httptest.NewRequest(http.MethodGet, SummaryPath, nil)
		req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{Subject: pkix.Name{CommonName: "ann", Organization: tc.groups}}}}}
		rec := httptest.NewRecorder()
		masters.ServeHTTP(rec, req)
		if rec.Code != tc.code {
			t.Errorf("a joined agent's summary for groups %v: %d, want %d", tc.groups, rec.Code, tc.code)
		}
	}
	get := certServer(t, hdl)
	for _, user := range []string{auth.APIServerUser, "prometheus"} {
		code, body := get(MetricsPath, user)
		if code != http.StatusOK {
			t.Fatalf("%s: /metrics %d %s", user, code, body)
		}
		for _, fam := range []string{"container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "pod_cpu_usage_seconds_total",
			"pod_memory_working_set_bytes", "pod_network_receive_bytes_total", "pod_network_transmit_bytes_total", "node_cpu_usage_seconds_total",
			"node_memory_working_set_bytes", "kubelet_runtime_operations_duration_seconds", "go_goroutines"} {
			if !promtest.HasFamily(body, fam) {
				t.Errorf("/metrics lacks %s", fam)
			}
		}
		pod := map[string]string{"namespace": "default", "pod": "burn"}
		if v, ok := promtest.Value(body, "container_memory_working_set_bytes", map[string]string{"namespace": "default", "pod": "burn", "container": "main"}); !ok || v != 64<<20 {
			t.Errorf("container_memory_working_set_bytes %v", v)
		}
		if v, ok := promtest.Value(body, "pod_cpu_usage_seconds_total", pod); !ok || v <= 0 {
			t.Errorf("pod_cpu_usage_seconds_total %v", v)
		}
		if v, ok := promtest.Value(body, "kubelet_runtime_operations_duration_seconds_count", map[string]string{"operation_type": "run_pod"}); !ok || v < 1 {
			t.Errorf("run_pod not timed: %v\n%s", v, promtest.Lines(body, "kubelet_runtime_operations_duration_seconds_count"))
		}
	}
	code, body := get(SummaryPath, auth.APIServerUser)
	var got statsv1alpha1.Summary
	if code != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil || len(got.Pods) != 1 {
		t.Errorf("/stats/summary: %d %s", code, body)
	}
	for _, tc := range []struct{ path, user string }{
		{MetricsPath, ""}, {MetricsPath, "system:node:n2"}, {SummaryPath, "prometheus"}, {SummaryPath, ""},
	} {
		if code, body := get(tc.path, tc.user); code != http.StatusForbidden {
			t.Errorf("%s as %q: %d %s, want 403", tc.path, tc.user, code, body)
		}
	}
}
