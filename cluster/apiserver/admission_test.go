package apiserver_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// diskEnv is the API server over a real Badger store on disk, with the
// real write pipeline (the CUE schema included).
func diskEnv(t *testing.T) *env {
	t.Helper()
	st, err := store.Open(store.Config{Dir: filepath.Join(t.TempDir(), "db"), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newEnvOn(t, st, nil)
}

// catalogueWant is what the API answers to each document of each file of
// the Git path's bad-input catalogue (schema/testdata/bad), in order: the
// field a 422 names, or "created"/"exists" for the first and repeated
// objects of the files that are wrong only as a set (the API writes one
// object at a time, as kubectl sends them), or "kubectl" for files kubectl
// itself refuses before anything reaches the server.
var catalogueWant = map[string][]string{
	"clusterrole-no-api-groups.yaml":       {"rules[0].apiGroups"},
	"clusterrole-resources-and-urls.yaml":  {"rules[0].nonResourceURLs"},
	"clusterrolebinding-role.yaml":         {"roleRef.kind"},
	"clusterrolebinding-sa-namespace.yaml": {"subjects[0].namespace"},
	"rbac-invalid-name.yaml":               {"metadata.name"},
	"role-no-verbs.yaml":                   {"rules[0].verbs"},
	"role-nonresource-urls.yaml":           {"rules[0].nonResourceURLs"},
	"rolebinding-roleref-kind.yaml":        {"roleRef.kind"},
	"rolebinding-serviceaccount-name.yaml": {"subjects[0].name"},
	"rolebinding-subject-kind.yaml":        {"subjects[1].kind"},
	"access-mode.yaml":                     {"spec.accessModes[0]"},
	"bad-quantity.yaml":                    {"spec.containers[0].resources.limits[memory]"},
	"duplicate-containers.yaml":            {"spec.containers[1].name"},
	"duplicate-object.yaml":                {"created", "exists"},
	"externalname.yaml":                    {"spec.externalName"},
	"fractional-replicas.yaml":             {"spec.replicas"},
	"invalid-name.yaml":                    {"metadata.name"},
	"label-key.yaml":                       {"metadata.labels"},
	"missing-image.yaml":                   {"spec.containers[0].image"},
	"negative-replicas.yaml":               {"spec.replicas"},
	"port-range.yaml":                      {"spec.containers[0].ports[0].containerPort"},
	"pv-no-capacity.yaml":                  {"spec.capacity"},
	"pvc-no-storage.yaml":                  {"spec.resources.requests"},
	"secret-base64.yaml":                   {"data[password]"},
	"selector-mismatch.yaml":               {"spec.template.metadata.labels"},
	"service-clusterip-clash.yaml":         {"created", "spec.clusterIP"},
	"service-duplicate-nodeport.yaml":      {"spec.ports[1].nodePort"},
	"service-duplicate-port.yaml":          {"spec.ports[1].port"},
	"service-nodeport-clash.yaml":          {"created", "spec.ports[0].nodePort"},
	"service-nodeport-type.yaml":           {"spec.ports[0].nodePort"},
	"service-port.yaml":                    {"spec.ports[0].port"},
	"service-type.yaml":                    {"spec.type"},
	"storageclass-binding-mode.yaml":       {"volumeBindingMode"},
	"storageclass-no-provisioner.yaml":     {"provisioner"},
	"template-missing-image.yaml":          {"spec.template.spec.containers[0].image"},
	"template-port.yaml":                   {"spec.template.spec.containers[0].ports[0].containerPort"},
	"unknown-field.yaml":                   {"spec.replica"},
	"unknown-kind.yaml":                    {"kubectl"},
	"yaml-syntax.yaml":                     {"kubectl"},
}

// TestKubectlBadInputCatalogue sends every item of the Git path's
// bad-input catalogue through the API with the real kubectl: each invalid
// object gets 422 naming its field (kubectl prints "is invalid: FIELD"),
// nothing of it is stored, and the server keeps serving.
func TestKubectlBadInputCatalogue(t *testing.T) {
	e := diskEnv(t)
	k := newKubectl(t, e)
	files, err := filepath.Glob("../../schema/testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no catalogue: %v", err)
	}
	seen := map[string]bool{}
	for i, f := range files {
		name := filepath.Base(f)
		want, ok := catalogueWant[name]
		if !ok {
			t.Errorf("%s: not in catalogueWant: say what the API answers to it", name)
			continue
		}
		seen[name] = true
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"create", "-f", f}
		if !strings.Contains(string(data), "namespace:") {
			args = append(args, "-n", fmt.Sprintf("bad-%d", i)) // apart from the other files
		}
		before := e.store.Revision()
		out := k.run(true, args...)
		created := 0
		for _, w := range want {
			switch w {
			case "kubectl":
				if strings.Contains(out, "is invalid") {
					t.Errorf("%s: expected kubectl's own refusal:\n%s", name, out)
				}
			case "created":
				created++
				expect(t, out, "created")
			case "exists":
				expect(t, out, "AlreadyExists", "already exists")
			default:
				// kubectl prints one cause after "is invalid: ", several
				// as a list.
				if !strings.Contains(out, "is invalid: "+w) && !strings.Contains(out, "* "+w) {
					t.Errorf("%s: output names no cause at %s:\n%s", name, w, out)
				}
			}
		}
		if got := e.store.Revision() - before; got != int64(created) {
			t.Errorf("%s: %d objects written, want %d (%s)", name, got, created, strings.TrimSpace(string(data)))
		}
	}
	for name := range catalogueWant {
		if !seen[name] {
			t.Errorf("catalogueWant names %s, which the catalogue no longer has", name)
		}
	}
	// Still serving, and every refusal was a Status with its fields.
	expect(t, k.run(false, "get", "--raw", "/healthz"), "ok")
	expect(t, k.run(false, "get", "configmaps", "-A"), "settings")
	resp, body := e.do(t, "POST", "/apis/apps/v1/namespaces/default/deployments",
		`{"metadata":{"name":"web"},"spec":{"replicas":-1,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"busybox"}]}}}}`)
	st := decodeStatus(t, body)
	if resp.StatusCode != 422 || st.Reason != "Invalid" || st.Details == nil || len(st.Details.Causes) == 0 || st.Details.Causes[0].Field != "spec.replicas" {
		t.Fatalf("negative replicas: %d %s", resp.StatusCode, body)
	}
}

