package node

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flotilla-dev/flotilla/cluster/auth"
)

// Paths the agent serves beside /containerLogs/ on LogsPort.
const (
	// MetricsPath is the agent's Prometheus scrape: its own families, the
	// runtime's latency and the node's and pods' resource usage.
	MetricsPath = "/metrics"
	// SummaryPath is the kubelet's stats summary (JSON), which the API
	// server's metrics API reads.
	SummaryPath = "/stats/summary"
)

// MetricsHandler serves GET MetricsPath and SummaryPath to callers with a
// client certificate of the cluster CA (verified by the listener) whom
// authz allows, asked as the kubelet asks: get nodes/metrics or get
// nodes/stats on this node. Anyone else gets 403. Both answers come from
// the stats cache: a request never calls the runtime.
func (a *Agent) MetricsHandler(authz auth.Authorizer) http.Handler {
	prom := promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var sub string
		switch r.URL.Path {
		case MetricsPath:
			sub = "metrics"
		case SummaryPath:
			sub = "stats"
		default:
			http.NotFound(w, r)
			return
		}
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 || authz == nil {
			http.Error(w, "forbidden: a client certificate of the cluster CA is required", http.StatusForbidden)
			return
		}
		u := auth.UserFromCert(r.TLS.VerifiedChains[0][0])
		at := auth.Attributes{Verb: "get", ResourceRequest: true, Resource: "nodes", Subresource: sub, Name: a.cfg.NodeName}
		if ok, reason := authz.Authorize(u, at); !ok {
			msg := fmt.Sprintf("forbidden: User %q cannot get resource \"nodes/%s\" of node %q", u.Username, sub, a.cfg.NodeName)
			if reason != "" {
				msg += ": " + reason
			}
			http.Error(w, msg, http.StatusForbidden)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if sub == "metrics" {
			prom.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.Summary())
	})
}

// Metrics is the agent's Prometheus registry (Config.Metrics, or its own).
func (a *Agent) Metrics() *prometheus.Registry { return a.metrics }

// OnlyUser authorizes one user, for everything: an agent that cannot ask
// the cluster's RBAC lets only the API server (auth.APIServerUser) read
// its metrics and stats.
type OnlyUser string

// Authorize implements auth.Authorizer.
func (o OnlyUser) Authorize(u *auth.User, _ auth.Attributes) (bool, string) {
	if u != nil && o != "" && u.Username == string(o) {
		return true, ""
	}
	return false, "only " + string(o) + " may read this agent's metrics"
}

// OnlyGroup authorizes the members of one group, for everything: a
// joined agent lets system:masters (cluster-admin, which RBAC allows
// everything whatever the bindings) read its metrics and stats. The group
// is in a certificate the cluster CA signed.
type OnlyGroup string

// Authorize implements auth.Authorizer.
func (o OnlyGroup) Authorize(u *auth.User, _ auth.Attributes) (bool, string) {
	if u != nil && o != "" && slices.Contains(u.Groups, string(o)) {
		return true, ""
	}
	return false, "only members of " + string(o) + " may read this agent's metrics"
}

// Either allows what the first or the second authorizer allows.
type Either [2]auth.Authorizer

// Authorize implements auth.Authorizer.
func (e Either) Authorize(u *auth.User, at auth.Attributes) (bool, string) {
	ok, _ := e[0].Authorize(u, at)
	if ok {
		return true, ""
	}
	return e[1].Authorize(u, at)
}
