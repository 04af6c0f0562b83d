package apiserver_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/schema"
)

// TestRealKubectl runs the real kubectl against the server with the
// kubeconfig that WriteKubeconfig writes.
func TestRealKubectl(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed")
	}
	e := newEnv(t, apiserver.StaticLogs{"default/web-1": "hello from web-1\n"})
	kc := filepath.Join(e.dir, "kubeconfig.yaml")
	if err := apiclient.WriteKubeconfig(kc, e.url, e.caPEM, apiclient.Credential{Token: testToken}); err != nil {
		t.Fatal(err)
	}
	web1 := mustCreate(t, e.store, pod("default", "web-1", "node-a", map[string]string{"app": "web"}))
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-1.1"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web-1", UID: web1.GetUID()},
		Reason:         "Scheduled", Message: "assigned default/web-1 to node-a", Type: "Normal"}
	ek, _ := schema.KindByResource("events")
	schema.SetTypeMeta(ev, ek)
	mustCreate(t, e.store, ev)
	mustCreate(t, e.store, pod("kube-system", "dns-1", "node-b", nil))
	mustCreate(t, e.store, deployment("default", "web", 2, "examples/hello/web.yaml:1"))
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}}}
	nk, _ := schema.KindByResource("nodes")
	schema.SetTypeMeta(node, nk)
	mustCreate(t, e.store, node)

	home := t.TempDir()
	run := func(wantFail bool, args ...string) string {
		t.Helper()
		cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kc, "--cache-dir", filepath.Join(home, "cache")}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG=")
		out, err := cmd.CombinedOutput()
		if (err != nil) != wantFail {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("$ kubectl %s\n%s", strings.Join(args, " "), out)
		return string(out)
	}
	expect := func(out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
	}
	expect(run(false, "get", "pods", "-A"), "NAMESPACE", "default", "web-1", "kube-system", "dns-1", "2/2", "Running")
	expect(run(false, "get", "deploy", "-n", "default"), "NAME", "READY", "web", "0/2")
	expect(run(false, "get", "nodes"), "node-a", "control-plane")
	expect(run(false, "get", "pod", "web-1", "-o", "json"), `"name": "web-1"`, `"kind": "Pod"`, `"nodeName": "node-a"`)
	expect(run(false, "get", "pod", "web-1", "-o", "yaml"), "name: web-1", "image: nginx:1.27")
	expect(run(false, "get", "pods", "-l", "app=web", "-o", "wide"), "web-1", "node-a", "10.42.0.7")
	expect(run(false, "get", "pods", "-o", "name"), "pod/web-1")
	expect(run(false, "logs", "web-1"), "hello from web-1")
	expect(run(false, "api-resources"), "deployments", "deploy", "apps/v1", "syncstatuses")
	expect(run(false, "version"), "Server Version")
	expect(run(false, "describe", "pod", "web-1"), "Name:", "web-1", "node-a", "Scheduled", "assigned default/web-1 to node-a")
	expect(run(false, "get", "events", "--field-selector", "involvedObject.name=web-1"), "Scheduled")
	go func() {
		time.Sleep(700 * time.Millisecond)
		_, _ = e.store.Create(context.Background(), pod("default", "web-2", "node-a", nil))
	}()
	expect(run(false, "get", "pods", "-w", "--request-timeout=2s"), "web-1", "web-2")
	expect(run(false, "get", "all"), "pod/web-1", "deployment.apps/web")
	cm := filepath.Join(home, "cm.yaml")
	if err := os.WriteFile(cm, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect(run(false, "create", "-f", cm), "configmap/settings created")
	expect(run(false, "get", "cm", "settings", "-o", "jsonpath={.data.a}"), "b")
	expect(run(false, "replace", "-f", cm), "configmap/settings replaced")
	expect(run(false, "label", "cm", "settings", "tier=web"), "configmap/settings labeled")
	expect(run(false, "get", "cm", "-l", "tier=web"), "settings")
	expect(run(false, "annotate", "cm", "settings", "note=hi"), "configmap/settings annotated")
	if err := os.WriteFile(cm, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect(run(false, "apply", "-f", cm), "configmap/applied created")
	if err := os.WriteFile(cm, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect(run(false, "apply", "-f", cm), "configmap/applied configured")
	expect(run(false, "get", "cm", "applied", "-o", "jsonpath={.data.a}"), "c")
	expect(run(true, "get", "pod", "nope"), `pods "nope" not found`)
	expect(run(true, "delete", "deploy", "web"), "is managed by Git (examples/hello/web.yaml)")
	expect(run(false, "delete", "pod", "web-1"), `pod "web-1" deleted`)
	if out := run(false, "get", "pods"); strings.Contains(out, "web-1") {
		t.Errorf("web-1 still listed:\n%s", out)
	}
	bad := filepath.Join(home, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndatta:\n  a: b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect(run(true, "create", "-f", bad), "strict decoding error", "datta")
}
