package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"time"

	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/node"
)

// agentHandler is the agent's HTTPS endpoint (node.LogsPort): pod logs for
// the API server, /metrics and /stats/summary for whom authz allows.
func agentHandler(a *node.Agent, authz auth.Authorizer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/containerLogs/", a.LogHandler(auth.APIServerUser))
	m := a.MetricsHandler(authz)
	mux.Handle(node.MetricsPath, m)
	mux.Handle(node.SummaryPath, m)
	mux.Handle("/", a.StreamHandler(auth.APIServerUser))
	return mux
}

// NodeSummary serves the metrics API from the in-process agent of up.
func (a agentLogs) NodeSummary(_ context.Context, name string) (*statsv1alpha1.Summary, error) {
	sum := a.agent.Summary()
	if sum.Node.NodeName != name {
		return nil, fmt.Errorf("node %s is not this process's node", name)
	}
	return sum, nil
}

// upAgentEndpoint serves the in-process agent's endpoint on addr for
// scrapers (Prometheus, curl): it presents the API server's certificate
// and requires a client certificate of the cluster CA, which the
// cluster's RBAC authorizes as the kubelet's (get nodes/metrics, get
// nodes/stats), besides the API server's own. A busy addr is only
// warned about: up runs without the endpoint then.
func upAgentEndpoint(ctx context.Context, addr string, cp *controlPlane, agent *node.Agent, say func(string, ...any)) (func() error, error) {
	if addr == "" {
		return func() error { return nil }, nil
	}
	pair, err := tls.LoadX509KeyPair(cp.certFile, cp.keyFile)
	if err != nil {
		return nil, fmt.Errorf("the agent endpoint's certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.caPEM)
	srv := &http.Server{Handler: agentHandler(agent, node.Either{node.OnlyUser(auth.APIServerUser), cp.rbac}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12,
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool},
		ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		say("warning: no agent endpoint (metrics, stats) on %s: %v", addr, err)
		return func() error { return nil }, nil
	}
	say("agent endpoint (metrics, stats) at https://%s", ln.Addr())
	return func() error {
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
	}, nil
}
