package host

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/node"
)

// Endpoint is the agent's HTTPS endpoint (the kubelet's port): pod logs,
// exec, attach and port-forward for the API server, /metrics and
// /stats/summary for the API server and whom Authorizer allows.
type Endpoint struct {
	// Listener is where to serve, plain TCP: Run serves TLS on it and
	// closes it when it returns. The caller listens, so that it decides
	// what a busy address means.
	Listener net.Listener
	// TLS presents the endpoint's certificate and verifies the clients'
	// certificates (tls.RequireAndVerifyClientCert with the cluster CA).
	TLS *tls.Config
	// Authorizer allows /metrics and /stats/summary besides the API
	// server; nil: the API server alone.
	Authorizer auth.Authorizer
}

// handler is the endpoint's routes: pod logs and streams for the API
// server, /metrics and /stats/summary for whom authz allows.
func handler(a *node.Agent, authz auth.Authorizer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/containerLogs/", a.LogHandler(auth.APIServerUser))
	m := a.MetricsHandler(authz)
	mux.Handle(node.MetricsPath, m)
	mux.Handle(node.SummaryPath, m)
	mux.Handle("/", a.StreamHandler(auth.APIServerUser))
	return mux
}

// metricsAuthorizer lets the API server read metrics and stats, and
// whom e allows.
func (e *Endpoint) metricsAuthorizer() auth.Authorizer {
	if e.Authorizer == nil {
		return node.OnlyUser(auth.APIServerUser)
	}
	return node.Either{node.OnlyUser(auth.APIServerUser), e.Authorizer}
}

// serve serves srv with TLS on ln until ctx ends, then shuts it down.
func serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(ln, srv.TLSConfig)) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}

// The in-process API server's view of this node (up): its pods' logs and
// streams, and its stats for the metrics API.

// PodLogs writes a pod's logs (apiserver.LogSource).
func (n *Node) PodLogs(ctx context.Context, namespace, pod string, opts corev1.PodLogOptions, w io.Writer) error {
	return n.agent.PodLogs(ctx, namespace, pod, opts, w)
}

// ServeStream serves exec, attach and port-forward to this node's pods.
func (n *Node) ServeStream(w http.ResponseWriter, r *http.Request, _ string) {
	n.streams.ServeHTTP(w, r)
}

// NodeSummary is the node's stats summary, when name is this node.
func (n *Node) NodeSummary(_ context.Context, name string) (*statsv1alpha1.Summary, error) {
	sum := n.agent.Summary()
	if sum.Node.NodeName != name {
		return nil, fmt.Errorf("node %s is not this process's node", name)
	}
	return sum, nil
}
