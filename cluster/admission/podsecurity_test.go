package admission_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/schema"
)

const hostRootPod = `
apiVersion: v1
kind: Pod
metadata: {name: root, namespace: %s}
spec:
  containers: [{name: c, image: "localhost/busybox:latest"}]
  volumes: [{name: host, hostPath: {path: /}}]
`

func namespaceYAML(name string, labels ...string) string {
	l := ""
	for i := 0; i+1 < len(labels); i += 2 {
		l += fmt.Sprintf("%q: %q, ", labels[i], labels[i+1])
	}
	return fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {%s}}\n", name, strings.TrimSuffix(l, ", "))
}

// A pod that mounts the host's root is refused in a namespace without
// labels (baseline by default), with the PSA message at spec, and admitted
// in a namespace labelled privileged.
func TestPodSecurityBaselineByDefault(t *testing.T) {
	f := newFixture(t)
	_, err := f.user.Create(f.ctx, obj(t, fmt.Sprintf(hostRootPod, "default")))
	cs := causes(t, err)
	want := `spec: Forbidden: violates PodSecurity "baseline:latest": hostPath volumes (volume "host")`
	if len(cs) != 1 || cs[0] != want {
		t.Fatalf("causes %q, want [%q]", cs, want)
	}
	// The cluster's own writers (a ReplicaSet's pods) are judged the same.
	if _, err := f.ctrl.Create(f.ctx, obj(t, fmt.Sprintf(hostRootPod, "default"))); err == nil {
		t.Fatal("a controller created a pod that baseline forbids")
	}
	if _, err := f.user.Create(f.ctx, obj(t, namespaceYAML("ops", "pod-security.kubernetes.io/enforce", "privileged"))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.user.Create(f.ctx, obj(t, fmt.Sprintf(hostRootPod, "ops"))); err != nil {
		t.Fatalf("privileged namespace refused the pod: %v", err)
	}
}

// A workload whose template the enforce level forbids is refused too (a
// Flotilla choice: Kubernetes would warn and fail every pod), and so is a
// change of the template; a scale of a workload admitted before is not
// judged again.
func TestPodSecurityTemplates(t *testing.T) {
	f := newFixture(t)
	priv := strings.Replace(fmt.Sprintf(deployYAML, 1), `image: "localhost/busybox:latest"}`,
		`image: "localhost/busybox:latest", securityContext: {privileged: true}}`, 1)
	_, err := f.user.Create(f.ctx, obj(t, priv))
	cs := causes(t, err)
	if len(cs) != 1 || !strings.HasPrefix(cs[0], `spec.template.spec: Forbidden: violates PodSecurity "baseline:latest": privileged (container "web" must not set securityContext.privileged=true)`) {
		t.Fatalf("causes %q", cs)
	}
	d, err := f.user.Create(f.ctx, obj(t, fmt.Sprintf(deployYAML, 1)))
	if err != nil {
		t.Fatal(err)
	}
	up := obj(t, priv)
	up.SetResourceVersion(d.GetResourceVersion())
	if _, err := f.user.Update(f.ctx, up); err == nil {
		t.Fatal("a template change to privileged was admitted")
	}
	// The namespace becomes restricted: the stored Deployment breaks
	// restricted, but a scale leaves its template alone and is admitted.
	if _, err := f.user.Create(f.ctx, obj(t, namespaceYAML("default"))); err != nil {
		t.Fatal(err)
	}
	ns, err := f.raw.Get(f.ctx, "namespaces", "", "default")
	if err != nil {
		t.Fatal(err)
	}
	ns.SetLabels(map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	if _, err := f.user.Update(f.ctx, ns); err != nil {
		t.Fatal(err)
	}
	cur, err := f.raw.Get(f.ctx, "deployments", "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	scaled := obj(t, fmt.Sprintf(deployYAML, 3))
	scaled.SetResourceVersion(cur.GetResourceVersion())
	if _, err := f.user.Update(f.ctx, scaled); err != nil {
		t.Fatalf("scale of an admitted workload refused: %v", err)
	}
}

// Warn-level findings are warnings of an admitted write; a namespace's
// labels that do not parse are refused at the label.
func TestPodSecurityWarnAndLabels(t *testing.T) {
	f := newFixture(t)
	if _, err := f.user.Create(f.ctx, obj(t, namespaceYAML("web", "pod-security.kubernetes.io/warn", "restricted"))); err != nil {
		t.Fatal(err)
	}
	var warnings []string
	opts := admission.Options{Warn: func(m string) { warnings = append(warnings, m) }}
	d := obj(t, strings.Replace(fmt.Sprintf(deployYAML, 1), "namespace: default", "namespace: web", 1))
	if _, err := f.user.CreateWith(f.ctx, d, opts); err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0], `would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false`) {
		t.Fatalf("warnings %q", warnings)
	}
	_, err := f.user.Create(f.ctx, obj(t, namespaceYAML("bad", "pod-security.kubernetes.io/enforce", "strict")))
	cs := causes(t, err)
	if len(cs) != 1 || !strings.HasPrefix(cs[0], "metadata.labels[pod-security.kubernetes.io/enforce]: ") {
		t.Fatalf("causes %q", cs)
	}
}

// vet judges a set of manifests as a commit would be: the Namespace
// manifests' labels, errors for enforce, warnings for warn.
func TestVetPodSecurity(t *testing.T) {
	ms := []schema.Manifest{
		{File: "ns.yaml", Line: 1, Object: obj(t, namespaceYAML("ops", "pod-security.kubernetes.io/enforce", "privileged"))},
		{File: "ns.yaml", Line: 5, Object: obj(t, namespaceYAML("web", "pod-security.kubernetes.io/warn", "restricted"))},
		{File: "a.yaml", Line: 1, Object: obj(t, fmt.Sprintf(hostRootPod, "default"))},
		{File: "b.yaml", Line: 1, Object: obj(t, fmt.Sprintf(hostRootPod, "ops"))},
		{File: "c.yaml", Line: 3, Object: obj(t, fmt.Sprintf(hostRootPod, "web"))},
	}
	ps, err := admission.VetPodSecurity(ms, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.String())
	}
	want := []string{
		`a.yaml:1:0: spec: Forbidden: violates PodSecurity "baseline:latest": hostPath volumes (volume "host")`,
		`c.yaml:3:0: spec: Forbidden: violates PodSecurity "baseline:latest": hostPath volumes (volume "host")`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("vet:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := admission.VetPodSecurity(ms, "lax"); err == nil {
		t.Fatal("an unknown default level was accepted")
	}
}
