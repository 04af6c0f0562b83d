package apiserver_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/store"
)

func decodeStatus(t *testing.T, body string) metav1.Status {
	t.Helper()
	var st metav1.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Kind != "Status" {
		t.Fatalf("not a Status: %q (%v)", body, err)
	}
	return st
}

func TestStatusErrors(t *testing.T) {
	e := newEnv(t, nil)
	mustCreate(t, e.store, pod("default", "web-1", "n1", nil))
	podJSON := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-2"},"spec":{"containers":[{"name":"a","image":"x"}]}}`
	cases := []struct {
		name, method, path, body string
		hdr                      []string
		code                     int
		reason                   metav1.StatusReason
		msg                      string
	}{
		{"malformed JSON", "POST", "/api/v1/namespaces/default/pods", `{"kind":`, nil, 400, metav1.StatusReasonBadRequest, "not valid JSON"},
		{"wrong kind", "POST", "/api/v1/namespaces/default/pods", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}}`, nil, 400, metav1.StatusReasonBadRequest, "kind in the data (Service)"},
		{"wrong apiVersion", "POST", "/apis/apps/v1/namespaces/default/deployments", `{"apiVersion":"v1","kind":"Deployment","metadata":{"name":"x"}}`, nil, 400, metav1.StatusReasonBadRequest, "API version"},
		{"wrong namespace", "POST", "/api/v1/namespaces/default/pods", `{"metadata":{"name":"x","namespace":"other"}}`, nil, 400, metav1.StatusReasonBadRequest, "namespace of the provided object"},
		{"wrong name", "PUT", "/api/v1/namespaces/default/pods/web-1", `{"metadata":{"name":"web-9"}}`, nil, 400, metav1.StatusReasonBadRequest, "name of the object (web-9)"},
		{"unknown resource", "GET", "/api/v1/namespaces/default/widgets", "", nil, 404, metav1.StatusReasonNotFound, "could not find"},
		{"wrong group", "GET", "/apis/apps/v1/namespaces/default/pods", "", nil, 404, metav1.StatusReasonNotFound, ""},
		{"cluster kind in namespace", "GET", "/api/v1/namespaces/default/nodes", "", nil, 404, metav1.StatusReasonNotFound, ""},
		{"not found", "GET", "/api/v1/namespaces/default/pods/nope", "", nil, 404, metav1.StatusReasonNotFound, `pods "nope" not found`},
		{"exists", "POST", "/api/v1/namespaces/default/pods", strings.Replace(podJSON, "web-2", "web-1", 1), nil, 409, metav1.StatusReasonAlreadyExists, `pods "web-1" already exists`},
		{"conflict", "PUT", "/api/v1/namespaces/default/pods/web-1", `{"metadata":{"name":"web-1","resourceVersion":"999"}}`, nil, 409, metav1.StatusReasonConflict, "modified"},
		{"json patch not a list", "PATCH", "/api/v1/namespaces/default/pods/web-1", `{"op":"add"}`, []string{"Content-Type", "application/json-patch+json"}, 400, metav1.StatusReasonBadRequest, "the JSON patch is not valid"},
		{"apply patch", "PATCH", "/api/v1/namespaces/default/pods/web-1", `{}`, []string{"Content-Type", "application/apply-patch+yaml"}, 415, metav1.StatusReasonUnsupportedMediaType, ""},
		{"patch renames", "PATCH", "/api/v1/namespaces/default/pods/web-1", `{"metadata":{"name":"other"}}`, []string{"Content-Type", "application/merge-patch+json"}, 400, metav1.StatusReasonBadRequest, ""},
		{"post to item", "POST", "/api/v1/namespaces/default/pods/web-1", `{}`, nil, 405, metav1.StatusReasonMethodNotAllowed, ""},
		{"yaml body", "POST", "/api/v1/namespaces/default/pods", podJSON, []string{"Content-Type", "application/yaml"}, 415, metav1.StatusReasonUnsupportedMediaType, ""},
		{"too large", "POST", "/api/v1/namespaces/default/pods", `{"metadata":{"name":"big","annotations":{"a":"` + strings.Repeat("x", 70<<10) + `"}}}`, nil, 413, metav1.StatusReasonRequestEntityTooLarge, ""},
		{"bad selector", "GET", "/api/v1/pods?labelSelector=a%3D%3D%3Db", "", nil, 400, metav1.StatusReasonBadRequest, ""},
		{"bad field", "GET", "/api/v1/pods?fieldSelector=spec.bogus%3Dx", "", nil, 400, metav1.StatusReasonBadRequest, "field label not supported"},
		{"bad token", "GET", "/api/v1/pods", "", []string{"Authorization", "Bearer wrong"}, 401, metav1.StatusReasonUnauthorized, ""},
		{"no token", "GET", "/api/v1/pods", "", []string{"Authorization", ""}, 401, metav1.StatusReasonUnauthorized, ""},
		{"delete collection", "DELETE", "/api/v1/namespaces/default/pods", "", nil, 405, metav1.StatusReasonMethodNotAllowed, ""},
		{"bad delete options", "DELETE", "/api/v1/namespaces/default/pods/web-1", `{"preconditions":7}`, nil, 400, metav1.StatusReasonBadRequest, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.do(t, c.method, c.path, c.body, c.hdr...)
			st := decodeStatus(t, body)
			if resp.StatusCode != c.code || int(st.Code) != c.code || st.Reason != c.reason {
				t.Fatalf("got %d %d %s, want %d %s: %s", resp.StatusCode, st.Code, st.Reason, c.code, c.reason, body)
			}
			if !strings.Contains(st.Message, c.msg) {
				t.Fatalf("message %q does not contain %q", st.Message, c.msg)
			}
		})
	}
	// Open endpoints need no token.
	req, _ := http.NewRequest("GET", e.url+"/healthz", nil)
	resp, err := e.hc.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestGitOwnedObjectsAreReadOnly(t *testing.T) {
	e := newEnv(t, nil)
	mustCreate(t, e.store, deployment("default", "web", 2, "examples/hello/web.yaml:3"))
	want := `deployments "web" is managed by Git (examples/hello/web.yaml); change it in the repository and commit`
	base := "/apis/apps/v1/namespaces/default/deployments"
	for _, c := range []struct{ method, path, body string }{
		{"PUT", base + "/web", `{"metadata":{"name":"web"},"spec":{"replicas":5}}`},
		{"DELETE", base + "/web", ""},
		{"POST", base, `{"metadata":{"name":"claim","annotations":{"flotilla.dev/managed-by":"gitsync"}}}`},
	} {
		resp, body := e.do(t, c.method, c.path, c.body)
		st := decodeStatus(t, body)
		if resp.StatusCode != 403 || st.Reason != metav1.StatusReasonForbidden {
			t.Fatalf("%s: got %d %s", c.method, resp.StatusCode, body)
		}
		if c.method != "POST" && st.Message != want {
			t.Fatalf("%s: message %q, want %q", c.method, st.Message, want)
		}
	}
	resp, body := e.do(t, "PATCH", base+"/web", `{"metadata":{"labels":{"a":"b"}}}`, "Content-Type", "application/merge-patch+json")
	if st := decodeStatus(t, body); resp.StatusCode != 403 || st.Message != want {
		t.Fatalf("patch: %d %s", resp.StatusCode, body)
	}
	// Status updates stay allowed: the controllers write them.
	resp, body = e.do(t, "PUT", base+"/web/status", `{"metadata":{"name":"web"},"status":{"readyReplicas":2}}`)
	if resp.StatusCode != 200 || !strings.Contains(body, `"readyReplicas":2`) {
		t.Fatalf("status update: %d %s", resp.StatusCode, body)
	}
}

func TestWatchStream(t *testing.T) {
	e := newEnv(t, nil)
	mustCreate(t, e.store, pod("default", "a", "n1", nil))
	req, _ := http.NewRequest("GET", e.url+"/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=5", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	next := func() (string, string) {
		if !sc.Scan() {
			t.Fatalf("stream ended: %v", sc.Err())
		}
		var ev struct {
			Type   string
			Object struct{ Metadata metav1.ObjectMeta }
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		return ev.Type, ev.Object.Metadata.Name
	}
	if typ, name := next(); typ != "ADDED" || name != "a" {
		t.Fatalf("first event %s %s", typ, name)
	}
	mustCreate(t, e.store, pod("default", "b", "n1", nil))
	if typ, name := next(); typ != "ADDED" || name != "b" {
		t.Fatalf("live event %s %s", typ, name)
	}
	if _, err := e.store.Delete(context.Background(), "pods", "default", "a", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		typ, name := next()
		if typ == "DELETED" && name == "a" {
			break
		}
	}
}

func TestDiscoveryAndTable(t *testing.T) {
	e := newEnv(t, nil)
	mustCreate(t, e.store, pod("default", "web-1", "n1", nil))
	_, body := e.do(t, "GET", "/apis", "")
	for _, g := range []string{`"apps"`, `"networking.k8s.io"`, `"flotilla.dev"`} {
		if !strings.Contains(body, g) {
			t.Errorf("/apis lacks %s: %s", g, body)
		}
	}
	_, body = e.do(t, "GET", "/api/v1", "")
	var rl metav1.APIResourceList
	if err := json.Unmarshal([]byte(body), &rl); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rl.APIResources {
		if r.Name == "pods" && r.Namespaced && r.Kind == "Pod" && len(r.ShortNames) > 0 {
			found = true
		}
	}
	if !found {
		t.Fatalf("/api/v1 lacks pods: %s", body)
	}
	resp, body := e.do(t, "GET", "/api/v1/pods", "", "Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
	var tbl metav1.Table
	if err := json.Unmarshal([]byte(body), &tbl); err != nil || tbl.Kind != "Table" {
		t.Fatalf("table: %v %s", err, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "as=Table") {
		t.Fatalf("content type %q", ct)
	}
	if len(tbl.Rows) != 1 || tbl.Rows[0].Cells[0] != "web-1" || tbl.Rows[0].Cells[1] != "2/2" || tbl.Rows[0].Cells[2] != "Running" {
		t.Fatalf("rows: %+v", tbl.Rows)
	}
}

func TestPodLogs(t *testing.T) {
	e := newEnv(t, apiserver.StaticLogs{"default/web-1": "one\ntwo\nthree\n"})
	mustCreate(t, e.store, pod("default", "web-1", "n1", nil))
	resp, body := e.do(t, "GET", "/api/v1/namespaces/default/pods/web-1/log?tailLines=2&follow=true", "")
	if resp.StatusCode != 200 || body != "two\nthree\n" {
		t.Fatalf("logs: %d %q", resp.StatusCode, body)
	}
	// limitBytes is cut by the server, whatever the source; bad
	// parameters are 400s naming them.
	if resp, body := e.do(t, "GET", "/api/v1/namespaces/default/pods/web-1/log?limitBytes=5", ""); resp.StatusCode != 200 || body != "one\nt" {
		t.Fatalf("limitBytes=5: %d %q", resp.StatusCode, body)
	}
	for q, want := range map[string]string{
		"sinceSeconds=0":      "invalid sinceSeconds",
		"limitBytes=-1":       "invalid limitBytes",
		"sinceTime=yesterday": "invalid sinceTime",
		"sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z": "at most one of sinceTime or sinceSeconds",
		"previous=true": `previous terminated container "app" in pod "web-1" not found`,
	} {
		resp, body := e.do(t, "GET", "/api/v1/namespaces/default/pods/web-1/log?"+q, "")
		if st := decodeStatus(t, body); resp.StatusCode != 400 || !strings.Contains(st.Message, want) {
			t.Errorf("%s: %d %s", q, resp.StatusCode, body)
		}
	}
	resp, body = e.do(t, "GET", "/api/v1/namespaces/default/pods/nope/log", "")
	if resp.StatusCode != 404 {
		t.Fatalf("missing pod: %d %s", resp.StatusCode, body)
	}
	// Kubernetes' 400s, with its wording: a container the pod does not
	// have, and one that has not started.
	resp, body = e.do(t, "GET", "/api/v1/namespaces/default/pods/web-1/log?container=nope", "")
	if st := decodeStatus(t, body); resp.StatusCode != 400 || st.Message != "container nope is not valid for pod web-1" {
		t.Fatalf("unknown container: %d %s", resp.StatusCode, body)
	}
	waiting := pod("default", "web-2", "n1", nil)
	waiting.Status.ContainerStatuses[0] = corev1.ContainerStatus{Name: "app", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}}
	mustCreate(t, e.store, waiting)
	resp, body = e.do(t, "GET", "/api/v1/namespaces/default/pods/web-2/log", "")
	if st := decodeStatus(t, body); resp.StatusCode != 400 || st.Message != `container "app" in pod "web-2" is waiting to start: trying and failing to pull image` {
		t.Fatalf("waiting container: %d %s", resp.StatusCode, body)
	}
	e2 := newEnv(t, nil)
	mustCreate(t, e2.store, pod("default", "web-1", "n1", nil))
	resp, body = e2.do(t, "GET", "/api/v1/namespaces/default/pods/web-1/log", "")
	if st := decodeStatus(t, body); resp.StatusCode != 503 || st.Code != 503 {
		t.Fatalf("no log source: %d %s", resp.StatusCode, body)
	}
}

func TestEnsureCertsReused(t *testing.T) {
	dir := t.TempDir()
	ca1, cert, _, err := apiserver.EnsureCerts(dir, []string{"10.0.0.1", "flotilla.local"})
	if err != nil {
		t.Fatal(err)
	}
	c1, _ := os.ReadFile(cert)
	ca2, _, _, err := apiserver.EnsureCerts(dir, []string{"flotilla.local", "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := os.ReadFile(cert)
	if string(ca1) != string(ca2) || string(c1) != string(c2) {
		t.Fatal("certificates were not reused")
	}
	ca3, _, _, err := apiserver.EnsureCerts(dir, []string{"10.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	c3, _ := os.ReadFile(cert)
	if string(ca3) != string(ca1) || string(c3) == string(c1) {
		t.Fatal("a new host should reissue the server certificate from the same CA")
	}
}

// TestEnsureCertsNeverReplacesTheCA: a CA that exists but cannot be used
// stops the start with a message saying what to do; it is never silently
// replaced, which would lock out every agent.
func TestEnsureCertsNeverReplacesTheCA(t *testing.T) {
	for name, damage := range map[string]func(dir string) error{
		"unreadable key": func(dir string) error { // a directory in its place: even root cannot read it
			if err := os.Remove(filepath.Join(dir, "ca.key")); err != nil {
				return err
			}
			return os.Mkdir(filepath.Join(dir, "ca.key"), 0o700)
		},
		"missing key":   func(dir string) error { return os.Remove(filepath.Join(dir, "ca.key")) },
		"missing cert":  func(dir string) error { return os.Remove(filepath.Join(dir, apiserver.CAFile)) },
		"garbage cert":  func(dir string) error { return os.WriteFile(filepath.Join(dir, apiserver.CAFile), []byte("x"), 0o644) },
		"truncated key": func(dir string) error { return os.Truncate(filepath.Join(dir, "ca.key"), 10) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if _, _, _, err := apiserver.EnsureCerts(dir, nil); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(filepath.Join(dir, apiserver.CAFile))
			if err := damage(dir); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := apiserver.EnsureCerts(dir, nil)
			if !errors.Is(err, apiserver.ErrCA) || !strings.Contains(err.Error(), "restore both files") {
				t.Fatalf("EnsureCerts on a damaged CA: %v; want ErrCA saying what to do", err)
			}
			after, _ := os.ReadFile(filepath.Join(dir, apiserver.CAFile))
			if name != "garbage cert" && name != "missing cert" && string(after) != string(before) {
				t.Error("the CA certificate was replaced")
			}
		})
	}
}

func TestServeStopsWatchesOnShutdown(t *testing.T) {
	srv, err := apiserver.New(apiserver.Config{Store: store.MemoryFor(t), Admission: pipeline(t), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/api/v1/pods?watch=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return with an open watch")
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("watch did not end cleanly: %v", err)
	}
}

func TestWatchListAndItemWatch(t *testing.T) {
	e := newEnv(t, nil)
	mustCreate(t, e.store, pod("default", "a", "n1", nil))
	mustCreate(t, e.store, pod("default", "b", "n1", nil))
	_, body := e.do(t, "GET", "/api/v1/namespaces/default/pods?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1", "")
	lines := strings.Split(strings.TrimSpace(body), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], `"ADDED"`) || !strings.Contains(lines[2], `"BOOKMARK"`) ||
		!strings.Contains(lines[2], `"k8s.io/initial-events-end":"true"`) {
		t.Fatalf("watch list:\n%s", body)
	}
	_, body = e.do(t, "GET", "/api/v1/namespaces/default/pods/b?watch=true&timeoutSeconds=1", "")
	lines = strings.Split(strings.TrimSpace(body), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `"name":"b"`) {
		t.Fatalf("item watch:\n%s", body)
	}
}
