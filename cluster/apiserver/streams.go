package apiserver

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	utilproxy "k8s.io/apimachinery/pkg/util/proxy"
)

// StreamSource opens exec, attach and port-forward streams on the node of
// a pod, as kube-apiserver reaches the kubelet.
type StreamSource interface {
	// ServeStream serves r, already authorized and rewritten to the
	// kubelet's path (/exec/{namespace}/{pod}/{container}?…,
	// /attach/…, /portForward/{namespace}/{pod}), on node: it upgrades
	// the connection and copies both ways until either side ends.
	ServeStream(w http.ResponseWriter, r *http.Request, node string)
}

// streamSubresources are pods' streaming subresources, and the kubelet
// paths they go to.
var streamSubresources = map[string]string{"exec": "exec", "attach": "attach", "portforward": "portForward"}

// isStream reports whether sub of resource is a streaming subresource.
func isStream(resource, sub string) bool {
	_, ok := streamSubresources[sub]
	return ok && resource == "pods"
}

// podStream serves pods/{name}/exec, attach and portforward: the pod must
// be bound and running, the container one of its own; the stream goes to
// the pod's node.
func (s *Server) podStream(w http.ResponseWriter, r *http.Request, req request) {
	if s.cfg.Streams == nil {
		s.writeError(w, r, newError(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			"exec, attach and port-forward are not available on this server"), req.target())
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		s.writeError(w, r, methodNotAllowed(r.Method, r.URL.Path), req.target())
		return
	}
	// exec and attach are served on WebSocket v5 (the protocol with
	// stdin's close), port-forward on WebSocket as a SPDY tunnel
	// (streamtunnel.go); kubectl falls back to SPDY when refused.
	var tunnel []string
	if wsstream.IsWebSocketRequest(r) {
		if req.sub == "portforward" {
			tunnel = tunnelProtocols(r)
		}
		if (req.sub == "portforward" && len(tunnel) == 0) || (req.sub != "portforward" && !wsstream.IsWebSocketRequestWithStreamCloseProtocol(r)) {
			s.writeError(w, r, badRequest("this stream is served over SPDY, or WebSocket with v5.channel.k8s.io (exec, attach) or SPDY/3.1+portforward.k8s.io (port-forward); kubectl falls back to SPDY by itself"), req.target())
			return
		}
	}
	obj, err := s.cfg.Store.Get(r.Context(), "pods", req.namespace, req.name)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		s.writeError(w, r, notFound("pods %q not found", req.name), req.target())
		return
	}
	path, err := kubeletStreamPath(pod, req.sub, r.URL.Query())
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL = &url.URL{Path: path, RawQuery: kubeletQuery(r.URL.Query())}
	r2.RequestURI = r2.URL.RequestURI()
	if tunnel != nil {
		r2, w = spdyUpgradeRequest(r2, tunnel), newTunnelWriter(w, r)
	}
	s.cfg.Streams.ServeStream(w, r2, pod.Spec.NodeName)
}

// kubeletStreamPath is where on the node the stream goes, after the
// checks kube-apiserver makes: a bound pod that has not ended, and for
// exec and attach a container of the pod (the only one when not named).
func kubeletStreamPath(pod *corev1.Pod, sub string, q url.Values) (string, error) {
	if pod.Spec.NodeName == "" {
		return "", badRequest("pod %s does not have a host assigned", pod.Name)
	}
	if p := pod.Status.Phase; p == corev1.PodSucceeded || p == corev1.PodFailed {
		return "", badRequest("cannot %s a container in a completed pod; current phase is %s", streamVerb(sub), p)
	}
	base := streamSubresources[sub]
	if sub == "portforward" {
		return fmt.Sprintf("/%s/%s/%s", base, pod.Namespace, pod.Name), nil
	}
	container := q.Get("container")
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	var inits []string
	for _, c := range pod.Spec.InitContainers {
		inits = append(inits, c.Name)
	}
	switch {
	case container == "" && len(names) == 1:
		container = names[0]
	case container == "":
		return "", badRequest("a container name must be specified for pod %s, choose one of: %v", pod.Name, names)
	case !slices.Contains(names, container) && !slices.Contains(inits, container):
		return "", badRequest("container %s is not valid for pod %s", container, pod.Name)
	}
	if sub == "exec" && len(q["command"]) == 0 {
		return "", badRequest("you must specify at least 1 command")
	}
	for _, st := range slices.Concat(pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses) {
		if st.Name == container && st.State.Running == nil {
			return "", badRequest("unable to upgrade connection: container not found (%q)", container)
		}
	}
	return fmt.Sprintf("/%s/%s/%s/%s", base, pod.Namespace, pod.Name, container), nil
}

func streamVerb(sub string) string {
	if sub == "portforward" {
		return "port-forward to"
	}
	return sub + " into"
}

// kubeletQuery keeps the stream options the kubelet reads.
func kubeletQuery(q url.Values) string {
	out := url.Values{}
	for _, k := range []string{"command", "stdin", "stdout", "stderr", "tty", "input", "output", "error", "ports"} {
		if v, ok := q[k]; ok {
			out[k] = v
		}
	}
	// The kubelet's names for the exec options.
	for from, to := range map[string]string{"stdin": "input", "stdout": "output", "stderr": "error"} {
		if v := q.Get(from); v != "" {
			if isTrue(v) {
				out.Set(to, "1")
			}
			out.Del(from)
		}
	}
	if v := q.Get("tty"); v != "" {
		out.Del("tty")
		if isTrue(v) {
			out.Set("tty", "1")
		}
	}
	return out.Encode()
}

// ServeStream implements StreamSource for a multi-node server: it proxies
// the upgraded connection to the node's agent with apimachinery's
// upgrade-aware proxy (as kube-apiserver does), over the same mutual TLS
// as logs: the agent must show the node's serving certificate.
func (n *NodeLogs) ServeStream(w http.ResponseWriter, r *http.Request, node string) {
	loc := &url.URL{Scheme: "https", Host: fmt.Sprintf("%s:%d", node, n.port), Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	h := utilproxy.NewUpgradeAwareHandler(loc, n.client.Transport, false, true, streamResponder{})
	r2 := r.Clone(r.Context())
	// Only the stream's own headers go on: the caller's credentials stay
	// here (the server speaks to the agent as itself).
	r2.Header = http.Header{}
	for k, v := range r.Header {
		if strings.HasPrefix(k, "X-Stream-Protocol") || k == "Connection" || k == "Upgrade" || strings.HasPrefix(k, "Sec-Websocket") {
			r2.Header[k] = v
		}
	}
	h.ServeHTTP(w, r2)
}

var _ StreamSource = (*NodeLogs)(nil)

// streamResponder answers a failed proxy with a Status.
type streamResponder struct{}

func (streamResponder) Error(w http.ResponseWriter, _ *http.Request, err error) {
	e := newError(http.StatusBadGateway, metav1.StatusReasonServiceUnavailable, "cannot reach the pod's node: %v", err)
	writeJSON(w, http.StatusBadGateway, e.status)
}
