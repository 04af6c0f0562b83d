package admission_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

var (
	validatorOnce sync.Once
	validatorVal  *schema.Validator
	validatorErr  error
)

func cueValidator(t testing.TB) *schema.Validator {
	t.Helper()
	validatorOnce.Do(func() { validatorVal, validatorErr = schema.NewValidator() })
	if validatorErr != nil {
		t.Fatal(validatorErr)
	}
	return validatorVal
}

// counting is an ObjectValidator that counts its calls.
type counting struct {
	v     admission.ObjectValidator
	calls atomic.Int64
}

func (c *counting) ValidateObject(obj schema.Object) schema.Problems {
	c.calls.Add(1)
	return c.v.ValidateObject(obj)
}

type fixture struct {
	raw  *store.Badger
	cue  *counting
	p    *admission.Pipeline
	user *admission.Store
	ctrl *admission.Store
	ctx  context.Context
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{raw: store.MemoryFor(t), cue: &counting{v: cueValidator(t)}, ctx: context.Background()}
	var err error
	if f.p, err = admission.New(admission.Config{Validator: f.cue}); err != nil {
		t.Fatal(err)
	}
	f.user = f.p.Store(f.raw, admission.User)
	f.ctrl = f.p.Store(f.raw, admission.Cluster)
	return f
}

func obj(t testing.TB, y string) schema.Object {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(strings.TrimSpace(y)))
	if err != nil {
		t.Fatal(err)
	}
	o, err := schema.DecodeAny(js)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

const deployYAML = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: %d
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "localhost/busybox:latest"}]}
`

// causes returns "field: message" of each cause of an Invalid.
func causes(t testing.TB, err error) []string {
	t.Helper()
	var ae *admission.Error
	if !errors.As(err, &ae) {
		t.Fatalf("not an admission error: %v", err)
	}
	st := ae.Status()
	if st.Code != 422 || st.Reason != metav1.StatusReasonInvalid {
		t.Fatalf("status %d %s, want 422 Invalid: %s", st.Code, st.Reason, st.Message)
	}
	var out []string
	for _, c := range ae.Causes() {
		out = append(out, c.Field+": "+c.Message)
	}
	return out
}

func hasCause(cs []string, field string) bool {
	for _, c := range cs {
		if strings.HasPrefix(c, field+":") {
			return true
		}
	}
	return false
}

func TestInvalidObjectRefusedWithFieldAndNothingStored(t *testing.T) {
	f := newFixture(t)
	_, err := f.user.Create(f.ctx, obj(t, fmt.Sprintf(deployYAML, -1)))
	if !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	if cs := causes(t, err); !hasCause(cs, "spec.replicas") {
		t.Fatalf("causes %q lack spec.replicas", cs)
	}
	if _, err := f.raw.Get(f.ctx, "deployments", "default", "web"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("stored anyway: %v", err)
	}
	if f.raw.Revision() != 0 {
		t.Fatalf("revision %d: something was written", f.raw.Revision())
	}
	// Bad metadata is Go's check, for every kind, also without CUE.
	_, err = f.ctrl.Create(f.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "Node_1"}})
	if cs := causes(t, err); !hasCause(cs, "metadata.name") {
		t.Fatalf("causes %q lack metadata.name", cs)
	}
}

func TestDefaultsAppliedAndStored(t *testing.T) {
	f := newFixture(t)
	out, err := f.user.Create(f.ctx, obj(t, fmt.Sprintf(deployYAML, 2)))
	if err != nil {
		t.Fatal(err)
	}
	d := out.(*appsv1.Deployment)
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || *d.Spec.RevisionHistoryLimit != 10 ||
		d.Spec.Template.Spec.Containers[0].ImagePullPolicy != corev1.PullAlways {
		t.Fatalf("not defaulted: %+v", d.Spec)
	}
	got, _ := f.raw.Get(f.ctx, "deployments", "default", "web")
	if *got.(*appsv1.Deployment).Spec.ProgressDeadlineSeconds != 600 {
		t.Fatal("stored object not defaulted")
	}
}

const svcYAML = `
apiVersion: v1
kind: Service
metadata: {name: %s, namespace: default}
spec: {selector: {app: web}, ports: [{port: 8080}]}
`

func TestServicesGetAddressesAtomically(t *testing.T) {
	f := newFixture(t)
	const n = 20
	ips := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := f.user.Create(f.ctx, obj(t, fmt.Sprintf(svcYAML, fmt.Sprintf("s%d", i))))
			if err != nil {
				t.Error(err)
				return
			}
			s := out.(*corev1.Service)
			if s.Spec.Type != corev1.ServiceTypeClusterIP || s.Spec.Ports[0].Protocol != corev1.ProtocolTCP ||
				len(s.Spec.IPFamilies) != 1 || s.Spec.IPFamilies[0] != corev1.IPv4Protocol {
				t.Errorf("service not completed: %+v", s.Spec)
			}
			ips[i] = s.Spec.ClusterIP
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, ip := range ips {
		if ip == "" || seen[ip] {
			t.Fatalf("addresses %v: empty or taken twice", ips)
		}
		seen[ip] = true
	}
	// A requested address that another Service holds is refused by field.
	_, err := f.user.Create(f.ctx, obj(t, `
