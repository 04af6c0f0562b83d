package ingress

import (
	"strings"
	"testing"
)

// FuzzMatch: any Host header and path is routed without a panic, and the
// path is matched in its clean form.
func FuzzMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"a.wild.com", "/foo/bar"}, {"[::1]:80", "//x/../.."}, {"", ""}, {"PATHS.COM.", "/foo/"}, {".", "a"}, {"x:y:z", "/%2e%2e/"},
	} {
		f.Add(s[0], s[1])
	}
	def := ingress("def", 1, rule("", httpPath("/any", prefix, "any", 80)))
	def.Spec.DefaultBackend = ptr(svcBackend("fallback", 80))
	tab, _ := buildTestTable(def, ingress("routes", 0,
		rule("paths.com", httpPath("/", prefix, "root", 80), httpPath("/foo", exact, "foo", 80), httpPath("/foo/bar/", prefix, "bar", 80)),
		rule("*.wild.com", httpPath("/", implSp, "wild", 80))))
	f.Fuzz(func(t *testing.T, host, path string) {
		c := cleanPath(path)
		if !strings.HasPrefix(c, "/") || cleanPath(c) != c {
			t.Fatalf("cleanPath(%q) = %q: not clean", path, c)
		}
		tab.match(requestHost(host), c)
	})
}
