package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// strictDecode decodes one YAML document into its typed object as the API
// server's strict decoding does: an unknown field or a value of the wrong
// type is an error.
func strictDecode(doc []byte) (Object, error) {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, err
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, err
	}
	k, ok := KindByAPIVersion(tm.APIVersion, tm.Kind)
	if !ok {
		return nil, fmt.Errorf("unsupported kind %s %s", tm.APIVersion, tm.Kind)
	}
	obj := k.New()
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// fieldReasons is the set of "field: reason" of the errors.
func fieldReasons(ps Problems) []string {
	var out []string
	for _, p := range ps.Errors() {
		out = append(out, p.Field+": "+p.Reason)
	}
	slices.Sort(out)
	return out
}

// TestValidateObjectAgreesWithLoad sends each bad manifest of testdata/bad,
// decoded as the API decodes a request body, through ValidateObject: it
// must give the same fields and reasons as a commit gets from Load.
func TestValidateObjectAgreesWithLoad(t *testing.T) {
	v := validator(t)
	// What the API's strict decoding refuses before validation.
	refusedByDecode := map[string]bool{
		"yaml-syntax.yaml":         true, // not YAML
		"unknown-kind.yaml":        true, // PodDisruptionBudget is not served
		"fractional-replicas.yaml": true, // 1.5 is not an int32
		"bad-quantity.yaml":        true, // "lots" is not a quantity
		"unknown-field.yaml":       true, // spec.replica
		"secret-base64.yaml":       true, // data is not base64
	}
	// A typed object cannot tell `requests: {}` from no requests: the
	// required storage is reported one level up.
	differs := map[string][]string{
		"pvc-no-storage.yaml": {"spec.resources.requests: field is required but not present"},
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "bad", "*.yaml"))
	if len(files) < 20 {
		t.Fatalf("only %d bad files", len(files))
	}
	checked := 0
	for _, f := range files {
		name := filepath.Base(f)
		if setLevel[name] {
			continue
		}
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			obj, err := strictDecode(data)
			if refusedByDecode[name] {
				if err == nil {
					t.Fatalf("strict decoding accepts it; validate it here too")
				}
				return
			}
			if err != nil {
				t.Fatalf("strict decode: %v", err)
			}
			_, lps := v.Load(os.DirFS(filepath.Dir(f)), name)
			want := fieldReasons(lps)
			if d, ok := differs[name]; ok {
				want = d
			}
			got := fieldReasons(v.ValidateObject(obj))
			if len(want) == 0 || !slices.Equal(got, want) {
				t.Errorf("ValidateObject:\n  %s\nLoad:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			checked++
		})
	}
	if checked < 15 {
		t.Errorf("only %d files compared", checked)
	}
}

// TestValidateObjectAcceptsGood: every object of testdata/good, as Load
// decodes it, passes; so does each YAML document strictly decoded.
func TestValidateObjectAcceptsGood(t *testing.T) {
	v := validator(t)
	ms, ps := v.LoadDir(filepath.Join("testdata", "good"))
	if err := ps.Err(); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if ps := v.ValidateObject(m.Object); len(ps) != 0 {
			t.Errorf("%s %s: %s", m.Object.GetObjectKind().GroupVersionKind().Kind, m.Object.GetName(), problemLines(ps))
		}
	}
	data, err := os.ReadFile(filepath.Join("testdata", "good", "all-kinds.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(data), "\n---") {
		doc = strings.TrimSuffix(strings.TrimSpace(doc), "...")
		if !strings.Contains(doc, "kind:") {
			continue
		}
		obj, err := strictDecode([]byte(doc))
		if err != nil {
			t.Errorf("strict decode: %v\n%s", err, doc)
			continue
		}
		if ps := v.ValidateObject(obj); len(ps) != 0 {
			t.Errorf("%s: %s", obj.GetName(), problemLines(ps))
		}
	}
}

