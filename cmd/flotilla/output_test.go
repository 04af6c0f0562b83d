package main

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/schema"
)

// -o jsonpath and -o custom-columns print what kubectl prints: one object
// is the template's data, several a v1 List; a missing field is <none>.
func TestTemplateOutputs(t *testing.T) {
	pods := []schema.Object{
		&corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "busybox"}, {Name: "d", Image: "nginx"}}}},
		&corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "default"}},
	}
	run := func(output string, objs []schema.Object, single bool) string {
		t.Helper()
		tmpl, ok, err := parseTemplateOutput(output)
		if err != nil || !ok {
			t.Fatalf("%s: ok %v, %v", output, ok, err)
		}
		var b bytes.Buffer
		if err := tmpl.print(&b, objs, single); err != nil {
			t.Fatalf("%s: %v", output, err)
		}
		return b.String()
	}
	if got := run("jsonpath={.spec.nodeName}", pods[:1], true); got != "n1" {
		t.Errorf("one object: %q", got)
	}
	if got := run("jsonpath={.items[*].metadata.name}", pods, false); got != "a b" {
		t.Errorf("list: %q", got)
	}
	got := run("custom-columns=NAME:.metadata.name,IMAGES:.spec.containers[*].image,NODE:spec.nodeName", pods, false)
	want := "NAME   IMAGES         NODE\na      busybox,nginx   n1\nb      <none>         <none>\n"
	if strings.Join(strings.Fields(got), " ") != strings.Join(strings.Fields(want), " ") || !strings.HasPrefix(got, "NAME ") {
		t.Errorf("custom-columns:\n%s\nwant:\n%s", got, want)
	}
	for _, bad := range []string{"jsonpath=", "jsonpath={.items[", "custom-columns=NAME", "custom-columns="} {
		if _, ok, err := parseTemplateOutput(bad); !ok || err == nil {
			t.Errorf("%q: ok %v, err %v", bad, ok, err)
		}
	}
	if _, ok, _ := parseTemplateOutput("yaml"); ok {
		t.Error("yaml taken for a template")
	}
}