apiVersion: v1
kind: Service
metadata: {name: clash}
spec: {clusterIP: `+ips[0]+`, ports: [{port: 80}]}`))
	if cs := causes(t, err); !hasCause(cs, "spec.clusterIP") {
		t.Fatalf("causes %q", cs)
	}
	// The cluster IP is immutable.
	cur, _ := f.raw.Get(f.ctx, "services", "default", "s0")
	s := schema.Copy(cur.(*corev1.Service))
	s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.96.9.9", nil
	if _, err := f.user.Update(f.ctx, s); !hasCause(causes(t, err), "spec.clusterIP") {
		t.Fatalf("changed a cluster IP: %v", err)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	f := newFixture(t)
	out, err := f.user.CreateWith(f.ctx, obj(t, fmt.Sprintf(svcYAML, "web")), admission.Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	ip := out.(*corev1.Service).Spec.ClusterIP
	if ip == "" || out.GetUID() == "" {
		t.Fatalf("dry run answer incomplete: %+v", out)
	}
	if _, err := f.raw.Get(f.ctx, "services", "default", "web"); !errors.Is(err, store.ErrNotFound) || f.raw.Revision() != 0 {
		t.Fatalf("dry run wrote: %v, revision %d", err, f.raw.Revision())
	}
	// The address was not held: a real create gets the same one.
	real, err := f.user.Create(f.ctx, obj(t, fmt.Sprintf(svcYAML, "other")))
	if err != nil || real.(*corev1.Service).Spec.ClusterIP != ip {
		t.Fatalf("got %v (%v), want the dry run's %s", real, err, ip)
	}
	// A dry-run delete checks and deletes nothing.
	if _, err := f.user.DeleteWith(f.ctx, "services", "default", "other", store.DeleteOptions{}, admission.Options{DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.raw.Get(f.ctx, "services", "default", "other"); err != nil {
		t.Fatalf("dry-run delete deleted: %v", err)
	}
	// A dry run refused is refused like the real thing.
	if _, err := f.user.CreateWith(f.ctx, obj(t, fmt.Sprintf(deployYAML, -3)), admission.Options{DryRun: true}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("dry run of an invalid object: %v", err)
	}
}

func TestSecretStringDataMerged(t *testing.T) {
	f := newFixture(t)
	out, err := f.user.Create(f.ctx, obj(t, `
