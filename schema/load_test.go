package schema

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// testValidator builds the Validator once for the package's tests.
var testValidator = sync.OnceValues(NewValidator)

func validator(t testing.TB) *Validator {
	t.Helper()
	v, err := testValidator()
	if err != nil {
		t.Fatalf("NewValidator: %v", err)
	}
	return v
}

// badCases are the inputs the schema must refuse, each with the one error
// it must report: where, on which field, and why (a substring).
var badCases = []struct {
	file   string
	line   int
	field  string
	reason string
}{
	{"yaml-syntax.yaml", 5, "", "YAML syntax error"},
	{"unknown-kind.yaml", 2, "kind", `unsupported kind "PodDisruptionBudget" (apiVersion "policy/v1"); supported kinds: ClusterRole, ClusterRoleBinding, ConfigMap, Deployment,`},
	{"invalid-name.yaml", 4, "metadata.name", `invalid value "My_App" (out of bound a DNS-1123 subdomain`},
	{"selector-mismatch.yaml", 13, "spec.template.metadata.labels.app", "selector app=web does not match the pod template (its label is app=frontend)"},
	{"template-port.yaml", 19, "spec.template.spec.containers[0].ports[0].containerPort", "invalid value 70000 (out of bound <=65535)"},
	{"template-missing-image.yaml", 15, "spec.template.spec.containers[0].image", "field is required but not present"},
	{"secret-base64.yaml", 6, "data.password", `invalid value "not base64!" (out of bound standard base64, padded with '=')`},
	{"negative-replicas.yaml", 6, "spec.replicas", "invalid value -1 (out of bound >=0)"},
	{"fractional-replicas.yaml", 6, "spec.replicas", "mismatched types float and int"},
	{"port-range.yaml", 10, "spec.containers[0].ports[0].containerPort", "invalid value 70000 (out of bound <=65535)"},
	{"service-port.yaml", 9, "spec.ports[0].port", "invalid value 0 (out of bound >=1)"},
	{"access-mode.yaml", 7, "spec.accessModes[0]", `invalid value "ReadWriteSometimes" (want one of: "ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")`},
	{"service-type.yaml", 6, "spec.type", `invalid value "Clusterip" (want one of: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort")`},
	{"bad-quantity.yaml", 11, "spec.containers[0].resources.limits.memory", `invalid value "lots" (want one of: a quantity such as 500m`},
	{"duplicate-object.yaml", 11, "metadata.name", `duplicate ConfigMap "default/settings": already defined at duplicate-object.yaml:4`},
	{"missing-image.yaml", 7, "spec.containers[0].image", "field is required but not present"},
	{"duplicate-containers.yaml", 9, "spec.containers[1].name", `duplicate container name "web"`},
	{"externalname.yaml", 5, "spec.externalName", "field is required but not present"},
	{"pvc-no-storage.yaml", 8, "spec.resources.requests.storage", "field is required but not present"},
	{"pv-no-capacity.yaml", 5, "spec.capacity", "field is required but not present"},
	{"unknown-field.yaml", 6, "spec.replica", `unknown field "replica"`},
	{"storageclass-no-provisioner.yaml", 1, "provisioner", "field is required but not present"},
	{"storageclass-binding-mode.yaml", 6, "volumeBindingMode", `invalid value "OnFirstUse" (want one of: "Immediate", "WaitForFirstConsumer")`},
	{"label-key.yaml", 6, `metadata.labels["bad key!"]`, `invalid key "bad key!": want a label key`},
	{"service-duplicate-port.yaml", 12, "spec.ports[1].port", "duplicate port 80/TCP: already spec.ports[0]"},
	{"service-duplicate-nodeport.yaml", 15, "spec.ports[1].nodePort", "duplicate nodePort 30080/TCP: already spec.ports[0]"},
	{"service-nodeport-type.yaml", 10, "spec.ports[0].nodePort", "a nodePort needs type NodePort or LoadBalancer (this service is ClusterIP)"},
	{"service-nodeport-clash.yaml", 25, "spec.ports[0].nodePort", "nodePort 30080 is also used by service default/web (service-nodeport-clash.yaml:11)"},
	{"service-clusterip-clash.yaml", 17, "spec.clusterIP", "clusterIP 10.96.0.10 is also requested by service default/cache (service-clusterip-clash.yaml:6)"},
	{"rbac-invalid-name.yaml", 4, "metadata.name", `invalid value "shop/reader" (out of bound a path segment name: not empty, "." or "..", and without '/' or '%')`},
	{"role-no-verbs.yaml", 6, "rules[0].verbs", "a rule needs at least one verb"},
	{"role-nonresource-urls.yaml", 6, "rules[0].nonResourceURLs", "a Role cannot grant nonResourceURLs"},
	{"clusterrole-resources-and-urls.yaml", 8, "rules[0].nonResourceURLs", "a rule has either nonResourceURLs or apiGroups, resources and resourceNames, not both"},
	{"clusterrole-no-api-groups.yaml", 6, "rules[0].apiGroups", `a resource rule needs at least one API group ("" is the core group)`},
	{"rolebinding-roleref-kind.yaml", 7, "roleRef.kind", `invalid value "role" (want one of: "ClusterRole", "Role")`},
	{"rolebinding-subject-kind.yaml", 8, "subjects[1].kind", `invalid value "Team" (want one of: "Group", "ServiceAccount", "User")`},
	{"rolebinding-serviceaccount-name.yaml", 8, "subjects[0].name", `invalid value "system:serviceaccount:shop:ci" (out of bound a DNS-1123 subdomain`},
	{"clusterrolebinding-role.yaml", 7, "roleRef.kind", "a ClusterRoleBinding grants a ClusterRole only"},
	{"clusterrolebinding-sa-namespace.yaml", 7, "subjects[0].namespace", "field is required but not present"},
}

