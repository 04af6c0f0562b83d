package node

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	corev1 "k8s.io/api/core/v1"
)

func TestLogHandler(t *testing.T) {
	h := newHarness(t)
	h.rt.SetBehavior("main", FakeBehavior{Logs: "hello\n"})
	createPod(t, h.st, newPod("talk"))
	a, _ := h.run(t)
	testkit.EventuallyTrue(t, "running", 0, func() bool { return phase(t, h.st, "talk") == corev1.PodRunning })
	get := certServer(t, a.LogHandler("system:flotilla:apiserver"))
	for _, tc := range []struct {
		name, path, user string
		code             int
		body             string
	}{
		{"logs", "/containerLogs/default/talk/main", "system:flotilla:apiserver", 200, "hello\n"},
		{"no certificate", "/containerLogs/default/talk/main", "", 403, ""},
		{"another user's certificate", "/containerLogs/default/talk/main", "system:node:n2", 403, ""},
		{"unknown pod", "/containerLogs/default/nope/main", "system:flotilla:apiserver", 404, ""},
		{"unknown container", "/containerLogs/default/talk/x", "system:flotilla:apiserver", 404, ""},
		{"bad path", "/containerLogs/default/talk", "system:flotilla:apiserver", 404, ""},
		{"bad tail", "/containerLogs/default/talk/main?tailLines=-3", "system:flotilla:apiserver", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(tc.path, tc.user)
			if code != tc.code || (tc.body != "" && body != tc.body) {
				t.Errorf("GET %s = %d %q, want %d %q", tc.path, code, body, tc.code, tc.body)
			}
		})
	}
}

// certServer serves h as the agent's listener would after verifying a
// client certificate, and returns a GET as user (the certificate's common
// name; "" for none): the status code and the body.
func certServer(t *testing.T, h http.Handler) func(path, user string) (int, string) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u := r.Header.Get("X-User"); u != "" { // stands in for the verifying listener
			r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{Subject: pkix.Name{CommonName: u}}}}}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return func(path, user string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if user != "" {
			req.Header.Set("X-User", user)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
}
