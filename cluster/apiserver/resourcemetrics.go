package apiserver

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// The metrics API (metrics.k8s.io/v1beta1, what metrics-server serves and
// kubectl top reads): NodeMetrics and PodMetrics, gathered per request from
// the agents' stats summaries. An agent's summary is read from its cache
// (refreshed in the background), so a request costs one HTTPS call per
// node, made concurrently; a node that does not answer is left out, as
// metrics-server leaves it out.

// MetricsGroup and MetricsVersion name the metrics API.
const (
	MetricsGroup   = "metrics.k8s.io"
	MetricsVersion = "v1beta1"
)

// ResourceMetrics is where the metrics API's numbers come from.
type ResourceMetrics interface {
	// NodeSummary is the stats summary of the agent of node (the kubelet's
	// /stats/summary): CPU as usageNanoCores over the agent's last
	// window, memory as workingSetBytes. It may be called concurrently for
	// different nodes, and should return within ctx's deadline.
	NodeSummary(ctx context.Context, node string) (*statsv1alpha1.Summary, error)
}

// summaryTimeout bounds one node's answer.
const summaryTimeout = 5 * time.Second

// metricsResources is the metrics API's discovery document.
func metricsResources() metav1.APIResourceList {
	verbs := metav1.Verbs{"get", "list"}
	return metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: MetricsGroup + "/" + MetricsVersion,
		APIResources: []metav1.APIResource{
			{Name: "nodes", SingularName: "", Namespaced: false, Kind: "NodeMetrics", Verbs: verbs},
			{Name: "pods", SingularName: "", Namespaced: true, Kind: "PodMetrics", Verbs: verbs},
		},
	}
}

var metricsGV = metav1.GroupVersionForDiscovery{GroupVersion: MetricsGroup + "/" + MetricsVersion, Version: MetricsVersion}

// serveMetricsAPI answers everything under /apis/metrics.k8s.io/v1beta1.
func (s *Server) serveMetricsAPI(w http.ResponseWriter, r *http.Request, ver string, rest []string) {
	if ver != MetricsVersion {
		s.writeError(w, r, errNoRoute, target{})
		return
	}
	if len(rest) == 0 {
		writeJSON(w, http.StatusOK, metricsResources())
		return
	}
	var ns, res, name string
	switch {
	case rest[0] == "namespaces" && len(rest) >= 3 && len(rest) <= 4 && rest[2] == "pods":
		ns, res = rest[1], "pods"
		if len(rest) == 4 {
			name = rest[3]
		}
	case (rest[0] == "pods" || rest[0] == "nodes") && len(rest) <= 2:
		res = rest[0]
		if len(rest) == 2 {
			name = rest[1]
		}
		if res == "pods" && name != "" {
			s.writeError(w, r, errNoRoute, target{})
			return
		}
	default:
		s.writeError(w, r, errNoRoute, target{})
		return
	}
	t := target{group: MetricsGroup, resource: res, name: name}
	if r.Method != http.MethodGet {
		s.writeError(w, r, methodNotAllowed(r.Method, r.URL.Path), t)
		return
	}
	if isTrue(r.URL.Query().Get("watch")) {
		s.writeError(w, r, methodNotAllowed("WATCH", r.URL.Path), t)
		return
	}
	if s.cfg.ResourceMetrics == nil {
		s.writeError(w, r, newError(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			"the metrics API has no source of node metrics"), t)
		return
	}
	sel, err := labels.Parse(r.URL.Query().Get("labelSelector"))
	if err != nil {
		s.writeError(w, r, badRequest("labelSelector: %v", err), t)
		return
	}
	if res == "nodes" {
		s.nodeMetrics(w, r, name, sel, t)
	} else {
		s.podMetrics(w, r, ns, name, sel, t)
	}
}

// summaries fetches the summaries of nodes concurrently; nodes that fail
// are logged and left out.
func (s *Server) summaries(ctx context.Context, nodes []string) map[string]*statsv1alpha1.Summary {
	out := make(map[string]*statsv1alpha1.Summary, len(nodes))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, summaryTimeout)
			defer cancel()
			sum, err := s.cfg.ResourceMetrics.NodeSummary(cctx, n)
			if err != nil {
				s.log.Warn("metrics API: no stats from node", "node", n, "err", err)
				return
			}
			mu.Lock()
			out[n] = sum
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func (s *Server) nodeMetrics(w http.ResponseWriter, r *http.Request, name string, sel labels.Selector, t target) {
	var nodes []*corev1.Node
	if name != "" {
		obj, err := s.cfg.Store.Get(r.Context(), "nodes", "", name)
		if err != nil {
			s.writeError(w, r, err, t)
			return
		}
		nodes = append(nodes, obj.(*corev1.Node))
	} else {
		objs, _, err := s.cfg.Store.List(r.Context(), "nodes", store.ListOptions{LabelSelector: sel.String()})
		if err != nil {
			s.writeError(w, r, err, t)
			return
		}
		for _, o := range objs {
			nodes = append(nodes, o.(*corev1.Node))
		}
	}
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	sums := s.summaries(r.Context(), names)
	list := metricsv1beta1.NodeMetricsList{TypeMeta: metav1.TypeMeta{Kind: "NodeMetricsList", APIVersion: MetricsGroup + "/" + MetricsVersion}}
	for _, n := range nodes {
		if m, ok := nodeMetricsOf(n, sums[n.Name]); ok {
			list.Items = append(list.Items, m)
		}
	}
	if list.Items == nil {
		list.Items = []metricsv1beta1.NodeMetrics{}
	}
	s.writeMetrics(w, r, t, "nodemetrics", name, len(list.Items), func() any {
		item := list.Items[0]
		item.TypeMeta = metav1.TypeMeta{Kind: "NodeMetrics", APIVersion: MetricsGroup + "/" + MetricsVersion}
		return item
	}, list)
}