// TestValidateObjectServerFields: what the server and its controllers
// write (metadata, status, owner references, Kubernetes' defaults) is no
// error.
func TestValidateObjectServerFields(t *testing.T) {
	v := validator(t)
	now := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Name: name, Namespace: "default", UID: types.UID("6f1c2c1e-0d5a-4d8e-9a51-3b0f7c1f0a11"),
			ResourceVersion: "42", Generation: 3, CreationTimestamp: now,
			DeletionTimestamp: &now, DeletionGracePeriodSeconds: ptr.To[int64](30),
			Labels: map[string]string{"app": "web", "pod-template-hash": "5d4f8c7b9"},
			Annotations: map[string]string{
				"kubectl.kubernetes.io/last-applied-configuration": `{"apiVersion":"apps/v1"}`,
				"deployment.kubernetes.io/revision":                "2",
			},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply,
				APIVersion: "apps/v1", Time: &now, FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{}}`)}}},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web",
				UID: "0a5e3b8c-1f2d-4c6b-8e7a-9d0c1b2a3f45", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
			Finalizers: []string{"flotilla.dev/protect"},
		}
	}
	podSpec := corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyAlways, DNSPolicy: corev1.DNSClusterFirst,
		TerminationGracePeriodSeconds: ptr.To[int64](30), SchedulerName: "default-scheduler",
		SecurityContext: &corev1.PodSecurityContext{}, NodeName: "node1",
		Containers: []corev1.Container{{
			Name: "web", Image: "localhost/busybox:latest", ImagePullPolicy: corev1.PullIfNotPresent,
			TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			Ports: []corev1.ContainerPort{{ContainerPort: 8080, Protocol: corev1.ProtocolTCP, Name: "http"}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/", Port: intstr.FromString("http"), Scheme: corev1.URISchemeHTTP}},
				TimeoutSeconds: 1, PeriodSeconds: 10, SuccessThreshold: 1, FailureThreshold: 3},
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}},
		}},
	}
	template := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}, Spec: podSpec}
	objs := []Object{
		&appsv1.Deployment{ObjectMeta: meta("web"), Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: template, RevisionHistoryLimit: ptr.To[int32](10), ProgressDeadlineSeconds: ptr.To[int32](600),
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxSurge: ptr.To(intstr.FromString("25%")), MaxUnavailable: ptr.To(intstr.FromString("25%"))}},
		}, Status: appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 2, ReadyReplicas: 1, Conditions: []appsv1.DeploymentCondition{{
			Type: appsv1.DeploymentAvailable, Status: corev1.ConditionFalse, LastUpdateTime: now, LastTransitionTime: now, Reason: "MinimumReplicasUnavailable"}}}},
		&corev1.Pod{ObjectMeta: meta("web-5d4f8c7b9-abcde"), Spec: podSpec, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.5",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}},
		&corev1.Service{ObjectMeta: meta("web"), Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.20", ClusterIPs: []string{"10.96.0.20"},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}, IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicySingleStack),
			SessionAffinity: corev1.ServiceAffinityNone, InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyCluster),
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		}},
		&corev1.ConfigMap{ObjectMeta: meta("cfg"), Data: map[string]string{"a": "b"}},
		&corev1.Secret{ObjectMeta: meta("s"), Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"k": []byte("v")}},
	}
	for _, obj := range objs {
		if ps := v.ValidateObject(obj); len(ps) != 0 {
			t.Errorf("%T: %s", obj, problemLines(ps))
		}
	}
	// The object itself is not changed.
	d := objs[0].(*appsv1.Deployment)
	if d.UID == "" || d.Status.Replicas != 2 || d.APIVersion != "" {
		t.Errorf("ValidateObject changed its argument: %+v", d.ObjectMeta)
	}
	// Kinds without a CUE definition are for Go validation.
	if ps := v.ValidateObject(&corev1.Node{}); ps != nil {
		t.Errorf("Node: %v", ps)
	}
	if ps := v.ValidateObject(&discoveryv1.EndpointSlice{}); ps != nil {
		t.Errorf("EndpointSlice: %v", ps)
	}
	// And what is wrong is still wrong, at the JSON path.
	bad := objs[0].(*appsv1.Deployment).DeepCopy()
	bad.Spec.Replicas = ptr.To[int32](-1)
	bad.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort = 70000
	got := fieldReasons(v.ValidateObject(bad))
	want := []string{"spec.replicas: invalid value -1 (out of bound >=0)", "spec.template.spec.containers[0].ports[0].containerPort: invalid value 70000 (out of bound <=65535)"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestValidateObjectConcurrently(t *testing.T) {
	v := validator(t)
	obj, err := strictDecode([]byte(benchDeployment(1)))
	if err != nil {
		t.Fatal(err)
	}
	bad := obj.DeepCopyObject().(*appsv1.Deployment)
	bad.Spec.Replicas = ptr.To[int32](-1)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 20 {
				if i%2 == 0 {
					if ps := v.ValidateObject(obj); len(ps) != 0 {
						t.Errorf("good: %v", ps)
					}
				} else if got := fieldReasons(v.ValidateObject(bad)); len(got) != 1 || !strings.HasPrefix(got[0], "spec.replicas:") {
					t.Errorf("bad: %v", got)
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkValidateObject: one API create or update of a small ConfigMap
// or Deployment, on every core.
//
//	go test -run '^$' -bench BenchmarkValidateObject ./schema/
func BenchmarkValidateObject(b *testing.B) {
	v := validator(b)
	for _, c := range []struct {
		name string
		src  string
	}{{"configmap", benchConfigMap(1)}, {"deployment", benchDeployment(1)}} {
		obj, err := strictDecode([]byte(c.src))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if ps := v.ValidateObject(obj); len(ps) != 0 {
						b.Fatal(ps)
					}
				}
			})
		})
	}
}

// TestValidateObjectGenerateName: a name to be generated is judged by its
// prefix, and reported there.
func TestValidateObjectGenerateName(t *testing.T) {
	v := validator(t)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "web-5d4f8c7b9-"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "busybox"}}}}
	if ps := v.ValidateObject(pod); len(ps) != 0 {
		t.Errorf("good prefix: %v", ps)
	}
	pod.GenerateName = "Web_"
	if got := fieldReasons(v.ValidateObject(pod)); len(got) != 1 || !strings.HasPrefix(got[0], `metadata.generateName: invalid value "Web_" (out of bound a DNS-1123 subdomain`) {
		t.Errorf("bad prefix: %v", got)
	}
	pod.GenerateName = ""
	if got := fieldReasons(v.ValidateObject(pod)); len(got) != 1 || got[0] != "metadata.name: field is required but not present" {
		t.Errorf("no name: %v", got)
	}
}

// TestValidateObjectDuringLoad: a big commit being validated does not hold
// the CUE contexts for its whole length: an API object is validated while
// it runs.
func TestValidateObjectDuringLoad(t *testing.T) {
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	obj, err := strictDecode([]byte(benchConfigMap(1)))
	if err != nil {
		t.Fatal(err)
	}
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		v.Load(benchRepo(3000, benchConfigMap))
	}()
	// Wait until the Load has taken every context.
	testkit.EventuallyTrue(t, "the Load holds every CUE context", time.Minute, func() bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.made == cap(v.pool) && len(v.pool) == 0
	})
	if ps := v.ValidateObject(obj); len(ps) != 0 {
		t.Fatal(ps)
	}
	if n := v.validated.Load(); n >= 3000 {
		t.Errorf("ValidateObject waited for the whole Load (%d documents validated before it)", n-1)
	}
	<-loadDone
}
