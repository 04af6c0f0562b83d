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
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// NodeLogs is the LogSource of a multi-node server: it finds the pod's
// node and proxies to the log endpoint its agent serves there
// (/containerLogs/… on Port, with Token).
type NodeLogs struct {
	Store store.Interface
	// Token is the bearer token the agents accept (the cluster's API token).
	Token string
	// Port is the agents' log port.
	Port int
	// Client makes the requests; nil means agentClient, shared by every
	// call so that connections are reused and closed when idle.
	Client *http.Client
}

// agentClient is the default client of NodeLogs: one transport for every
// call, so that a connection to an agent is reused by the next call and
// closed after IdleConnTimeout (a transport per call left each call's
// connection and its two goroutines behind). It accepts the agents'
// self-signed certificates: the traffic is encrypted, the agent is not
// authenticated (the node's address comes from the store).
var agentClient = sync.OnceValue(func() *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true},
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}}
})

var _ LogSource = NodeLogs{}

// PodLogs streams the logs of a container of a pod from its node.
func (n NodeLogs) PodLogs(ctx context.Context, namespace, pod string, opts LogOptions, w io.Writer) error {
	obj, err := n.Store.Get(ctx, "pods", namespace, pod)
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
	nobj, err := n.Store.Get(ctx, "nodes", "", p.Spec.NodeName)
	if err != nil {
		return fmt.Errorf("node %s of pod %s/%s: %w", p.Spec.NodeName, namespace, pod, err)
	}
	var ip string
	for _, a := range nobj.(*corev1.Node).Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ip = a.Address
		}
	}
	if ip == "" {
		return fmt.Errorf("node %s has no address to fetch logs from", p.Spec.NodeName)
	}
	q := url.Values{}
	if opts.Follow {
		q.Set("follow", "true")
	}
	if opts.TailLines != nil {
		q.Set("tailLines", strconv.FormatInt(*opts.TailLines, 10))
	}
	u := url.URL{Scheme: "https", Host: net.JoinHostPort(ip, strconv.Itoa(n.Port)),
		Path: "/containerLogs/" + namespace + "/" + pod + "/" + container, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+n.Token)
	cl := n.Client
	if cl == nil {
		cl = agentClient()
	}
	resp, err := cl.Do(req)
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