// writeMetrics answers a metrics API request: the list, or for a name
// the one item (found: n > 0), or metrics-server's 404.
func (s *Server) writeMetrics(w http.ResponseWriter, r *http.Request, t target, resource, name string, n int, item func() any, list any) {
	switch {
	case name == "":
		writeJSON(w, http.StatusOK, list)
	case n == 0:
		s.writeError(w, r, notFoundMetrics(resource, name), t)
	default:
		writeJSON(w, http.StatusOK, item())
	}
}

func (s *Server) podMetrics(w http.ResponseWriter, r *http.Request, ns, name string, sel labels.Selector, t target) {
	var pods []*corev1.Pod
	if name != "" {
		obj, err := s.cfg.Store.Get(r.Context(), "pods", ns, name)
		if err != nil {
			s.writeError(w, r, err, t)
			return
		}
		pods = append(pods, obj.(*corev1.Pod))
	} else {
		objs, _, err := s.cfg.Store.List(r.Context(), "pods", store.ListOptions{Namespace: ns, LabelSelector: sel.String()})
		if err != nil {
			s.writeError(w, r, err, t)
			return
		}
		for _, o := range objs {
			pods = append(pods, o.(*corev1.Pod))
		}
	}
	seen := map[string]bool{}
	var nodes []string
	for _, p := range pods {
		if p.Spec.NodeName != "" && !seen[p.Spec.NodeName] {
			seen[p.Spec.NodeName] = true
			nodes = append(nodes, p.Spec.NodeName)
		}
	}
	sort.Strings(nodes)
	sums := s.summaries(r.Context(), nodes)
	byUID := map[string]*statsv1alpha1.PodStats{}
	for _, sum := range sums {
		for i := range sum.Pods {
			byUID[sum.Pods[i].PodRef.UID] = &sum.Pods[i]
		}
	}
	list := metricsv1beta1.PodMetricsList{TypeMeta: metav1.TypeMeta{Kind: "PodMetricsList", APIVersion: MetricsGroup + "/" + MetricsVersion}}
	for _, p := range pods {
		if m, ok := podMetricsOf(p, byUID[string(p.UID)]); ok {
			list.Items = append(list.Items, m)
		}
	}
	if list.Items == nil {
		list.Items = []metricsv1beta1.PodMetrics{}
	}
	s.writeMetrics(w, r, t, "podmetrics", name, len(list.Items), func() any {
		item := list.Items[0]
		item.TypeMeta = metav1.TypeMeta{Kind: "PodMetrics", APIVersion: MetricsGroup + "/" + MetricsVersion}
		return item
	}, list)
}

// notFoundMetrics is metrics-server's 404 of an object it has no numbers
// for (yet).
func notFoundMetrics(resource, name string) error {
	return newError(http.StatusNotFound, metav1.StatusReasonNotFound, "%s.%s %q not found", resource, MetricsGroup, name)
}

// nodeMetricsOf is n's usage from its summary; false without CPU and
// memory numbers (an agent that has not measured twice yet).
func nodeMetricsOf(n *corev1.Node, sum *statsv1alpha1.Summary) (metricsv1beta1.NodeMetrics, bool) {
	if sum == nil {
		return metricsv1beta1.NodeMetrics{}, false
	}
	usage, ts, window, ok := usageOf(sum.Node.CPU, sum.Node.Memory)
	if !ok {
		return metricsv1beta1.NodeMetrics{}, false
	}
	return metricsv1beta1.NodeMetrics{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.Labels, CreationTimestamp: metav1.NewTime(time.Now())},
		Timestamp:  ts, Window: window, Usage: usage,
	}, true
}

// podMetricsOf is p's usage per container; false when the agent has no
// complete numbers for it.
func podMetricsOf(p *corev1.Pod, ps *statsv1alpha1.PodStats) (metricsv1beta1.PodMetrics, bool) {
	if ps == nil || len(ps.Containers) == 0 {
		return metricsv1beta1.PodMetrics{}, false
	}
	m := metricsv1beta1.PodMetrics{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels, CreationTimestamp: metav1.NewTime(time.Now())},
	}
	for _, c := range ps.Containers {
		usage, ts, window, ok := usageOf(c.CPU, c.Memory)
		if !ok {
			return metricsv1beta1.PodMetrics{}, false
		}
		m.Timestamp, m.Window = ts, window
		m.Containers = append(m.Containers, metricsv1beta1.ContainerMetrics{Name: c.Name, Usage: usage})
	}
	sort.Slice(m.Containers, func(i, j int) bool { return m.Containers[i].Name < m.Containers[j].Name })
	return m, true
}

// usageOf turns a summary's CPU and memory into a ResourceList, with the
// measurement's time and window (the agent's two samples).
func usageOf(cpu *statsv1alpha1.CPUStats, mem *statsv1alpha1.MemoryStats) (corev1.ResourceList, metav1.Time, metav1.Duration, bool) {
	if cpu == nil || cpu.UsageNanoCores == nil || mem == nil || mem.WorkingSetBytes == nil {
		return nil, metav1.Time{}, metav1.Duration{}, false
	}
	return corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewScaledQuantity(int64(*cpu.UsageNanoCores), resource.Nano),
		corev1.ResourceMemory: *resource.NewQuantity(int64(*mem.WorkingSetBytes), resource.BinarySI),
	}, cpu.Time, metav1.Duration{Duration: StatsWindow}, true
}

// StatsWindow is the window the metrics API reports: the span the agents
// average CPU usage over (their stats interval, node.DefaultStatsInterval;
// the summary does not carry it).
const StatsWindow = 10 * time.Second
