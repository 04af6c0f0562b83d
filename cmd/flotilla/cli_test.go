package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/schema"
)

func TestRolloutProgress(t *testing.T) {
	three := int32(3)
	dep := func(gen, observed int64, st appsv1.DeploymentStatus) *appsv1.Deployment {
		st.ObservedGeneration = observed
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Generation: gen}, Spec: appsv1.DeploymentSpec{Replicas: &three}, Status: st}
	}
	for _, tc := range []struct {
		name string
		d    *appsv1.Deployment
		want string
		done bool
	}{
		{"spec not observed", dep(2, 1, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}), "spec update to be observed", false},
		{"updating", dep(2, 2, appsv1.DeploymentStatus{Replicas: 4, UpdatedReplicas: 1}), "1 out of 3 new replicas have been updated", false},
		{"old pods left", dep(2, 2, appsv1.DeploymentStatus{Replicas: 4, UpdatedReplicas: 3, AvailableReplicas: 3}), "1 old replicas are pending termination", false},
		{"not yet available", dep(2, 2, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 2}), "2 of 3 updated replicas are available", false},
		{"done", dep(2, 2, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}), `deployment "web" successfully rolled out`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, done := rolloutProgress(tc.d)
			if !strings.Contains(msg, tc.want) || done != tc.done {
				t.Errorf("rolloutProgress = %q, %v; want a message with %q, %v", msg, done, tc.want, tc.done)
			}
		})
	}
}

func TestPrintSyncStatusRefused(t *testing.T) {
	now := time.Now()
	st := &schema.SyncStatus{
		Spec: schema.SyncSpec{URL: "/srv/repo", Branch: "main"},
		Status: schema.SyncStatusBody{
			LastAppliedCommit: "0123456789abcdef", LastAppliedMessage: "good", LastAppliedTime: &metav1.Time{Time: now.Add(-time.Minute)},
			LastAttemptedCommit: "fedcba9876543210", Result: schema.SyncRefused, Objects: 2,
			Problems: []schema.Problem{{File: "deployment.yaml", Line: 11, Column: 13, Field: "spec.replicas", Reason: "invalid value -1 (out of bound >=0)"}},
		},
	}
	var b bytes.Buffer
	printSyncStatus(&b, st, now)
	for _, want := range []string{
		`Live commit:   0123456 "good" (2 objects, applied 60s ago)`,
		"Last attempt:  fedcba9",
		"Result:        Refused",
		"deployment.yaml:11:13: spec.replicas: invalid value -1",
		"The live commit keeps running",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, b.String())
		}
	}
}

func TestTablePrintsKubectlColumns(t *testing.T) {
	k, _ := schema.KindByResource("pods")
	created := metav1.NewTime(time.Now().Add(-2 * time.Minute))
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", CreationTimestamp: created},
		Spec:       corev1.PodSpec{NodeName: "edge-1", Containers: []corev1.Container{{Name: "c"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.7",
			ContainerStatuses: []corev1.ContainerStatus{{Name: "c", Ready: true, RestartCount: 2}}},
	}
	var b bytes.Buffer
	if err := (table{allNamespaces: true, wide: true, now: time.Now()}).print(&b, k, "pod/", []schema.Object{pod}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != "NAMESPACE NAME READY STATUS RESTARTS AGE IP NODE" {
		t.Errorf("headers = %v", got)
	}
	if got := strings.Fields(lines[1]); strings.Join(got, " ") != "shop pod/web-1 1/1 Running 2 2m 10.244.0.7 edge-1" {
		t.Errorf("row = %v", got)
	}
	// kubectl's wide columns of workloads and services.
	dk, _ := schema.KindByResource("deployments")
	two := int32(2)
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", CreationTimestamp: created},
		Spec: appsv1.DeploymentSpec{Replicas: &two, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}, {Name: "log", Image: "busybox"}}}}}}
	b.Reset()
	if err := (table{wide: true, now: time.Now()}).print(&b, dk, "", []schema.Object{d}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(strings.Fields(b.String()), " "); got != "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR web 0/2 0 0 2m web,log nginx:1.27,busybox app=web" {
		t.Errorf("deployments -o wide: %q", got)
	}
	sk, _ := schema.KindByResource("services")
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", CreationTimestamp: created},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}}
	b.Reset()
	if err := (table{wide: true, now: time.Now()}).print(&b, sk, "", []schema.Object{svc}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(strings.Fields(b.String()), " "); !strings.HasSuffix(got, "80/TCP 2m app=web") || !strings.Contains(got, "SELECTOR") {
		t.Errorf("services -o wide: %q", got)
	}
}

// No flag's help is garbled: cobra takes a `quoted` word of a usage text
// as the flag's value name ("--podman-root podman ps").
func TestFlagHelpHasNoBackquotes(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.LocalFlags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) {
				if strings.Contains(f.Usage, "`") {
					t.Errorf("%s --%s: usage has a backquote: %q", c.CommandPath(), f.Name, f.Usage)
				}
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCommand())
}
