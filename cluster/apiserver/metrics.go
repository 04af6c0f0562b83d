package apiserver

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flotilla-dev/flotilla/schema"
)

// MetricsPath is where the server answers Prometheus scrapes (authorized
// as the non-resource request get /metrics: Kubernetes' system:monitoring
// role, or cluster-admin).
const MetricsPath = "/metrics"

// requestMetrics are the API server's own families, named as
// kube-apiserver's.
type requestMetrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	longRunning *prometheus.GaugeVec
}

// requestLabels are kube-apiserver's labels of apiserver_request_total
// (less component, always "apiserver", and dry_run).
var requestLabels = []string{"verb", "group", "version", "resource", "subresource", "scope"}

func newRequestMetrics(reg prometheus.Registerer) *requestMetrics {
	m := &requestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "apiserver_request_total",
			Help: "Counter of apiserver requests broken out for each verb, group, version, resource, subresource, scope and HTTP response code.",
		}, append(append([]string{}, requestLabels...), "code")),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "apiserver_request_duration_seconds",
			Help: "Response latency distribution in seconds for each verb, group, version, resource, subresource and scope (watches and log follows excluded).",
			// kube-apiserver's buckets, shortened.
			Buckets: []float64{0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 1.5, 2, 3, 5, 10, 20, 60},
		}, requestLabels),
		longRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "apiserver_longrunning_requests",
			Help: "Gauge of all active long-running apiserver requests (watches, log follows) broken out by verb, group, version, resource, subresource and scope.",
		}, requestLabels),
	}
	reg.MustRegister(m.requests, m.latency, m.longRunning)
	return m
}

// NewRegistry is a Prometheus registry with the Go runtime's and the
// process's collectors, for one process's /metrics (a fresh one per
// process, so that tests can run several in one).
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// metricsHandler serves the registry in Prometheus' text format.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// instrument counts every request and times the short ones, labelled as
// kube-apiserver labels them (the verb as its metrics spell it: LIST,
// WATCH, GET, POST …); watches and log follows are counted while they run.
func (s *Server) instrument(next http.Handler) http.Handler {
	m := s.metrics
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		at := requestAttributes(r)
		verb := strings.ToUpper(at.Verb)
		if !at.ResourceRequest {
			verb = r.Method
		}
		version, scope := "", ""
		if at.ResourceRequest {
			segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
			if segs[0] == "api" {
				version = segs[1]
			} else {
				version = segs[2]
			}
			switch {
			case at.Namespace != "" && !(at.Resource == "namespaces" && at.Name == ""):
				scope = "namespace"
			case at.Name != "":
				scope = "resource"
			default:
				scope = "cluster"
			}
		}
		resource := at.Resource
		if !at.ResourceRequest {
			resource = "" // a path is no resource; kube-apiserver leaves it empty too
		}
		lv := boundLabels([]string{verb, at.APIGroup, version, resource, at.Subresource, scope})
		stream := at.Subresource == "exec" || at.Subresource == "attach" || at.Subresource == "portforward"
		if stream {
			lv[0] = "CONNECT" // as kube-apiserver counts them
		}
		longRunning := verb == "WATCH" || stream || (at.Subresource == "log" && isTrue(r.URL.Query().Get("follow")))
		if longRunning {
			g := m.longRunning.WithLabelValues(lv...)
			g.Inc()
			defer g.Dec()
		}
		rec := &statusRecorder{ResponseWriter: w} // audit.go
		next.ServeHTTP(rec, r)
		code := rec.code
		if code == 0 {
			code = http.StatusOK
		}
		m.requests.WithLabelValues(append(lv, strconv.Itoa(code))...).Inc()
		if !longRunning {
			m.latency.WithLabelValues(lv...).Observe(time.Since(start).Seconds())
		}
	})
}

// knownVerbs are the verbs (and, for paths, the methods) the server
// serves, as they are counted.
var knownVerbs = map[string]bool{"GET": true, "LIST": true, "WATCH": true, "CREATE": true, "UPDATE": true, "PATCH": true,
	"DELETE": true, "DELETECOLLECTION": true, "CONNECT": true, "POST": true, "PUT": true, "HEAD": true, "OPTIONS": true}

// knownSubresources are the subresources the server serves.
var knownSubresources = map[string]bool{"": true, "status": true, "scale": true, "log": true, "exec": true, "attach": true, "portforward": true}

// boundLabels keeps the labels (verb, group, version, resource,
// subresource, scope) of what the server serves and folds everything a
// client can make up (methods, paths) into "other": no request adds
// series without bound, nor a label that is not UTF-8, which Prometheus
// refuses.
func boundLabels(lv []string) []string {
	verb, group, version, resource, sub := lv[0], lv[1], lv[2], lv[3], lv[4]
	if !knownVerbs[verb] {
		lv[0] = "other"
	}
	if resource == "" {
		// A path, or a resource path with an empty resource
		// ("/api////x"): nothing else of it is a label.
		if group != "" || version != "" || sub != "" {
			lv[1], lv[2], lv[3], lv[4] = "", "", "other", ""
		}
		return lv
	}
	known := false
	if k, ok := schema.KindByResource(resource); ok && k.Group == group && k.Version == version {
		known = true
	}
	switch {
	case group == eventsGroup && version == "v1" && resource == "events",
		group == MetricsGroup && version == MetricsVersion && (resource == "nodes" || resource == "pods"):
		known = true
	}
	if _, ok := reviewRoutes[[3]string{group, version, resource}]; ok {
		known = true
	}
	if !known {
		lv[1], lv[2], lv[3], lv[4] = "", "", "other", ""
	} else if !knownSubresources[sub] {
		lv[4] = "other"
	}
	return lv
}
