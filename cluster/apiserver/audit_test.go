package apiserver_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// TestAuditLog: every request is one audit event at the Metadata level —
// who, the verb, the object, the answer's code — refused ones included; a
// watch is recorded when it starts and when it ends; health probes are not.
func TestAuditLog(t *testing.T) {
	var buf testkit.Buffer
	auditor := apiserver.NewAuditor(&buf, quietLogger())
	e := newAuthEnvOn(t, store.MemoryFor(t), true, func(c *apiserver.Config) { c.Audit = auditor })
	mustCreate(t, e.store, pod("shop", "web-1", "node-a", nil))
	admin := e.client(t, e.cred(t, "ann", auth.GroupMasters))
	nobody := e.client(t, e.cred(t, "nobody"))
	anon := e.client(t, apiclient.Credential{})
	get := func(hc *http.Client, path string) {
		t.Helper()
		resp, err := hc.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	get(admin, "/api/v1/namespaces/shop/pods/web-1")
	get(nobody, "/api/v1/namespaces/shop/secrets")
	get(anon, "/api/v1/pods")
	get(admin, "/healthz")
	get(admin, "/api/v1/namespaces/shop/pods?watch=1&timeoutSeconds=1")
	// The watch ends on its own a second later; its completion is
	// recorded then, so wait for it before the delete (the order below).
	testkit.EventuallyTrue(t, "the watch's completion is audited", 0, func() bool {
		return strings.Count(buf.String(), `"verb":"watch"`) == 2
	})
	req, _ := http.NewRequest(http.MethodDelete, e.url+"/api/v1/namespaces/shop/pods/web-1", nil)
	if resp, err := admin.Do(req); err == nil {
		resp.Body.Close()
	}
	auditor.Close()

	var lines []string
	sc := bufio.NewScanner(strings.NewReader(buf.String()))
	for sc.Scan() {
		var ev apiserver.AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("not an audit event: %s: %v", sc.Text(), err)
		}
		if ev.Kind != "Event" || ev.APIVersion != "audit.k8s.io/v1" || ev.Level != "Metadata" || ev.AuditID == "" || len(ev.SourceIPs) == 0 {
			t.Errorf("event header: %s", sc.Text())
		}
		ref := ""
		if ev.ObjectRef != nil {
			ref = ev.ObjectRef.Namespace + "/" + ev.ObjectRef.Resource + "/" + ev.ObjectRef.Name
		}
		lines = append(lines, strings.Join([]string{ev.Stage, ev.User.Username, ev.Verb, ref, itoa(ev.ResponseStatus.Code)}, " "))
	}
	want := []string{
		"ResponseComplete ann get shop/pods/web-1 200",
		"ResponseComplete nobody list shop/secrets/ 403",
		"ResponseComplete  list /pods/ 401", // no user: no credential
		"ResponseStarted ann watch shop/pods/ 200",
		"ResponseComplete ann watch shop/pods/ 200",
		"ResponseComplete ann delete shop/pods/web-1 200",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit log:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func itoa(n int32) string {
	b, _ := json.Marshal(n)
	return string(b)
}
