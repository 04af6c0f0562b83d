package apiserver

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// TestNodeSummary: the server reads an agent's stats summary over mutual
// TLS as its own user, and reports an agent's refusal.
func TestNodeSummary(t *testing.T) {
	ca := newAgentTLS(t)
	nano := uint64(123_000_000)
	var refuse atomic.Bool
	port := ca.startAgent(t, ca.serving(t, "n1"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stats/summary" || r.TLS.PeerCertificates[0].Subject.CommonName != "system:flotilla:apiserver" || refuse.Load() {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		_ = json.NewEncoder(w).Encode(statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: "n1",
			CPU: &statsv1alpha1.CPUStats{UsageNanoCores: &nano}}})
	}))
	src := NewNodeLogs(logsFixture(t), port, ca.client(t))
	sum, err := src.NodeSummary(context.Background(), "n1")
	if err != nil || sum.Node.NodeName != "n1" || *sum.Node.CPU.UsageNanoCores != nano {
		t.Fatalf("summary %+v, %v", sum, err)
	}
	refuse.Store(true)
	if _, err := src.NodeSummary(context.Background(), "n1"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("a refusing agent: %v", err)
	}
	if _, err := src.NodeSummary(context.Background(), "n9"); err == nil {
		t.Error("an unknown node answered")
	}
}
