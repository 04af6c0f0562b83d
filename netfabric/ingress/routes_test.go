package ingress

import (
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

// tableFor builds the table of ings, with a service (port 80, one ready
// endpoint) for every backend they name.
func tableFor(t *testing.T, ings ...*networkingv1.Ingress) (*table, []problem) {
	t.Helper()
	return buildTestTable(ings...)
}

func buildTestTable(ings ...*networkingv1.Ingress) (*table, []problem) {
	var o objects
	seen := map[string]bool{}
	addSvc := func(be *networkingv1.IngressBackend) {
		if be == nil || be.Service == nil || seen[be.Service.Name] {
			return
		}
		seen[be.Service.Name] = true
		o.services = append(o.services, service(be.Service.Name, svcPort("http", 80)))
		o.slices = append(o.slices, endpointSlice(be.Service.Name, "http", "10.0.0.1", 8080, true))
	}
	for _, ing := range ings {
		addSvc(ing.Spec.DefaultBackend)
		for _, r := range ing.Spec.Rules {
			if r.HTTP != nil {
				for i := range r.HTTP.Paths {
					addSvc(&r.HTTP.Paths[i].Backend)
				}
			}
		}
	}
	o.ingresses = ings
	snap := o.snapshot()
	return buildTable(snap, servedIngresses(snap, DefaultClassName))
}

// routeTo returns the service a request is routed to, "" for 404.
func routeTo(t *table, host, path string) string {
	pl := t.match(requestHost(host), cleanPath(path))
	if pl == nil {
		return ""
	}
	return strings.TrimPrefix(pl.service, "default/")
}

func TestRouteMatching(t *testing.T) {
	withDefault := ingress("default", 100)
	withDefault.Spec.DefaultBackend = ptr(svcBackend("fallback", 80))
	tab, probs := tableFor(t,
		ingress("paths", 0,
			rule("paths.com",
				httpPath("/", prefix, "root", 80),
				httpPath("/foo", prefix, "foo-prefix", 80),
				httpPath("/foo", exact, "foo-exact", 80),
				httpPath("/foo/bar/", prefix, "foobar", 80),
				httpPath("/foo/bar/baz", exact, "foobarbaz", 80),
				httpPath("/impl", implSp, "impl", 80),
				httpPath("/slash/", exact, "slash-exact", 80),
			),
			rule("only.com", httpPath("/api", prefix, "only-api", 80)),
		),
		ingress("wild", 1,
			rule("*.wild.com", httpPath("/", prefix, "wild", 80)),
			rule("exact.wild.com", httpPath("/", prefix, "exact-wild", 80)),
			rule("*.mixed.com", httpPath("/w", prefix, "mixed-wild", 80)),
			rule("a.mixed.com", httpPath("/a", prefix, "mixed-a", 80)),
		),
		ingress("catchall", 2, rule("", httpPath("/catch", prefix, "catchall", 80))),
		withDefault,
	)
	for _, p := range probs {
		t.Errorf("unexpected problem: %+v", p)
	}
	cases := []struct{ host, path, want string }{
		// Exact beats Prefix of the same length; Prefix is element-wise.
		{"paths.com", "/foo", "foo-exact"},
		{"paths.com", "/foo/", "foo-prefix"},
		{"paths.com", "/foo/x", "foo-prefix"},
		{"paths.com", "/foobar", "root"},
		{"paths.com", "/", "root"},
		{"paths.com", "", "root"},
		// Longest match wins; trailing slash of a Prefix ignored.
		{"paths.com", "/foo/bar", "foobar"},
		{"paths.com", "/foo/bar/", "foobar"},
		{"paths.com", "/foo/bar/qux", "foobar"},
		{"paths.com", "/foo/bar/baz", "foobarbaz"},
		{"paths.com", "/foo/bar/baz/", "foobar"},
		{"paths.com", "/foo/barn", "foo-prefix"},
		// ImplementationSpecific is Prefix.
		{"paths.com", "/impl/x", "impl"},
		{"paths.com", "/implx", "root"},
		// An Exact path's trailing slash counts.
		{"paths.com", "/slash/", "slash-exact"},
		{"paths.com", "/slash", "root"},
		// Paths are cleaned before matching.
		{"paths.com", "/impl/../foo", "foo-exact"},
		{"paths.com", "//foo//bar", "foobar"},
		// Host: port ignored, case-insensitive, trailing dot.
		{"PATHS.com:8080", "/foo", "foo-exact"},
		{"paths.com.", "/foo", "foo-exact"},
		// Wildcard matches exactly one label; exact host beats wildcard.
		{"a.wild.com", "/x", "wild"},
		{"exact.wild.com", "/x", "exact-wild"},
		{"wild.com", "/x", "fallback"},
		{"a.b.wild.com", "/x", "fallback"},
		// A host whose paths do not match falls through: wildcard, then
		// the rules without a host, then the default backend.
		{"a.mixed.com", "/a", "mixed-a"},
		{"a.mixed.com", "/w", "mixed-wild"},
		{"a.mixed.com", "/catch/1", "catchall"},
		{"only.com", "/catch", "catchall"},
		{"only.com", "/api/v1", "only-api"},
		{"only.com", "/other", "fallback"},
		{"unknown.org", "/catch", "catchall"},
		{"unknown.org", "/", "fallback"},
	}
	for _, c := range cases {
		if got := routeTo(tab, c.host, c.path); got != c.want {
			t.Errorf("%s%s: routed to %q, want %q", c.host, c.path, got, c.want)
		}
	}

	// Without a default backend nothing matching is a 404.
	tab, _ = tableFor(t, ingress("a", 0, rule("a.com", httpPath("/a", prefix, "a", 80))))
	if got := routeTo(tab, "a.com", "/b"); got != "" {
		t.Errorf("a.com/b: routed to %q, want 404", got)
	}
	if got := routeTo(tab, "b.com", "/a"); got != "" {
		t.Errorf("b.com/a: routed to %q, want 404", got)
	}
}

func TestMergeConflictsOldestWins(t *testing.T) {
	older := ingress("zzz-older", 0, rule("x.com", httpPath("/p", prefix, "old", 80)))
	newer := ingress("aaa-newer", 10, rule("x.com", httpPath("/p/", prefix, "new", 80), httpPath("/q", prefix, "q", 80)))
	sameAgeA := ingress("same-a", 5, rule("y.com", httpPath("/", prefix, "same-a", 80)))
	sameAgeB := ingress("same-b", 5, rule("y.com", httpPath("/", prefix, "same-b", 80)))
	// Whatever the order in the snapshot, the result is the same.
	for _, order := range [][]*networkingv1.Ingress{
		{older, newer, sameAgeA, sameAgeB},
		{sameAgeB, newer, sameAgeA, older},
	} {
		tab, probs := tableFor(t, order...)
		if got := routeTo(tab, "x.com", "/p/1"); got != "old" {
			t.Errorf("x.com/p/1: routed to %q, want the older Ingress's service", got)
		}
		if got := routeTo(tab, "x.com", "/q"); got != "q" {
			t.Errorf("x.com/q: routed to %q, want the newer Ingress's other path (rules merge)", got)
		}
		if got := routeTo(tab, "y.com", "/"); got != "same-a" {
			t.Errorf("y.com/: routed to %q, want same-a (same age: by name)", got)
		}
		if len(probs) != 2 || probs[0].ingress != "default/same-b" || probs[1].ingress != "default/aaa-newer" {
			// same-b and aaa-newer lose: reported in precedence order.
			t.Errorf("problems = %+v, want the conflicts of same-b and aaa-newer", probs)
		}
	}
}

func TestIngressClass(t *testing.T) {
	mine := ingress("mine", 0, rule("mine.com", httpPath("/", prefix, "mine", 80)))
	mine.Spec.IngressClassName = ptr(DefaultClassName)
	other := ingress("other", 0, rule("other.com", httpPath("/", prefix, "other", 80)))
	other.Spec.IngressClassName = ptr("nginx")
	legacy := ingress("legacy", 0, rule("legacy.com", httpPath("/", prefix, "legacy", 80)))
	legacy.Annotations = map[string]string{annotationClass: "nginx"}
	unset := ingress("unset", 0, rule("unset.com", httpPath("/", prefix, "unset", 80)))
	tab, _ := tableFor(t, mine, other, legacy, unset)
	for host, want := range map[string]string{"mine.com": "mine", "other.com": "", "legacy.com": "", "unset.com": "unset"} {
		if got := routeTo(tab, host, "/"); got != want {
			t.Errorf("%s: routed to %q, want %q", host, got, want)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"": "/", "/": "/", "a": "/a", "/a/": "/a/", "/a/./b/../c": "/a/c", "/../..": "/", "//a//": "/a/", "/a/..": "/",
	} {
		if got := cleanPath(in); got != want {
			t.Errorf("cleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}
