package apiserver_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/store"
)

// FuzzHandler sends arbitrary methods, paths, queries and bodies through
// the whole handler (with a real store behind it): nothing may panic, and
// every error is a Status.
func FuzzHandler(f *testing.F) {
	st := store.MemoryFor(f)
	tlsDir := f.TempDir()
	if _, _, _, err := apiserver.EnsureCerts(tlsDir, nil); err != nil {
		f.Fatal(err)
	}
	signer, err := apiserver.LoadSigner(tlsDir)
	if err != nil {
		f.Fatal(err)
	}
	srv, err := apiserver.New(apiserver.Config{Store: st, Admission: pipeline(f), Logger: quietLogger(), MaxBodyBytes: 1 << 16,
		Logs: apiserver.StaticLogs{"default/p": "x\n"}, Signer: signer})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	seeds := []struct {
		m    uint8
		path string
		body string
	}{
		{0, "/api/v1/namespaces/default/pods/p", ""},
		{1, "/api/v1/namespaces/default/pods", `{"metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"b"}]}}`},
		{2, "/api/v1/namespaces/default/pods/p", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","resourceVersion":"1"}}`},
		{2, "/api/v1/namespaces/default/pods/p/status", `{"status":{"phase":"Running"}}`},
		{3, "/api/v1/namespaces/default/pods/p", `{"preconditions":{"uid":"x"}}`},
		{0, "/apis/apps/v1/deployments?labelSelector=a%3Db&fieldSelector=metadata.name%3Dx", ""},
		{0, "/api/v1/namespaces/default/events?watch=1&timeoutSeconds=1&resourceVersion=1", ""},
		{0, "/api/v1/namespaces/default/pods/p/log?tailLines=1", ""},
		{1, "/api/v1/nodes", `{"kind":"Node","metadata":{"name":"n","namespace":"x"}}`},
		{1, "/apis/flotilla.dev/v1alpha1/syncstatuses", `[1,2]`},
		{0, "/apis/networking.k8s.io/v1", ""},
		{4, "/api/v1/namespaces/x/status", `null`},
		{1, "/apis/certificates.k8s.io/v1/certificatesigningrequests",
			csrBody(f, newKey(f), "kubernetes.io/kube-apiserver-client-kubelet", "system:node:n1", []string{"system:nodes"}, nil)},
	}
	for _, s := range seeds {
		f.Add(s.m, s.path, s.body, false)
	}
	methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}
	f.Fuzz(func(t *testing.T, m uint8, target, body string, table bool) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \t\r\n#") {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second) // ends watches
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, methods[int(m)%len(methods)], "http://x"+target, strings.NewReader(body))
		if err != nil {
			return
		}
		if table {
			req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		out := rec.Body.String()
		if strings.Contains(out, "panic") {
			t.Fatalf("%s %s: %s", req.Method, target, out)
		}
		if rec.Code >= 400 && !strings.Contains(target, "/log") {
			var st struct{ Kind string }
			if json.Unmarshal([]byte(out), &st) != nil || st.Kind != "Status" || rec.Code >= 500 {
				t.Fatalf("%s %s: %d %s", req.Method, target, rec.Code, out)
			}
		}
	})
}