// setLevel are the bad inputs whose documents are each valid: only the
// set is not (cue vet, which sees one document at a time, accepts them).
var setLevel = map[string]bool{
	"duplicate-object.yaml":        true,
	"service-nodeport-clash.yaml":  true,
	"service-clusterip-clash.yaml": true,
}

func TestLoadRefusesBadInput(t *testing.T) {
	v := validator(t)
	fsys := os.DirFS(filepath.Join("testdata", "bad"))
	seen := map[string]bool{}
	for _, tc := range badCases {
		seen[tc.file] = true
		t.Run(tc.file, func(t *testing.T) {
			ms, ps := v.Load(fsys, tc.file)
			errs := ps.Errors()
			if len(errs) != 1 {
				t.Fatalf("want exactly one error, got %d:\n%s", len(errs), problemLines(ps))
			}
			p := errs[0]
			if p.File != tc.file || p.Line != tc.line || p.Field != tc.field || !strings.Contains(p.Reason, tc.reason) {
				t.Errorf("got  %s\nwant %s:%d:*: %s: ...%s...", p, tc.file, tc.line, tc.field, tc.reason)
			}
			if !setLevel[tc.file] && len(ms) != 0 {
				t.Errorf("the refused document was returned as a manifest: %v", ms)
			}
		})
	}
	// Every file of testdata/bad has a case.
	entries, err := os.ReadDir(filepath.Join("testdata", "bad"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !seen[e.Name()] {
			t.Errorf("testdata/bad/%s has no case in badCases", e.Name())
		}
	}
}

func TestLoadAcceptsEveryGitKind(t *testing.T) {
	v := validator(t)
	ms, ps := v.LoadDir(filepath.Join("testdata", "good"))
	if err := ps.Err(); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, m := range ms {
		k, err := KindOf(m.Object)
		if err != nil {
			t.Fatal(err)
		}
		kinds[k.Kind]++
		if m.Line <= 0 || m.File == "" {
			t.Errorf("%s %s: no location (%q line %d)", k.Kind, m.Object.GetName(), m.File, m.Line)
		}
	}
	for _, k := range GitKinds() {
		if kinds[k] == 0 {
			t.Errorf("testdata/good has no %s", k)
		}
	}

	byName := map[string]Manifest{}
	for _, m := range ms {
		k, _ := KindOf(m.Object)
		byName[k.Kind+"/"+m.Object.GetName()] = m
	}
	d, ok := byName["Deployment/web"].Object.(*appsv1.Deployment)
	if !ok {
		t.Fatalf("Deployment/web: %T", byName["Deployment/web"].Object)
	}
	if *d.Spec.Replicas != 3 || d.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort != 8080 ||
		d.Namespace != "shop" || d.Spec.Template.Spec.Volumes[1].EmptyDir == nil || d.APIVersion != "apps/v1" {
		t.Errorf("Deployment/web decoded wrongly: %+v", d.Spec)
	}
	if got := byName["Deployment/web"]; got.File != "all-kinds.yaml" || got.Line != 69 {
		t.Errorf("Deployment/web at %s:%d, want all-kinds.yaml:69", got.File, got.Line)
	}
	if ing := byName["Ingress/web"].Object.(*networkingv1.Ingress); ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port.Number != 80 {
		t.Errorf("Ingress/web decoded wrongly: %+v", ing.Spec)
	}
	if svc := byName["Service/json-web"]; svc.File != "web.json" || svc.Object.(*corev1.Service).Spec.Ports[0].Protocol != corev1.ProtocolUDP {
		t.Errorf("Service/json-web from JSON: %+v", svc)
	}
	if cm := byName["ConfigMap/cue-config"]; cm.File != "app.cue" || cm.Line != 5 || cm.Object.(*corev1.ConfigMap).Data["mode"] != "cue" {
		t.Errorf("ConfigMap/cue-config from CUE: %+v", cm)
	}
	if _, ok := byName["Service/cue-web"]; !ok {
		t.Errorf("the nested CUE manifest services.web was not found")
	}
	if pod := byName["Pod/debug"].Object.(*corev1.Pod); pod.Spec.Containers[0].Resources.Limits.Memory().String() != "64Mi" {
		t.Errorf("Pod/debug memory limit: %v", pod.Spec.Containers[0].Resources.Limits)
	}
}

// TestLoadForms covers the shapes of input: YAML streams, JSON, CUE, walking.
func TestLoadForms(t *testing.T) {
	const cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n"
	cases := []struct {
		name     string
		files    fstest.MapFS
		paths    []string
		objects  int
		problems []string // each the prefix of one Problem.String(), in order
	}{
		{name: "markers, comments and empty documents",
			files:   fstest.MapFS{"a.yaml": {Data: []byte("# head\n---\n\n---\n" + fmt.Sprintf(cm, "a") + "...\n---\n# only a comment\n---\n" + fmt.Sprintf(cm, "b") + "---\n")}},
			objects: 2},
		{name: "flow style", files: fstest.MapFS{"a.yml": {Data: []byte(`{apiVersion: v1, kind: Namespace, metadata: {name: apps}}`)}}, objects: 1},
		{name: "a scalar document", files: fstest.MapFS{"a.yaml": {Data: []byte(fmt.Sprintf(cm, "a") + "---\njust text\n")}},
			objects: 1, problems: []string{"a.yaml:6:1: document is not an object"}},
		{name: "missing kind", files: fstest.MapFS{"a.yaml": {Data: []byte("apiVersion: v1\nmetadata: {name: a}\n")}},
			problems: []string{"a.yaml:1:1: kind: missing kind"}},
		{name: "wrong apiVersion", files: fstest.MapFS{"a.yaml": {Data: []byte("apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: a}\n")}},
			problems: []string{`a.yaml:1:1: apiVersion: unsupported apiVersion "extensions/v1beta1" for kind Deployment: want "apps/v1"`}},
		{name: "a kind that cannot come from Git", files: fstest.MapFS{"a.yaml": {Data: []byte("apiVersion: v1\nkind: Node\nmetadata: {name: a}\n")}},
			problems: []string{`a.yaml:2:1: kind: unsupported kind "Node"`}},
		{name: "JSON syntax error", files: fstest.MapFS{"a.json": {Data: []byte("{\n  \"apiVersion\": \"v1\",\n  \"kind\": }\n")}},
			problems: []string{"a.json:3:11: JSON syntax error"}},
		{name: "JSON List", files: fstest.MapFS{"a.json": {Data: []byte(`{"apiVersion":"v1","kind":"List","items":[` +
			`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}]}`)}},
			objects: 2},
		{name: "CUE error", files: fstest.MapFS{"a.cue": {Data: []byte("x: {\n  apiVersion: \"v1\"\n  kind: \"ConfigMap\"\n  metadata: name: 1 & 2\n}\n")}},
			problems: []string{"a.cue:4:"}},
		{name: "CUE importing the schema and the Kubernetes types",
			files: fstest.MapFS{"a.cue": {Data: []byte(`package app

import (
	"github.com/flotilla-dev/flotilla/schema"
	core "k8s.io/api/core/v1"
)

web: schema.#Service & {
	metadata: name: "web"
	spec: ports: [{port: 80}]
}
cms: [string]: core.#ConfigMap & {apiVersion: "v1", kind: "ConfigMap"}
cms: one: metadata: name: "one"
cms: two: metadata: name: "Two"
`)}},
			objects: 2, problems: []string{`a.cue:14:27: metadata.name: invalid value "Two"`}},
		{name: "CUE syntax error", files: fstest.MapFS{"a.cue": {Data: []byte("x: {\n")}}, problems: []string{"a.cue:"}},
		{name: "walk skips hidden dirs, cue.mod and other files",
			files: fstest.MapFS{
				"apps/web.yaml":              {Data: []byte(fmt.Sprintf(cm, "web"))},
				"apps/.hidden/x.yaml":        {Data: []byte("not: [valid")},
				".git/config.yaml":           {Data: []byte("not: [valid")},
				"cue.mod/module.cue":         {Data: []byte("module: \"x\"")},
				"README.md":                  {Data: []byte("# hi")},
				"apps/nested/deep/more.json": {Data: []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"deep"}}`)},
			},
			objects: 2},
		{name: "explicit paths", files: fstest.MapFS{"a.yaml": {Data: []byte(fmt.Sprintf(cm, "a"))}, "notes.txt": {Data: []byte("x")}},
			paths: []string{"a.yaml", "notes.txt", "missing.yaml", "../up.yaml"}, objects: 1,
			problems: []string{"../up.yaml:0:0: invalid path", "missing.yaml:0:0: cannot read", "notes.txt:0:0: not a manifest file"}},
		{name: "duplicates across files and namespaces",
			files: fstest.MapFS{
				"a.yaml": {Data: []byte(fmt.Sprintf(cm, "x") + "---\n" + fmt.Sprintf(cm, "x") + "  namespace: other\n")},
				"b.yaml": {Data: []byte(fmt.Sprintf(cm, "x") + "  namespace: default\n")},
				"c.yaml": {Data: []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")},
			},
			objects: 5,
			problems: []string{`b.yaml:4:3: metadata.name: duplicate ConfigMap "default/x": already defined at a.yaml:4`,
				`c.yaml:7:12: metadata.name: duplicate Namespace "x": already defined at c.yaml:3`}},
		{name: "selector label missing from the template",
			files: fstest.MapFS{"d.yaml": {Data: []byte(`apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  selector: {matchLabels: {app: web, tier: db}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: a, image: b}]}
`)}},
			problems: []string{"d.yaml:7:16: spec.template.metadata.labels.tier: selector tier=db does not match the pod template (spec.template.metadata.labels has no tier)"}},
		{name: "a wrong selector and a wrong port: both, in order",
			files: fstest.MapFS{"d.yaml": {Data: []byte(`apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: a, image: b, ports: [{containerPort: 0}]}]}