apiVersion: v1
kind: Secret
metadata: {name: creds}
data: {user: YWRtaW4=, password: b2xk}
stringData: {password: hunter2}`))
	if err != nil {
		t.Fatal(err)
	}
	s := out.(*corev1.Secret)
	if s.StringData != nil || string(s.Data["password"]) != "hunter2" || string(s.Data["user"]) != "admin" || s.Type != corev1.SecretTypeOpaque {
		t.Fatalf("secret = %+v", s)
	}
	data, _ := schema.Encode(s)
	if strings.Contains(string(data), "hunter2") || strings.Contains(string(data), "stringData") {
		t.Fatalf("stored in plain text: %s", data)
	}
}

func TestImmutableFields(t *testing.T) {
	f := newFixture(t)
	if _, err := f.user.Create(f.ctx, obj(t, fmt.Sprintf(deployYAML, 1))); err != nil {
		t.Fatal(err)
	}
	cur, _ := f.raw.Get(f.ctx, "deployments", "default", "web")
	d := schema.Copy(cur.(*appsv1.Deployment))
	d.Spec.Selector.MatchLabels = map[string]string{"app": "other"}
	d.Spec.Template.Labels = map[string]string{"app": "other"}
	if _, err := f.user.Update(f.ctx, d); !hasCause(causes(t, err), "spec.selector") {
		t.Fatalf("selector changed: %v", err)
	}
	// A change that is allowed passes, and bumps the generation.
	d = schema.Copy(cur.(*appsv1.Deployment))
	*d.Spec.Replicas = 4
	out, err := f.user.Update(f.ctx, d)
	if err != nil || out.GetGeneration() != 2 {
		t.Fatalf("update: %v, generation %d", err, out.GetGeneration())
	}
	// Pods: bound once; other spec changes refused; images may change.
	p := obj(t, `
apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {containers: [{name: a, image: "busybox:1"}]}`)
	if _, err := f.user.Create(f.ctx, p); err != nil {
		t.Fatal(err)
	}
	get := func() *corev1.Pod {
		o, _ := f.raw.Get(f.ctx, "pods", "default", "p")
		return schema.Copy(o.(*corev1.Pod))
	}
	bind := get()
	bind.Spec.NodeName = "n1"
	if _, err := f.ctrl.Update(f.ctx, bind); err != nil {
		t.Fatalf("binding refused: %v", err)
	}
	move := get()
	move.Spec.NodeName = "n2"
	if _, err := f.ctrl.Update(f.ctx, move); !hasCause(causes(t, err), "spec.nodeName") {
		t.Fatalf("rebinding: %v", err)
	}
	img := get()
	img.Spec.Containers[0].Image = "busybox:2"
	if _, err := f.user.Update(f.ctx, img); err != nil {
		t.Fatalf("image change refused: %v", err)
	}
	cmd := get()
	cmd.Spec.Containers[0].Command = []string{"sh"}
	if _, err := f.user.Update(f.ctx, cmd); !hasCause(causes(t, err), "spec") {
		t.Fatalf("command change: %v", err)
	}
}

func gitDeployment(t testing.TB) schema.Object {
	d := obj(t, fmt.Sprintf(deployYAML, 2))
	d.SetAnnotations(map[string]string{schema.AnnotationManagedBy: schema.ManagedByGit, schema.AnnotationSource: "apps/web.yaml:1"})
	return d
}

func TestGitOwnership(t *testing.T) {
	f := newFixture(t)
	git := f.p.Store(f.raw, admission.Git)
	if _, err := f.user.Create(f.ctx, gitDeployment(t)); !errors.Is(err, admission.ErrForbidden) {
		t.Fatalf("user marked an object as Git's: %v", err)
	}
	if _, err := git.Create(f.ctx, gitDeployment(t)); err != nil {
		t.Fatal(err)
	}
	cur, _ := f.raw.Get(f.ctx, "deployments", "default", "web")
	d := schema.Copy(cur.(*appsv1.Deployment))
	*d.Spec.Replicas = 9
	_, err := f.user.Update(f.ctx, d)
	var ae *admission.Error
	if !errors.As(err, &ae) || ae.Status().Code != 403 || !strings.Contains(err.Error(), "managed by Git (apps/web.yaml)") {
		t.Fatalf("user update of Git's object: %v", err)
	}
	if _, err := f.user.Delete(f.ctx, "deployments", "default", "web", store.DeleteOptions{}); !errors.Is(err, admission.ErrForbidden) {
		t.Fatalf("user delete of Git's object: %v", err)
	}
	// The cluster may not change Git's fields either...
	if _, err := f.ctrl.Update(f.ctx, d); !errors.Is(err, admission.ErrForbidden) {
		t.Fatalf("controller changed Git's replicas: %v", err)
	}
	// ...but its status and system annotations, yes.
	d = schema.Copy(cur.(*appsv1.Deployment))
	d.Annotations["deployment.kubernetes.io/revision"] = "1"
	if _, err := f.ctrl.Update(f.ctx, d); err != nil {
		t.Fatalf("controller's annotation refused: %v", err)
	}
	st := schema.Copy(cur.(*appsv1.Deployment))
	st.ResourceVersion = ""
	st.Status.ReadyReplicas = 2
	if _, err := f.user.UpdateStatus(f.ctx, st); err != nil {
		t.Fatalf("status write refused: %v", err)
	}
}

// TestOnlyChangedBodiesRunCUE: a status write, a metadata-only update and
// a binding do not run the CUE schema; a create and a spec change do.
func TestOnlyChangedBodiesRunCUE(t *testing.T) {
	f := newFixture(t)
	p := obj(t, `
apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {containers: [{name: a, image: "busybox:1"}]}`)
	out, err := f.ctrl.Create(f.ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if n := f.cue.calls.Load(); n != 1 {
		t.Fatalf("create ran CUE %d times", n)
	}
	pod := schema.Copy(out.(*corev1.Pod))
	pod.Labels = map[string]string{"a": "b"}
	if out, err = f.ctrl.Update(f.ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod = schema.Copy(out.(*corev1.Pod))
	pod.Status.Phase = corev1.PodRunning
	if out, err = f.ctrl.UpdateStatus(f.ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod = schema.Copy(out.(*corev1.Pod))
	_, err = f.ctrl.Txn(f.ctx, func(tx store.Tx) error {
		pod.Spec.NodeName = "n1"
		_, err := tx.Update(pod)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := f.cue.calls.Load(); n != 1 {
		t.Fatalf("metadata, status and binding updates ran CUE (%d calls in all)", n)
	}
	// A bad binding is still refused, in Go.
	q := obj(t, `
apiVersion: v1
kind: Pod
metadata: {name: q}
spec: {containers: [{name: a, image: "busybox:1"}]}`)
	out, err = f.ctrl.Create(f.ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	bad := schema.Copy(out.(*corev1.Pod))
	bad.Spec.NodeName = "Not A Node"
	_, err = f.ctrl.Txn(f.ctx, func(tx store.Tx) error { _, err := tx.Update(bad); return err })
	if !hasCause(causes(t, err), "spec.nodeName") {
		t.Fatalf("bad node name: %v", err)
	}
	// A batch of writes in a Txn is admitted: one bad write rolls back all.
	rev := f.raw.Revision()
	_, err = f.ctrl.Txn(f.ctx, func(tx store.Tx) error {
		if _, err := tx.Create(obj(t, fmt.Sprintf(deployYAML, 1))); err != nil {
			return err
		}
		_, err := tx.Create(obj(t, strings.Replace(fmt.Sprintf(deployYAML, -1), "name: web", "name: bad", 1)))
		return err
	})
	if !errors.Is(err, store.ErrInvalid) || f.raw.Revision() != rev {
		t.Fatalf("batch with a bad write: %v, revision %d → %d", err, rev, f.raw.Revision())
	}
}

func TestConflictBeforeValidation(t *testing.T) {
	f := newFixture(t)
	if _, err := f.user.Create(f.ctx, obj(t, fmt.Sprintf(deployYAML, 1))); err != nil {
		t.Fatal(err)
	}
	d := obj(t, fmt.Sprintf(deployYAML, -1))
	d.SetResourceVersion("999")
	if _, err := f.user.Update(f.ctx, d); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale invalid update: %v, want a conflict", err)
	}
	if _, err := f.user.Update(f.ctx, obj(t, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: nope}
spec: {}`)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of a missing object: %v", err)
	}
}

