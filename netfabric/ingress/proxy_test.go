package ingress

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

func TestTwoHostsTwoPaths(t *testing.T) {
	var o objects
	bs := map[string]*backend{}
	for _, name := range []string{"a-x", "a-y", "b-x", "b-y"} {
		bs[name] = newBackend(t, name)
		o.webService(name, bs[name])
	}
	o.ingresses = append(o.ingresses,
		ingress("a", 0, rule("a.example.com", httpPath("/x", prefix, "a-x", 80), httpPath("/y", prefix, "a-y", 80))),
		ingress("b", 1, rule("b.example.com", httpPath("/x", prefix, "b-x", 80), httpPath("/y", exact, "b-y", 80))),
	)
	_, front := newProxy(t, o.snapshot())
	for _, c := range []struct{ host, path, want string }{
		{"a.example.com", "/x", "a-x"},
		{"a.example.com:80", "/x/deeper?q=1", "a-x"},
		{"a.example.com", "/y", "a-y"},
		{"b.example.com", "/x", "b-x"},
		{"B.Example.com", "/y", "b-y"},
	} {
		r := get(t, nil, front.URL, c.host, c.path)
		if r.code != 200 || r.body != c.want {
			t.Errorf("%s%s: %d %q, want 200 %q", c.host, c.path, r.code, r.body, c.want)
		}
	}
	if r := get(t, nil, front.URL, "b.example.com", "/y/z"); r.code != 404 {
		t.Errorf("b.example.com/y/z (Exact /y): %d %q, want 404", r.code, r.body)
	}
	if r := get(t, nil, front.URL, "c.example.com", "/x"); r.code != 404 || !strings.Contains(r.body, "no ingress rule") {
		t.Errorf("unknown host: %d %q, want 404 naming the cause", r.code, r.body)
	}
}