`)}},
			problems: []string{"d.yaml:7:25: spec.template.metadata.labels.app: selector app=web does not match the pod template (its label is app=api)",
				"d.yaml:8:69: spec.template.spec.containers[0].ports[0].containerPort: invalid value 0 (out of bound >=1)"}},
		{name: "init container named like a container",
			files: fstest.MapFS{"p.yaml": {Data: []byte(`apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  initContainers: [{name: a, image: b}]
  containers: [{name: a, image: b}]
`)}},
			problems: []string{`p.yaml:5:21: spec.initContainers[0].name: duplicate container name "a"`}},
		{name: "warnings do not refuse",
			files: fstest.MapFS{"p.yaml": {Data: []byte(`apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  tolerations: [{key: k, operator: Exists}]
  containers:
  - name: a
    image: b
    livenessProbe: {grpc: {port: 9000}}
`)}},
			objects: 1,
			problems: []string{"p.yaml:5:3: warning: spec.tolerations: accepted but not honoured yet",
				"p.yaml:9:21: warning: spec.containers[0].livenessProbe.grpc: accepted but not honoured yet"}},
		{name: "services may share what only clashes when asked for",
			files: fstest.MapFS{"s.yaml": {Data: []byte(`apiVersion: v1
kind: Service
metadata: {name: dns}
spec:
  type: NodePort
  clusterIP: None
  ports: [{name: udp, port: 53, protocol: UDP, nodePort: 30053}, {name: tcp, port: 53, nodePort: 30053}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, ports: [{port: 5432}, {port: 5432, protocol: UDP, name: u}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: db.example.com}
`)}},
			objects: 3},
		{name: "a node port clashes across namespaces and protocols; the first service keeps it",
			files: fstest.MapFS{
				"a.yaml": {Data: []byte("apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: one}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 31000}]}\n")},
				"b.yaml": {Data: []byte("apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: two}\nspec: {type: LoadBalancer, clusterIP: 10.96.0.9, ports: [{port: 53, protocol: UDP, nodePort: 31000}]}\n")},
				"c.yaml": {Data: []byte("apiVersion: v1\nkind: Service\nmetadata: {name: c}\nspec: {clusterIP: \"10.96.0.9\", ports: [{port: 80}]}\n")},
			},
			objects: 3,
			problems: []string{"b.yaml:4:84: spec.ports[0].nodePort: nodePort 31000 is also used by service one/a (a.yaml:4)",
				"c.yaml:4:8: spec.clusterIP: clusterIP 10.96.0.9 is also requested by service two/b (b.yaml:4)"}},
		{name: "quantities and names",
			files: fstest.MapFS{"p.yaml": {Data: []byte(`apiVersion: v1
kind: Pod
metadata: {name: p, labels: {app.kubernetes.io/name: x, empty: ""}}
spec:
  containers:
  - name: a
    image: b
    resources: {requests: {cpu: 1, memory: 1e3}, limits: {cpu: "1.5", memory: -1Gi}}
`)}},
			problems: []string{`p.yaml:8:71: spec.containers[0].resources.limits.memory: invalid value "-1Gi"`}},
	}
	v := validator(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ms, ps := v.Load(tc.files, tc.paths...)
			if len(ms) != tc.objects {
				t.Errorf("got %d objects, want %d", len(ms), tc.objects)
			}
			if len(ps) != len(tc.problems) {
				t.Fatalf("got %d problems, want %d:\n%s", len(ps), len(tc.problems), problemLines(ps))
			}
			for i, want := range tc.problems {
				if got := ps[i].String(); !strings.HasPrefix(got, want) {
					t.Errorf("problem %d:\ngot  %s\nwant %s...", i, got, want)
				}
			}
		})
	}
}

// TestConformance loads the real-world examples: a file whose kinds are all
// supported must pass; every other document is one "unsupported kind" error.
func TestConformance(t *testing.T) {
	dir := filepath.Join("..", "..", "shared", "conformance", "k8s-examples")
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) == 0 {
		t.Skipf("no conformance examples in %s", dir)
	}
	v := validator(t)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			unsupported := unsupportedKinds(t, f)
			ms, ps := v.LoadPaths(f)
			errs := ps.Errors()
			if len(errs) != len(unsupported) {
				t.Fatalf("want %d errors (one per unsupported document %v), got:\n%s", len(unsupported), unsupported, problemLines(ps))
			}
			sort.Strings(unsupported)
			for i, p := range errs {
				if p.Field != "kind" || p.Line == 0 || !strings.Contains(p.Reason, fmt.Sprintf("unsupported kind %q", unsupported[i])) {
					t.Errorf("not a clear unsupported-kind error: %s", p)
				}
			}
			if len(ms) == 0 {
				t.Errorf("no manifests")
			}
		})
	}
}

// unsupportedKinds reads a YAML stream with a plain decoder, independently
// of Load, and lists the kinds Flotilla does not take from Git.
func unsupportedKinds(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, doc := range strings.Split(string(data), "\n---") {
		var apiVersion, kind string
		for _, line := range strings.Split(doc, "\n") {
			line = strings.TrimSpace(strings.Trim(strings.TrimSpace(line), ","))
			for _, key := range []string{"kind:", `kind":`, "kind: "} {
				if strings.HasPrefix(line, key) && kind == "" {
					kind = strings.Trim(strings.TrimSpace(strings.TrimPrefix(line, key)), `"`)
				}
			}
			for _, key := range []string{"apiVersion:", `apiVersion":`} {
				if strings.HasPrefix(line, key) && apiVersion == "" {
					apiVersion = strings.Trim(strings.TrimSpace(strings.TrimPrefix(line, key)), `"`)
				}
			}
		}
		if kind == "" {
			continue
		}
		if k, ok := KindByAPIVersion(apiVersion, kind); !ok || !k.FromGit {
			out = append(out, kind)
		}
	}
	return out
}

func TestLoadIsSafeForConcurrentUse(t *testing.T) {
	v := validator(t)
	fsys := os.DirFS("testdata")
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ps := v.Load(fsys, "good")
			if err := ps.Err(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

func problemLines(ps Problems) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("  " + p.String() + "\n")
	}
	return b.String()
}
