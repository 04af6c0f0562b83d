package apiserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// NodeLogs is the LogSource of a multi-node server: it finds the pod's
// node and proxies to the log endpoint its agent serves there
// (/containerLogs/… on the agents' port), over mutual TLS: the agent must
// present a serving certificate of the cluster CA for the node's name, and
// the server presents its own client certificate. Nothing is sent before
// the agent is verified. Make it with NewNodeLogs.
type NodeLogs struct {
	store  store.Interface
	port   int
	client *http.Client
}

// NewNodeLogs proxies to the agents' port; tlsCfg holds the cluster CA
// (RootCAs) and the server's client certificate (Certificates or
// GetClientCertificate). One transport serves every call, so a connection
// to an agent is reused by the next call and closed when idle.
func NewNodeLogs(st store.Interface, port int, tlsCfg *tls.Config) *NodeLogs {
	n := &NodeLogs{store: st, port: port}
	tlsCfg = tlsCfg.Clone()
	tlsCfg.MinVersion = tls.VersionTLS12
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	n.client = &http.Client{Transport: &http.Transport{
		// The URL's host is the node's name, so that TLS verifies the
		// agent's certificate against it; the dial goes to the Node's
		// address.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			name, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ip, err := n.nodeIP(ctx, name)
			if err != nil {
				return nil, err
			}
			return dialer.DialContext(ctx, network, net.JoinHostPort(ip, port))
		},
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}}
	return n
}

// nodeIP is the InternalIP of Node name.
func (n *NodeLogs) nodeIP(ctx context.Context, name string) (string, error) {
	obj, err := n.store.Get(ctx, "nodes", "", name)
	if err != nil {
		return "", fmt.Errorf("node %s: %w", name, err)
	}
	for _, a := range obj.(*corev1.Node).Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address, nil
		}
	}
	return "", fmt.Errorf("node %s has no address to fetch logs from", name)
}

var _ LogSource = (*NodeLogs)(nil)

// PodLogs streams the logs of a container of a pod from its node.
func (n *NodeLogs) PodLogs(ctx context.Context, namespace, pod string, opts corev1.PodLogOptions, w io.Writer) error {
	obj, err := n.store.Get(ctx, "pods", namespace, pod)
	if err != nil {
		return err
	}
	p := obj.(*corev1.Pod)
	if p.Spec.NodeName == "" {
		return fmt.Errorf("pod %s/%s is not scheduled yet, so it has no logs: %w", namespace, pod, store.ErrNotFound)
	}
	container := opts.Container
	if container == "" && len(p.Spec.Containers) > 0 {
		container = p.Spec.Containers[0].Name
	}
	opts.Container = ""   // in the path
	opts.LimitBytes = nil // the server cuts
	q := LogQuery(opts)
	u := url.URL{Scheme: "https", Host: net.JoinHostPort(p.Spec.NodeName, strconv.Itoa(n.port)),
		Path: "/containerLogs/" + namespace + "/" + pod + "/" + container, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return fmt.Errorf("reach the agent of node %s: %w", p.Spec.NodeName, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("node %s: %s: %w", p.Spec.NodeName, msg, store.ErrNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("node %s answered %s: %s", p.Spec.NodeName, resp.Status, msg)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}