func TestForwardedHeaders(t *testing.T) {
	var o objects
	b := newBackend(t, "web")
	o.webService("web", b)
	o.ingresses = append(o.ingresses, ingress("web", 0, rule("web.example.com", httpPath("/", prefix, "web", 80))))
	_, front := newProxy(t, o.snapshot())

	req, _ := http.NewRequest("GET", front.URL+"/a/b%2Fc", nil)
	req.Host = "web.example.com:8080"
	req.Header.Set("X-Forwarded-For", "6.6.6.6") // a client's claim: dropped
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := resp.Header
	for k, want := range map[string]string{
		"X-Seen-Host": "web.example.com:8080",
		"X-Seen-Path": "/a/b/c",
		"X-Seen-XFF":  "127.0.0.1",
		"X-Seen-XFP":  "http",
		"X-Seen-XFH":  "web.example.com:8080",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func TestDefaultBackend(t *testing.T) {
	var o objects
	o.webService("fallback", newBackend(t, "fallback"))
	o.webService("api", newBackend(t, "api"))
	ing := ingress("site", 0, rule("site.com", httpPath("/api", prefix, "api", 80)))
	ing.Spec.DefaultBackend = ptr(svcBackend("fallback", 80))
	o.ingresses = append(o.ingresses, ing)
	_, front := newProxy(t, o.snapshot())
	for _, c := range []struct{ host, path, want string }{
		{"site.com", "/api/1", "api"},
		{"site.com", "/other", "fallback"},
		{"elsewhere.org", "/api", "fallback"},
	} {
		if r := get(t, nil, front.URL, c.host, c.path); r.code != 200 || r.body != c.want {
			t.Errorf("%s%s: %d %q, want %q", c.host, c.path, r.code, r.body, c.want)
		}
	}
}

func TestWildcardHost(t *testing.T) {
	var o objects
	o.webService("wild", newBackend(t, "wild"))
	o.webService("exact", newBackend(t, "exact"))
	o.ingresses = append(o.ingresses, ingress("w", 0,
		rule("*.apps.example.com", httpPath("/", prefix, "wild", 80)),
		rule("admin.apps.example.com", httpPath("/", prefix, "exact", 80))))
	_, front := newProxy(t, o.snapshot())
	for host, want := range map[string]string{
		"foo.apps.example.com":   "wild",
		"admin.apps.example.com": "exact",
		"apps.example.com":       "",
		"a.b.apps.example.com":   "",
	} {
		r := get(t, nil, front.URL, host, "/")
		if want == "" {
			if r.code != 404 {
				t.Errorf("%s: %d %q, want 404", host, r.code, r.body)
			}
		} else if r.code != 200 || r.body != want {
			t.Errorf("%s: %d %q, want %q", host, r.code, r.body, want)
		}
	}
}

func TestUnavailableBackends(t *testing.T) {
	// Before the first Update.
	_, front := newProxy(t, nil)
	if r := get(t, nil, front.URL, "x.com", "/"); r.code != 503 || !strings.Contains(r.body, "not loaded") {
		t.Errorf("before Update: %d %q, want 503", r.code, r.body)
	}

	var o objects
	o.services = append(o.services, service("noready", svcPort("http", 80)), service("empty", svcPort("http", 80)), service("web", svcPort("http", 80)))
	o.slices = append(o.slices, endpointSlice("noready", "http", "127.0.0.1", 1, false))
	named := httpPath("/named", prefix, "web", 0)
	named.Backend.Service.Port = networkingv1.ServiceBackendPort{Name: "grpc"}
	o.ingresses = append(o.ingresses, ingress("u", 0, rule("u.com",
		httpPath("/missing", prefix, "nope", 80),
		httpPath("/noready", prefix, "noready", 80),
		httpPath("/empty", prefix, "empty", 80),
		httpPath("/port", prefix, "web", 8080),
		named,
		networkingv1.HTTPIngressPath{Path: "/resource", PathType: ptr(prefix), Backend: networkingv1.IngressBackend{
			Resource: &corev1.TypedLocalObjectReference{Kind: "StorageBucket", Name: "static"}}},
	)))
	log, warnings := newRecorder(t)
	p, err := New(Config{HTTPAddr: "127.0.0.1:0", HTTPSAddr: Off, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	p.Update(o.snapshot())
	front2 := httptest.NewServer(p.Handler())
	defer front2.Close()
	for _, c := range []struct{ path, body string }{
		{"/missing", "service default/nope not found"},
		{"/noready", "no ready endpoints for service default/noready"},
		{"/empty", "no ready endpoints for service default/empty"},
		{"/port", "service default/web has no port 8080"},
		{"/named", `service default/web has no port "grpc"`},
		{"/resource", "resource backends are not supported (Ingress default/u)"},
	} {
		r := get(t, nil, front2.URL, "u.com", c.path)
		if r.code != 503 || r.body != c.body {
			t.Errorf("%s: %d %q, want 503 %q", c.path, r.code, r.body, c.body)
		}
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("%s: Content-Type %q, want text/plain", c.path, ct)
		}
	}
	// Logged once at Update (missing service, two missing ports, the
	// resource), not per request, and not again for an equal snapshot.
	p.Update(o.snapshot())
	for range 3 {
		get(t, nil, front2.URL, "u.com", "/missing")
	}
	if w := warnings(); len(w) != 4 {
		t.Errorf("warnings = %q, want 4 (one per problem)", w)
	}
}

func TestBackendDown502(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := int32(ln.Addr().(*net.TCPAddr).Port)
	ln.Close() // nothing listens there now
	var o objects
	o.services = append(o.services, service("down", svcPort("http", 80)))
	o.slices = append(o.slices, endpointSlice("down", "http", "127.0.0.1", port, true))
	o.ingresses = append(o.ingresses, ingress("d", 0, rule("", httpPath("/", prefix, "down", 80))))
	_, front := newProxy(t, o.snapshot())
	for range 3 { // logged once (rate-limited), answered each time
		if r := get(t, nil, front.URL, "d.com", "/"); r.code != 502 || !strings.Contains(r.body, "default/down") {
			t.Errorf("backend down: %d %q, want 502 naming the service", r.code, r.body)
		}
	}
}

func TestRoundRobinReadyOnly(t *testing.T) {
	var o objects
	ready := []*backend{newBackend(t, "r1"), newBackend(t, "r2"), newBackend(t, "r3")}
	notReady := newBackend(t, "not-ready")
	o.services = append(o.services, service("web", svcPort("http", 80)))
	o.slices = append(o.slices, slicesOf("web", "http", true, ready...)...)
	o.slices = append(o.slices, slicesOf("web", "http", false, notReady)...)
	o.ingresses = append(o.ingresses, ingress("web", 0, rule("", httpPath("/", prefix, "web", 80))))
	_, front := newProxy(t, o.snapshot())
	const rounds = 4
	for range rounds * len(ready) {
		if r := get(t, nil, front.URL, "web", "/"); r.code != 200 {
			t.Fatalf("%d %q", r.code, r.body)
		}
	}
	for _, b := range ready {
		if n := b.hits.Load(); n != rounds {
			t.Errorf("ready endpoint %s got %d requests, want %d (round-robin)", b.name, n, rounds)
		}
	}
	if n := notReady.hits.Load(); n != 0 {
		t.Errorf("not-ready endpoint got %d requests", n)
	}
}

// TestUpdateUnderLoad swaps tables while requests run: every request is
// served whole by the old or the new table (run with -race).
func TestUpdateUnderLoad(t *testing.T) {
	blue, green := newBackend(t, "blue"), newBackend(t, "green")
	snapFor := func(b *backend) *objects {
		var o objects
		o.webService("web", b)
		o.ingresses = append(o.ingresses, ingress("web", 0, rule("web.com", httpPath("/", prefix, "web", 80))))
		return &o
	}
	blueObjs, greenObjs := snapFor(blue), snapFor(green)
	p, front := newProxy(t, blueObjs.snapshot())
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int{}
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				r := get(t, client, front.URL, "web.com", "/")
				if r.code != 200 || (r.body != "blue" && r.body != "green") {
					t.Errorf("during updates: %d %q", r.code, r.body)
					return
				}
				mu.Lock()
				seen[r.body]++
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			if i%2 == 0 {
				p.Update(greenObjs.snapshot())
			} else {
				p.Update(blueObjs.snapshot())
			}
			time.Sleep(time.Millisecond) // kept: paces the updates (a load generator), waits for nothing
		}
	})
	wg.Wait()
	if seen["blue"] == 0 || seen["green"] == 0 {
		t.Errorf("served %v, want both tables to have served", seen)
	}
}
