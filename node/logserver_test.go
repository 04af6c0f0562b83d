package node

import (
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
	srv := httptest.NewServer(a.LogHandler("s3cret"))
	defer srv.Close()
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b [256]byte
		n, _ := resp.Body.Read(b[:])
		return resp.StatusCode, string(b[:n])
	}
	for _, tc := range []struct {
		name, path, token string
		code              int
		body              string
	}{
		{"logs", "/containerLogs/default/talk/main", "s3cret", 200, "hello\n"},
		{"no token", "/containerLogs/default/talk/main", "", 401, ""},
		{"wrong token", "/containerLogs/default/talk/main", "guess", 401, ""},
		{"unknown pod", "/containerLogs/default/nope/main", "s3cret", 404, ""},
		{"unknown container", "/containerLogs/default/talk/x", "s3cret", 404, ""},
		{"bad path", "/containerLogs/default/talk", "s3cret", 404, ""},
		{"bad tail", "/containerLogs/default/talk/main?tailLines=-3", "s3cret", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(tc.path, tc.token)
			if code != tc.code || (tc.body != "" && body != tc.body) {
				t.Errorf("GET %s = %d %q, want %d %q", tc.path, code, body, tc.code, tc.body)
			}
		})
	}
}
