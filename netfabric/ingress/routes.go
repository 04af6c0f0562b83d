package ingress

import (
	"fmt"
	"net"
	"path"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// annotationClass is the legacy way to name an Ingress's class, read when
// spec.ingressClassName is unset.
const annotationClass = "kubernetes.io/ingress.class"

// table is one immutable routing table, built from one Snapshot by
// buildTable. Nothing in it changes after Update publishes it, except the
// pools' round-robin counters.
type table struct {
	exact          map[string]*hostRoutes // by lower-case host name
	wildcard       map[string]*hostRoutes // "*.foo.com" by "foo.com"
	anyHost        hostRoutes             // rules without a host
	defaultBackend *pool                  // nil: 404
	pools          map[poolKey]*pool      // every backend, each once
	routes         int                    // how many routes, for the log
	certs          *certTable
}

// hostRoutes are the paths of one host, most specific first: longer paths
// before shorter, Exact before Prefix of the same length, older Ingresses
// before newer.
type hostRoutes struct{ routes []route }

type route struct {
	path  string // Exact: as written; Prefix: without trailing slashes ("" for "/")
	exact bool
	pool  *pool
}

// problem is something wrong with an Ingress, logged once while it lasts.
type problem struct{ ingress, msg string }

type nsName struct{ Namespace, Name string }

// match returns the backend for a request, or nil (404). host is
// lower-case without a port; p is a cleaned path.
func (t *table) match(host, p string) *pool {
	if hr := t.exact[host]; hr != nil {
		if pl := hr.match(p); pl != nil {
			return pl
		}
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		if hr := t.wildcard[host[i+1:]]; hr != nil {
			if pl := hr.match(p); pl != nil {
				return pl
			}
		}
	}
	if pl := t.anyHost.match(p); pl != nil {
		return pl
	}
	return t.defaultBackend
}

func (hr *hostRoutes) match(p string) *pool {
	for i := range hr.routes {
		r := &hr.routes[i]
		if r.exact {
			if p == r.path {
				return r.pool
			}
		} else if prefixMatch(r.path, p) {
			return r.pool
		}
	}
	return nil
}

// prefixMatch is the Ingress Prefix match, element by element: prefix
// (without trailing slash) "/foo" matches "/foo", "/foo/" and "/foo/bar",
// not "/foobar"; "" matches everything.
func prefixMatch(prefix, p string) bool {
	if !strings.HasPrefix(p, prefix) {
		return false
	}
	return len(p) == len(prefix) || p[len(prefix)] == '/'
}

// requestHost is the Host header as rules see it: no port, lower case, no
// trailing dot.
func requestHost(h string) string {
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// cleanPath is the request path with "." and ".." elements and repeated
// slashes resolved, keeping a trailing slash (which Exact paths tell apart).
func cleanPath(p string) string {
	if p == "" || p == "/" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	c := path.Clean(p)
	if p[len(p)-1] == '/' && c != "/" {
		c += "/"
	}
	return c
}

// servedIngresses returns the Ingresses of ingress class class, oldest
// first (creationTimestamp, then namespace and name): the order in which
// their rules take precedence.
func servedIngresses(snap *svcview.Snapshot, class string) []*networkingv1.Ingress {
	if snap == nil {
		return nil
	}
	var out []*networkingv1.Ingress
	for _, ing := range snap.Ingresses {
		if servesClass(ing, class) {
			out = append(out, ing)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out
}

func servesClass(ing *networkingv1.Ingress, class string) bool {
	if c := ing.Spec.IngressClassName; c != nil && *c != "" {
		return *c == class
	}
	if c := ing.Annotations[annotationClass]; c != "" {
		return c == class
	}
	return true
}

// namespaceOf is the Ingress's namespace, "default" when unset (a manifest
// read from Git may leave it out).
func namespaceOf(ing *networkingv1.Ingress) string {
	if ing.Namespace == "" {
		return "default"
	}
	return ing.Namespace
}

func ingressName(ing *networkingv1.Ingress) string { return namespaceOf(ing) + "/" + ing.Name }

// builder accumulates one table.
type builder struct {
	snap  *svcview.Snapshot
	t     *table
	probs []problem
	owner map[string]string // host, path type and path → ingress that routes it
}

// buildTable builds the routing table of ings (ordered by servedIngresses)
// against snap. It does no I/O; the problems are returned for the log.
func buildTable(snap *svcview.Snapshot, ings []*networkingv1.Ingress) (*table, []problem) {
	b := &builder{
		snap: snap,
		t: &table{
			exact:    map[string]*hostRoutes{},
			wildcard: map[string]*hostRoutes{},
			pools:    map[poolKey]*pool{},
		},
		owner: map[string]string{},
	}
	for _, ing := range ings {
		b.addIngress(ing)
	}
	sortRoutes(&b.t.anyHost)
	for _, hr := range b.t.exact {
		sortRoutes(hr)
	}
	for _, hr := range b.t.wildcard {
		sortRoutes(hr)
	}
	return b.t, b.probs
}

func (b *builder) problem(ing *networkingv1.Ingress, format string, args ...any) {
	b.probs = append(b.probs, problem{ingressName(ing), fmt.Sprintf(format, args...)})
}

func (b *builder) addIngress(ing *networkingv1.Ingress) {
	if db := ing.Spec.DefaultBackend; db != nil {
		pl := b.pool(ing, db)
		if b.t.defaultBackend == nil {
			b.t.defaultBackend = pl
		} else {
			b.problem(ing, "spec.defaultBackend ignored: an older Ingress's default backend (%s) serves unmatched requests", b.t.defaultBackend.service)
		}
	}
	for i, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		host := strings.TrimSuffix(strings.ToLower(rule.Host), ".")
		var hr *hostRoutes
		switch {
		case host == "":
			hr = &b.t.anyHost
		case strings.HasPrefix(host, "*.") && !strings.Contains(host[2:], "*"):
			hr = b.t.wildcard[host[2:]]
			if hr == nil {
				hr = &hostRoutes{}
				b.t.wildcard[host[2:]] = hr
			}
		case strings.Contains(host, "*"):
			b.problem(ing, "spec.rules[%d].host %q ignored: a wildcard must be the whole first label (\"*.foo.com\")", i, rule.Host)
			continue
		default:
			hr = b.t.exact[host]
			if hr == nil {
				hr = &hostRoutes{}
				b.t.exact[host] = hr
			}
		}
		for j, hp := range rule.HTTP.Paths {
			r, ok := b.route(ing, i, j, hp)
			if !ok {
				continue
			}
			kind := "Prefix"
			if r.exact {
				kind = "Exact"
			}
			key := host + "\x00" + kind + "\x00" + r.path
			if prev, dup := b.owner[key]; dup {
				b.problem(ing, "spec.rules[%d].http.paths[%d] (host %q, %s path %q) ignored: Ingress %s, older, routes it", i, j, rule.Host, kind, hp.Path, prev)
				continue
			}
			b.owner[key] = ingressName(ing)
			hr.routes = append(hr.routes, r)
			b.t.routes++
		}
	}
}

func (b *builder) route(ing *networkingv1.Ingress, i, j int, hp networkingv1.HTTPIngressPath) (route, bool) {
	p := hp.Path
	if p == "" {
		p = "/"
	}
	if p[0] != '/' {
		b.problem(ing, "spec.rules[%d].http.paths[%d].path %q ignored: must start with '/'", i, j, hp.Path)
		return route{}, false
	}
	r := route{pool: b.pool(ing, &hp.Backend)}
	if hp.PathType != nil && *hp.PathType == networkingv1.PathTypeExact {
		r.exact, r.path = true, p
	} else { // Prefix, ImplementationSpecific, unset
		r.path = strings.TrimRight(p, "/")
	}
	return r, true
}

// sortRoutes orders hr's routes by precedence; routes of equal precedence
// keep their order (older Ingress first).
func sortRoutes(hr *hostRoutes) {
	sort.SliceStable(hr.routes, func(i, j int) bool {
		a, b := hr.routes[i], hr.routes[j]
		if len(a.path) != len(b.path) {
			return len(a.path) > len(b.path)
		}
		return a.exact && !b.exact
	})
}

// poolKey names a backend: a service port, or (Name "resource:...") an
// unsupported resource backend.
type poolKey struct {
	Namespace, Name string
	PortName        string
	PortNumber      int32
}

// pool returns the (shared) backend of an Ingress backend reference.
func (b *builder) pool(ing *networkingv1.Ingress, be *networkingv1.IngressBackend) *pool {
	ns := namespaceOf(ing)
	switch {
	case be.Service != nil:
		sb := be.Service
		key := poolKey{ns, sb.Name, sb.Port.Name, sb.Port.Number}
		if pl := b.t.pools[key]; pl != nil {
			return pl
		}
		pl := b.servicePool(ing, ns, sb)
		b.t.pools[key] = pl
		return pl
	case be.Resource != nil:
		key := poolKey{Namespace: ns, Name: "resource:" + ing.Name}
		if pl := b.t.pools[key]; pl != nil {
			return pl
		}
		pl := &pool{service: ingressName(ing), unavailable: fmt.Sprintf("resource backends are not supported (Ingress %s)", ingressName(ing))}
		b.problem(ing, "a backend names resource %s %q: resource backends are not supported, its requests get 503", be.Resource.Kind, be.Resource.Name)
		b.t.pools[key] = pl
		return pl
	default:
		key := poolKey{Namespace: ns, Name: "none:" + ing.Name}
		if pl := b.t.pools[key]; pl != nil {
			return pl
		}
		pl := &pool{service: ingressName(ing), unavailable: fmt.Sprintf("Ingress %s has a backend without a service", ingressName(ing))}
		b.problem(ing, "a backend names neither a service nor a resource: its requests get 503")
		b.t.pools[key] = pl
		return pl
	}
}

func (b *builder) servicePool(ing *networkingv1.Ingress, ns string, sb *networkingv1.IngressServiceBackend) *pool {
	name := ns + "/" + sb.Name
	pl := &pool{service: name}
	svc := b.snap.Service(ns, sb.Name)
	if svc == nil {
		pl.unavailable = fmt.Sprintf("service %s not found", name)
		b.problem(ing, "backend service %s not found: its requests get 503", name)
		return pl
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		pl.unavailable = fmt.Sprintf("service %s is of type ExternalName, which the ingress does not support", name)
		b.problem(ing, "backend service %s is of type ExternalName, not supported: its requests get 503", name)
		return pl
	}
	sp, ok := servicePort(svc, sb.Port)
	if !ok {
		port := fmt.Sprint(sb.Port.Number)
		if sb.Port.Name != "" {
			port = fmt.Sprintf("%q", sb.Port.Name)
		}
		pl.unavailable = fmt.Sprintf("service %s has no port %s", name, port)
		b.problem(ing, "backend service %s has no port %s: its requests get 503", name, port)
		return pl
	}
	for _, be := range b.snap.ReadyBackends(svc, sp) {
		pl.addrs = append(pl.addrs, net.JoinHostPort(be.Addr.String(), fmt.Sprint(be.Port)))
	}
	if len(pl.addrs) == 0 {
		// Normal during a rollout: not logged, the 503 says it.
		pl.unavailable = "no ready endpoints for service " + name
	}
	return pl
}

// servicePort finds the service port an Ingress backend names, by number
// or by name.
func servicePort(svc *corev1.Service, p networkingv1.ServiceBackendPort) (corev1.ServicePort, bool) {
	for _, sp := range svc.Spec.Ports {
		if (p.Name != "" && sp.Name == p.Name) || (p.Name == "" && p.Number != 0 && sp.Port == p.Number) {
			return sp, true
		}
	}
	return corev1.ServicePort{}, false
}
