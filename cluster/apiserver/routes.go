package apiserver

import (
	"net/http"
	"strings"

	"github.com/flotilla-dev/flotilla/schema"
)

// request is a parsed resource path:
// /api/v1[/namespaces/<ns>]/<resource>[/<name>[/<sub>]] or the same under
// /apis/<group>/<version>.
type request struct {
	kind      schema.Kind
	namespace string // from the path; "" for cluster-scoped kinds and all-namespaces lists
	nsPath    bool   // the path had /namespaces/<ns>/
	name      string
	sub       string // "", "status", "log" or "scale"
	eventsV1  bool   // an Event served as events.k8s.io/v1 (eventsv1.go)
}

func (q request) target() target {
	return target{group: q.kind.Group, resource: q.kind.Resource, name: q.name}
}

var errNoRoute = notFound("the server could not find the requested resource")

// errNoEphemeral answers kubectl debug's ephemeral container: kubectl
// reports it as "ephemeral containers are disabled for this cluster".
var errNoEphemeral = notFound("the server could not find the requested resource: flotilla runs no ephemeral containers; " +
	"debug a copy of the pod instead (kubectl debug POD -it --copy-to=POD-debug --image=IMAGE)")

// serveResource is the entry for everything under /api/ and /apis/:
// discovery of one group or version, or a resource request.
func (s *Server) serveResource(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	for _, seg := range segs {
		if seg == "" {
			s.writeError(w, r, errNoRoute, target{})
			return
		}
	}
	var group, ver string
	var rest []string
	switch {
	case segs[0] == "api" && len(segs) >= 2:
		ver, rest = segs[1], segs[2:]
	case segs[0] == "apis" && len(segs) == 2:
		s.discoveryGroup(w, r, segs[1])
		return
	case segs[0] == "apis" && len(segs) >= 3:
		group, ver, rest = segs[1], segs[2], segs[3:]
	default:
		s.writeError(w, r, errNoRoute, target{})
		return
	}
	if group == MetricsGroup {
		s.serveMetricsAPI(w, r, ver, rest)
		return
	}
	if len(rest) == 0 {
		list, ok := resourceList(group, ver)
		if !ok {
			s.writeError(w, r, errNoRoute, target{})
			return
		}
		writeJSON(w, http.StatusOK, list)
		return
	}
	if h, ok := reviewRoutes[[3]string{group, ver, rest[0]}]; ok && len(rest) == 1 {
		h(s, w, r)
		return
	}
	req, err := route(group, ver, rest)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	s.dispatch(w, r, req)
}

// route parses the part of a path after the group version.
func route(group, ver string, rest []string) (request, error) {
	var req request
	// /namespaces/<ns>/<resource>…, but not the Namespace object's own
	// subresources (/api/v1/namespaces/<ns>/status).
	if rest[0] == "namespaces" && len(rest) >= 3 &&
		!(group == "" && len(rest) == 3 && (rest[2] == "status" || rest[2] == "finalize")) {
		req.namespace, req.nsPath = rest[1], true
		rest = rest[2:]
	}
	if len(rest) > 3 {
		return req, errNoRoute
	}
	if len(rest) > 1 {
		req.name = rest[1]
	}
	if len(rest) > 2 {
		req.sub = rest[2]
	}
	k, ok := schema.KindByResource(rest[0])
	if ek, isEv := eventsV1Route(group, ver, rest); isEv {
		k, req.eventsV1 = ek, true
	} else if !ok || k.Group != group || k.Version != ver {
		// Still named in the Status details: what was asked for.
		req.kind = schema.Kind{Group: group, Version: ver, Resource: rest[0]}
		return req, errNoRoute
	}
	req.kind = k
	switch {
	case req.nsPath && !k.Namespaced:
		return req, errNoRoute
	case !req.nsPath && k.Namespaced && req.name != "":
		return req, errNoRoute
	case req.sub != "" && req.sub != "status" && !(req.sub == "log" && k.Resource == "pods") && !(req.sub == "scale" && scalable(k)) && !(req.name != "" && isStream(k.Resource, req.sub)):
		// As kube-apiserver: no name in the details, which is how
		// kubectl debug tells a missing subresource from a missing pod.
		req.name = ""
		if k.Resource == "pods" && req.sub == "ephemeralcontainers" {
			return req, errNoEphemeral
		}
		return req, errNoRoute
	}
	return req, nil
}

// dispatch picks the verb.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request, req request) {
	m := r.Method
	switch {
	case req.eventsV1 && (m != http.MethodGet || req.sub != ""):
		s.writeError(w, r, methodNotAllowed(m, r.URL.Path), req.target())
	case req.sub == "scale":
		s.scale(w, r, req)
	case isStream(req.kind.Resource, req.sub):
		s.podStream(w, r, req)
	case req.name == "" && m == http.MethodGet:
		if isTrue(r.URL.Query().Get("watch")) {
			s.watch(w, r, req)
		} else {
			s.list(w, r, req)
		}
	case req.name == "" && m == http.MethodPost && (req.nsPath || !req.kind.Namespaced):
		s.create(w, r, req)
	case req.name != "" && req.sub == "" && m == http.MethodGet && isTrue(r.URL.Query().Get("watch")):
		s.watch(w, r, req)
	case req.name != "" && req.sub != "log" && m == http.MethodGet:
		s.get(w, r, req)
	case req.name != "" && req.sub == "" && m == http.MethodPut:
		s.update(w, r, req, false)
	case req.name != "" && req.sub == "status" && m == http.MethodPut:
		s.update(w, r, req, true)
	case req.name != "" && req.sub != "log" && m == http.MethodPatch:
		s.patch(w, r, req)
	case req.name != "" && req.sub == "" && m == http.MethodDelete:
		s.delete(w, r, req)
	case req.sub == "log" && m == http.MethodGet:
		s.podLogs(w, r, req)
	default:
		s.writeError(w, r, methodNotAllowed(m, r.URL.Path), req.target())
	}
}

func isTrue(v string) bool { return v == "1" || v == "true" || v == "True" }