const deployManifest = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: %s
spec:
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      containers:
      - name: web
        image: localhost/busybox:latest
        ports: [{containerPort: 8080}]
        livenessProbe:
          httpGet: {port: 8080}
`

// TestKubectlAdmission: what kubectl users see of the write pipeline.
func TestKubectlAdmission(t *testing.T) {
	e := diskEnv(t)
	k := newKubectl(t, e)

	// apply --dry-run=server runs everything and creates nothing.
	dep := k.file("web.yaml", fmt.Sprintf(deployManifest, "web"))
	expect(t, k.run(false, "apply", "--dry-run=server", "-f", dep), "deployment.apps/web created (server dry run)")
	expect(t, k.run(true, "get", "deployment", "web"), `deployments.apps "web" not found`)
	if e.store.Revision() != 0 {
		t.Fatalf("a dry run wrote: revision %d", e.store.Revision())
	}
	expect(t, k.run(true, "apply", "--dry-run=server", "-f", k.file("bad.yaml", strings.Replace(fmt.Sprintf(deployManifest, "bad"), "spec:\n  selector", "spec:\n  replicas: -1\n  selector", 1))),
		"is invalid: spec.replicas")

	// Stored objects carry Kubernetes' defaults.
	expect(t, k.run(false, "apply", "-f", dep), "deployment.apps/web created")
	expect(t, k.run(false, "get", "deployment", "web", "-o", "yaml"),
		"replicas: 1", "revisionHistoryLimit: 10", "progressDeadlineSeconds: 600",
		"type: RollingUpdate", "maxSurge: 25%", "maxUnavailable: 25%",
		"imagePullPolicy: Always", "terminationMessagePath: /dev/termination-log", "terminationMessagePolicy: File",
		"protocol: TCP", "dnsPolicy: ClusterFirst", "restartPolicy: Always", "schedulerName: default-scheduler",
		"securityContext: {}", "terminationGracePeriodSeconds: 30",
		"timeoutSeconds: 1", "periodSeconds: 10", "successThreshold: 1", "failureThreshold: 3", "scheme: HTTP")
	expect(t, k.run(false, "describe", "deployment", "web"),
		"StrategyType:           RollingUpdate", "RollingUpdateStrategy:  25% max unavailable, 25% max surge",
		"8080/TCP", "http-get http://:8080/ delay=0s timeout=1s period=10s #success=1 #failure=3")
	// Server-side apply is refused, saying what works instead.
	expect(t, k.run(true, "apply", "--server-side", "-f", dep), "server-side apply is not supported", "apply without --server-side")
	// Applying the same manifest again changes nothing: defaults are not a diff.
	rev := e.store.Revision()
	expect(t, k.run(false, "apply", "-f", dep), "deployment.apps/web unchanged")
	if e.store.Revision() != rev {
		t.Errorf("re-applying an unchanged manifest wrote (revision %d → %d)", rev, e.store.Revision())
	}

	// expose gives a ClusterIP; describe has no holes.
	expect(t, k.run(false, "expose", "deployment", "web", "--port", "8080"), "service/web exposed")
	ip := k.run(false, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
	if !strings.HasPrefix(ip, "10.96.") {
		t.Fatalf("exposed service has cluster IP %q", ip)
	}
	out := k.run(false, "describe", "service", "web")
	expectFields(t, out, "Type: ClusterIP", "IP: "+ip, "IP Family Policy: SingleStack",
		"IP Families: IPv4", "Port: <unset> 8080/TCP", "TargetPort: 8080/TCP", "Session Affinity: None")
	if k.minor() >= 32 { // kubectl 1.30 and older do not print it
		expectFields(t, out, "Internal Traffic Policy: Cluster")
	}
	expect(t, k.run(false, "get", "service", "web", "-o", "yaml"), "sessionAffinity: None", "internalTrafficPolicy: Cluster", "type: ClusterIP")
	// A second service made the same way gets another address.
	expect(t, k.run(false, "expose", "deployment", "web", "--name", "api", "--port", "80", "--target-port", "8080"), "service/api exposed")
	if ip2 := k.run(false, "get", "service", "api", "-o", "jsonpath={.spec.clusterIP}"); ip2 == ip || !strings.HasPrefix(ip2, "10.96.") {
		t.Fatalf("second service's cluster IP %q (first %q)", ip2, ip)
	}
	// The cluster IP and the selector are immutable.
	expect(t, k.run(true, "patch", "service", "web", "--type", "merge", "-p", `{"spec":{"clusterIP":"10.96.200.200"}}`), "is invalid: spec.clusterIP")
	expect(t, k.run(true, "patch", "deployment", "web", "--type", "merge", "-p",
		`{"spec":{"selector":{"matchLabels":{"app":"x"}},"template":{"metadata":{"labels":{"app":"x"}}}}}`), "is invalid: spec.selector", "field is immutable")
	// generation follows spec changes only.
	k.run(false, "label", "deployment", "web", "tier=front")
	expect(t, k.run(false, "get", "deployment", "web", "-o", "jsonpath={.metadata.generation}"), "1")
	k.run(false, "patch", "deployment", "web", "--type", "merge", "-p", `{"spec":{"replicas":3}}`)
	expect(t, k.run(false, "get", "deployment", "web", "-o", "jsonpath={.metadata.generation}"), "2")

	// A Secret's stringData reads back as data only, never in plain text.
	sec := k.file("secret.yaml", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: hunter2\n")
	expect(t, k.run(false, "create", "-f", sec), "secret/creds created")
	out = k.run(false, "get", "secret", "creds", "-o", "yaml")
	expect(t, out, "password: "+base64.StdEncoding.EncodeToString([]byte("hunter2")), "type: Opaque")
	if strings.Contains(out, "hunter2") || strings.Contains(out, "stringData") {
		t.Errorf("stringData served:\n%s", out)
	}
	obj, err := e.store.Get(context.Background(), "secrets", "default", "creds")
	if err != nil {
		t.Fatal(err)
	}
	if s := obj.(*corev1.Secret); s.StringData != nil || string(s.Data["password"]) != "hunter2" {
		t.Errorf("stored secret %+v", s)
	}

	// Errors always carry details: an unknown subresource (what kubectl
	// debug asks for) is a 404 kubectl can read.
	resp, body := e.do(t, "PATCH", "/api/v1/namespaces/default/pods/web-1/ephemeralcontainers", `{}`)
	if st := decodeStatus(t, body); resp.StatusCode != 404 || st.Details == nil {
		t.Fatalf("unknown subresource: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(t, "GET", "/no/such/path", "")
	if st := decodeStatus(t, body); resp.StatusCode != 404 || st.Details == nil {
		t.Fatalf("unknown path: %d %s", resp.StatusCode, body)
	}
	// kubectl create's generators (kubectl 1.32 sends them as protobuf):
	// stored through the same pipeline, defaults and all.
	expect(t, k.run(false, "create", "configmap", "cfg", "--from-literal", "a=1"), "configmap/cfg created")
	expect(t, k.run(false, "create", "secret", "generic", "tok", "--from-literal", "token=s3cret"), "secret/tok created")
	expect(t, k.run(false, "create", "namespace", "shop"), "namespace/shop created")
	expect(t, k.run(false, "create", "deployment", "gen", "--image", "localhost/busybox:latest", "--replicas", "2"), "deployment.apps/gen created")
	expect(t, k.run(false, "get", "configmap", "cfg", "-o", "jsonpath={.data.a}"), "1")
	expect(t, k.run(false, "get", "deployment", "gen", "-o", "jsonpath={.spec.replicas} {.spec.revisionHistoryLimit}"), "2 10")
	if obj, err := e.store.Get(context.Background(), "secrets", "default", "tok"); err != nil || string(obj.(*corev1.Secret).Data["token"]) != "s3cret" {
		t.Errorf("kubectl create secret stored %v, %v", obj, err)
	}
	expect(t, k.run(true, "create", "deployment", "bad_name", "--image", "x"), "is invalid", "metadata.name")
	// kubectl scale through the /scale subresource; a workload from Git
	// is refused with the hint to change it there.
	expect(t, k.run(false, "scale", "deployment", "gen", "--replicas", "4"), "deployment.apps/gen scaled")
	expect(t, k.run(false, "get", "deployment", "gen", "-o", "jsonpath={.spec.replicas}"), "4")
	expect(t, k.run(true, "scale", "deployment", "gen", "--current-replicas", "2", "--replicas", "1"), "Expected replicas to be 2, was 4")
	mustCreate(t, e.store, deployment("default", "fromgit", 1, "apps/web.yaml"))
	expect(t, k.run(true, "scale", "deployment", "fromgit", "--replicas", "3"), "Forbidden", "managed by Git (apps/web.yaml); change it in the repository")
	// Strategic merge patches, lists merged by key: kubectl set env, set
	// image, label; on a Git object the Git hint.
	expect(t, k.run(false, "set", "env", "deployment/gen", "FOO=bar"), "deployment.apps/gen env updated")
	expect(t, k.run(false, "set", "env", "deployment/gen", "BAZ=qux"), "deployment.apps/gen env updated")
	expect(t, k.run(false, "get", "deployment", "gen", "-o", "jsonpath={.spec.template.spec.containers[0].env[*].name}"), "FOO BAZ")
	expect(t, k.run(false, "set", "image", "deployment/gen", "busybox=localhost/busybox:1"), "deployment.apps/gen image updated")
	expect(t, k.run(false, "get", "deployment", "gen", "-o", "jsonpath={.spec.template.spec.containers[0].image}"), "localhost/busybox:1")
	expect(t, k.run(true, "set", "env", "deployment/fromgit", "FOO=bar"), "managed by Git (apps/web.yaml); change it in the repository")
	// JSON patches (RFC 6902), through the same pipeline.
	expect(t, k.run(false, "patch", "deployment", "gen", "--type", "json", "-p",
		`[{"op":"replace","path":"/spec/template/spec/containers/0/env/0/value","value":"json"},{"op":"replace","path":"/spec/replicas","value":2}]`),
		"deployment.apps/gen patched")
	expect(t, k.run(false, "get", "deployment", "gen", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].env[0].value}"), "2 json")
	expect(t, k.run(true, "patch", "deployment", "gen", "--type", "json", "-p", `[{"op":"test","path":"/spec/replicas","value":7}]`), "does not apply")
	expect(t, k.run(true, "patch", "deployment", "gen", "--type", "json", "-p", `[{"op":"replace","path":"/spec/replicas","value":-3}]`), "is invalid: spec.replicas")
	expect(t, k.run(true, "patch", "deployment", "fromgit", "--type", "json", "-p", `[{"op":"replace","path":"/spec/replicas","value":2}]`), "managed by Git")

	k.file("pod.yaml", "")
	expect(t, k.run(false, "run", "dbg", "--image", "localhost/busybox:latest"), "pod/dbg created")
	// kubectl debug: no ephemeral containers, said so (kubectl reads a 404
	// without a name as a missing subresource); a debug copy of the pod
	// is an ordinary create.
	expect(t, k.run(true, "debug", "dbg", "--image", "localhost/busybox:latest"),
		"ephemeral containers are disabled for this cluster", "--copy-to=POD-debug")
	k.run(false, "debug", "dbg", "--copy-to", "dbg-debug", "--image", "localhost/busybox:latest", "--container", "dbgc", "--", "sleep", "1")
	expect(t, k.run(false, "get", "pod", "dbg-debug", "-o", "jsonpath={.spec.containers[*].name}"), "dbg dbgc")

	// kubectl taint: a strategic merge patch of a Node's taints (a list
	// merged by key) on a Node registered by its agent; the Git hint on
	// a Node from Git.
	mustCreate(t, e.store, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge1"}})
	expect(t, k.run(false, "taint", "nodes", "edge1", "dedicated=gpu:NoSchedule"), "node/edge1 tainted")
	expect(t, k.run(false, "taint", "nodes", "edge1", "spot=yes:PreferNoSchedule"), "node/edge1 tainted")
	expect(t, k.run(false, "get", "node", "edge1", "-o", "jsonpath={range .spec.taints[*]}{.key}={.value}:{.effect} {end}"),
		"dedicated=gpu:NoSchedule", "spot=yes:PreferNoSchedule")
	expect(t, k.run(false, "taint", "nodes", "edge1", "dedicated:NoSchedule-"), "node/edge1 untainted")
	expect(t, k.run(false, "get", "node", "edge1", "-o", "jsonpath={.spec.taints[*].key}"), "spot")
	mustCreate(t, e.store, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gitnode",
		Annotations: map[string]string{schema.AnnotationManagedBy: schema.ManagedByGit, schema.AnnotationSource: "nodes.yaml"}}})
	expect(t, k.run(true, "taint", "nodes", "gitnode", "dedicated=gpu:NoSchedule"), "managed by Git (nodes.yaml); change it in the repository")
}

// TestEveryErrorHasDetails: whatever the route, an error Status names
// what it is about (kubectl dereferences details).
func TestEveryErrorHasDetails(t *testing.T) {
	e := newEnv(t, nil)
	var bad []string
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/", ""},
		{"GET", "/api/v2/pods", ""},
		{"GET", "/apis/nope/v1/things", ""},
		{"GET", "/api/v1/namespaces/default/pods/x", ""},
		{"GET", "/api/v1/namespaces/default/pods/x/exec", ""},
		{"POST", "/api/v1/namespaces/default/pods", `{"kind":`},
		{"POST", "/api/v1/namespaces/default/pods?dryRun=Some", `{}`},
		{"POST", "/api/v1/namespaces/default/pods?fieldValidation=Loose", `{}`},
		{"DELETE", "/api/v1/namespaces/default/pods", ""},
	} {
		_, body := e.do(t, c.method, c.path, c.body)
		var st struct {
			Kind    string          `json:"kind"`
			Details json.RawMessage `json:"details"`
		}
		if json.Unmarshal([]byte(body), &st) != nil || st.Kind != "Status" || len(st.Details) == 0 {
			bad = append(bad, fmt.Sprintf("%s %s: %s", c.method, c.path, body))
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Fatalf("errors without details:\n%s", strings.Join(bad, "\n"))
	}
}