func TestDecode(t *testing.T) {
	k, _ := schema.KindByName("Deployment")
	pk, _ := schema.KindByName("Pod")
	for _, c := range []struct {
		name  string
		kind  schema.Kind
		body  string
		mode  admission.FieldValidation
		code  int32
		field string
	}{
		{"not json", k, `{"spec":`, admission.Strict, 400, ""},
		{"unknown field", k, `{"metadata":{"name":"w"},"spec":{"replica":3}}`, admission.Strict, 422, "spec.replica"},
		{"wrong case is unknown", k, `{"metadata":{"name":"w"},"spec":{"Replicas":3}}`, admission.Strict, 422, "spec.Replicas"},
		{"duplicate field", k, `{"metadata":{"name":"w","name":"x"}}`, admission.Strict, 422, "metadata.name"},
		{"fraction", k, `{"metadata":{"name":"w"},"spec":{"replicas":1.5}}`, admission.Ignore, 422, "spec.replicas"},
		{"bad quantity", pk, `{"metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"b"},{"name":"c","image":"d","resources":{"limits":{"memory":"lots"}}}]}}`, admission.Strict, 422, "spec.containers[1].resources.limits[memory]"},
		{"unknown field warned", k, `{"metadata":{"name":"w"},"spec":{"replica":3}}`, admission.Warn, 0, ""},
		{"unknown field ignored", k, `{"metadata":{"name":"w"},"spec":{"replica":3}}`, admission.Ignore, 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			obj, warnings, err := admission.Decode(c.kind, []byte(c.body), c.mode)
			if c.code == 0 {
				if err != nil || obj == nil {
					t.Fatalf("refused: %v", err)
				}
				if (c.mode == admission.Warn) != (len(warnings) > 0) {
					t.Fatalf("warnings %q in mode %s", warnings, c.mode)
				}
				return
			}
			var se apierrors.APIStatus
			if !errors.As(err, &se) || se.Status().Code != c.code {
				t.Fatalf("err = %v, want code %d", err, c.code)
			}
			if c.field != "" && !hasCause(causes(t, err), c.field) {
				t.Fatalf("causes %q lack %s", causes(t, err), c.field)
			}
		})
	}
}

// TestGenerateName: an object named by the store from generateName passes
// validation as Kubernetes' does (a bad prefix does not).
func TestGenerateName(t *testing.T) {
	f := newFixture(t)
	out, err := f.user.Create(f.ctx, obj(t, `
apiVersion: v1
kind: Pod
metadata: {generateName: web-}
spec: {containers: [{name: a, image: "busybox:1"}]}`))
	if err != nil || !strings.HasPrefix(out.GetName(), "web-") || len(out.GetName()) != len("web-")+5 {
		t.Fatalf("generateName: %v, %v", out, err)
	}
	_, err = f.user.Create(f.ctx, obj(t, `
apiVersion: v1
kind: Pod
metadata: {generateName: Web_}
spec: {containers: [{name: a, image: "busybox:1"}]}`))
	if !hasCause(causes(t, err), "metadata.generateName") {
		t.Fatalf("bad generateName: %v", err)
	}
}

// TestGoChecksOfKindsWithoutCUE: the kinds the CUE schema does not define
// are checked in Go, by field.
func TestGoChecksOfKindsWithoutCUE(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ yaml, field string }{
		{`
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.244.1.0/33}`, "spec.podCIDRs[0]"},
		{`
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {taints: [{key: a, effect: Sometimes}]}`, "spec.taints[0].effect"},
		{`
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: not-an-ip}], ports: [{port: 80}]}]`, "subsets[0].addresses[0].ip"},
		{`
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 10.0.0.1}], ports: [{port: 70000}]}]`, "subsets[0].ports[0].port"},
		{`
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1}
addressType: IPv4
endpoints: [{addresses: ["fd00::1"]}]`, "endpoints[0].addresses[0]"},
		{`
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1}
addressType: IPv5
endpoints: []`, "addressType"},
		{`
apiVersion: v1
kind: Event
metadata: {name: e1, namespace: default}
involvedObject: {kind: Pod, name: p, namespace: other}
type: Loud`, "involvedObject.namespace"},
		{`
apiVersion: v1
kind: Secret
metadata: {name: s}
data: {"bad key": YQ==}`, "data[bad key]"},
	} {
		_, err := f.ctrl.Create(f.ctx, obj(t, c.yaml))
		if !hasCause(causes(t, err), c.field) {
			t.Errorf("%s: causes %q lack %s", strings.TrimSpace(c.yaml), causes(t, err), c.field)
		}
	}
	if f.raw.Revision() != 0 {
		t.Fatal("something invalid was stored")
	}
}
