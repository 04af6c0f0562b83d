package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// nodeSummaryPath is the kubelet's stats summary, which agents serve on
// their port (node.SummaryPath).
const nodeSummaryPath = "/stats/summary"

// maxSummaryBytes bounds an agent's summary (a few hundred bytes a pod).
const maxSummaryBytes = 16 << 20

var _ ResourceMetrics = (*NodeLogs)(nil)

// NodeSummary fetches the stats summary of node's agent over the same
// mutual TLS as logs (the agent authorizes the server's client
// certificate for get nodes/stats).
func (n *NodeLogs) NodeSummary(ctx context.Context, node string) (*statsv1alpha1.Summary, error) {
	u := "https://" + net.JoinHostPort(node, strconv.Itoa(n.port)) + nodeSummaryPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach the agent of node %s: %w", node, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("node %s answered %s: %s", node, resp.Status, msg)
	}
	var sum statsv1alpha1.Summary
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxSummaryBytes)).Decode(&sum); err != nil {
		return nil, fmt.Errorf("node %s's stats summary: %w", node, err)
	}
	return &sum, nil
}
