package ingress

import (
	"os"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flotilla-dev/flotilla/schema"
)

// TestConformanceSimpleFanout routes the Kubernetes documentation's
// simple fan-out example (testdata/simple-fanout-ingress.yaml, a copy of
// the shared conformance file), decoded by the repository's own manifest
// loader.
func TestConformanceSimpleFanout(t *testing.T) {
	v, err := schema.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	ms, ps := v.Load(os.DirFS("testdata"), "simple-fanout-ingress.yaml")
	if err := ps.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 {
		t.Fatalf("loaded %d manifests, want 1", len(ms))
	}
	ing, ok := ms[0].Object.(*networkingv1.Ingress)
	if !ok {
		t.Fatalf("loaded a %T, want an Ingress", ms[0].Object)
	}

	var o objects
	svc1, svc2 := newBackend(t, "service1"), newBackend(t, "service2")
	o.services = append(o.services,
		service("service1", svcPort("", 4200)),
		service("service2", svcPort("", 8080)))
	o.slices = append(o.slices, slicesOf("service1", "", true, svc1)...)
	o.slices = append(o.slices, slicesOf("service2", "", true, svc2)...)
	o.ingresses = append(o.ingresses, ing)
	_, front := newProxy(t, o.snapshot())

	for _, c := range []struct {
		host, path string
		code       int
		want       string
	}{
		{"foo.bar.com", "/foo", 200, "service1"},
		{"foo.bar.com", "/foo/index.html", 200, "service1"},
		{"foo.bar.com", "/bar", 200, "service2"},
		{"foo.bar.com:80", "/bar/", 200, "service2"},
		{"foo.bar.com", "/foobar", 404, ""},
		{"foo.bar.com", "/", 404, ""},
		{"other.com", "/foo", 404, ""},
	} {
		r := get(t, nil, front.URL, c.host, c.path)
		if r.code != c.code || (c.want != "" && r.body != c.want) {
			t.Errorf("%s%s: %d %q, want %d %q", c.host, c.path, r.code, r.body, c.code, c.want)
		}
	}
}
