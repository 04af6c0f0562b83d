package admission

import (
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// DefaultPodSecurity is the Pod Security level of a namespace without the
// pod-security.kubernetes.io labels: baseline, which refuses hostPath
// volumes, privileged containers, host namespaces and host ports, added
// capabilities beyond the default set and unsafe sysctls.
const DefaultPodSecurity = psaapi.LevelBaseline

// podSecurity is Pod Security admission with Kubernetes' own policy
// library (k8s.io/pod-security-admission's policy checks and label
// parsing): a namespace chooses its levels with the standard labels
// pod-security.kubernetes.io/enforce, warn and audit (and their
// -version); namespaces without them are enforced at the pipeline's
// default (baseline unless configured) and warned at none. The library's admission package is
// not used: it brings client-go's whole typed clientset (+20 MB of
// binary) for a namespace getter; the glue here is what it does, over
// the transaction's reads.
//
// Pods are judged as in Kubernetes: on create, and on an update that
// changes a container or an image. Flotilla goes one step further for the
// workloads with a pod template (Deployment, ReplicaSet, StatefulSet): a
// template that the namespace's enforce level forbids is refused too,
// where Kubernetes only warns and then fails every pod the controller
// creates. In a GitOps cluster the commit is the moment to say so: it is
// refused whole, located, and the last good state keeps running.
//
// Refusals are 422 Invalid, the PSA message as the reason of a cause at
// the pod spec (Kubernetes answers 403 Forbidden with the same message;
// Invalid locates the pod spec for a commit, as every other refusal of
// the pipeline does). Warn-level findings are warnings on the write:
// Warning headers for kubectl, warnings in the sync status for Git. The
// audit level is parsed and checked like the others; its findings are
// not recorded (Flotilla's audit log records requests, not annotations).
type podSecurity struct {
	defaults  psaapi.Policy
	evaluator policy.Evaluator
}

func newPodSecurity(defaultLevel psaapi.Level) (*podSecurity, error) {
	if defaultLevel == "" {
		defaultLevel = DefaultPodSecurity
	}
	if !defaultLevel.Valid() {
		return nil, fmt.Errorf("pod security level %q: must be privileged, baseline or restricted", defaultLevel)
	}
	ev, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		return nil, fmt.Errorf("pod security checks: %w", err)
	}
	// Warn and audit default to privileged (nothing to say) as in
	// Kubernetes: a namespace asks for them with their labels, and an
	// enforce label raises warn with it.
	latest := psaapi.LatestVersion()
	none := psaapi.LevelVersion{Level: psaapi.LevelPrivileged, Version: latest}
	return &podSecurity{
		defaults:  psaapi.Policy{Enforce: psaapi.LevelVersion{Level: defaultLevel, Version: latest}, Audit: none, Warn: none},
		evaluator: ev,
	}, nil
}

func (*podSecurity) name() string { return "PodSecurity" }

func (p *podSecurity) admit(r Reader, ws []*Write) error {
	nss := namespaces{r: r, batch: ws}
	for _, w := range ws {
		if w.Refused() || w.Status || w.Op == Delete {
			continue
		}
		var err error
		switch obj := w.Object.(type) {
		case *corev1.Namespace:
			err = p.admitNamespace(r, w, obj)
		case *corev1.Pod:
			if old, ok := w.Old.(*corev1.Pod); ok && !significantPodUpdate(obj, old) {
				continue
			}
			err = p.admitPod(nss, w, &obj.ObjectMeta, &obj.Spec)
		default:
			meta, spec := podTemplate(w.Object)
			if spec == nil {
				continue
			}
			if oldMeta, oldSpec := podTemplate(w.Old); oldSpec != nil &&
				apiequality.Semantic.DeepEqual(spec, oldSpec) && apiequality.Semantic.DeepEqual(meta.Annotations, oldMeta.Annotations) {
				continue // the template is as admitted before
			}
			err = p.admitPod(nss, w, meta, spec)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// admitPod judges a pod (or a template) by its namespace's policy:
// refused when the enforce level forbids it, warned at the warn level.
func (p *podSecurity) admitPod(nss namespaces, w *Write, meta *metav1.ObjectMeta, spec *corev1.PodSpec) error {
	ns, err := nss.get(w.Object.GetNamespace())
	if err != nil {
		return err
	}
	pol, _ := psaapi.PolicyToEvaluate(ns.Labels, p.defaults) // invalid labels: the defaults (refused on the namespace itself)
	if pol.Enforce.Level == psaapi.LevelPrivileged && pol.Warn.Level == psaapi.LevelPrivileged {
		return nil
	}
	enforce := policy.AggregateCheckResults(p.evaluator.EvaluatePod(pol.Enforce, meta, spec))
	if !enforce.Allowed {
		w.Errs = append(w.Errs, causeError(field.ErrorTypeForbidden, podSpecField(w.Kind.Kind),
			fmt.Sprintf("violates PodSecurity %q: %s", pol.Enforce.String(), enforce.ForbiddenDetail())))
		return nil
	}
	if pol.Warn == pol.Enforce {
		return nil
	}
	if warn := policy.AggregateCheckResults(p.evaluator.EvaluatePod(pol.Warn, meta, spec)); !warn.Allowed {
		w.Warnings = append(w.Warnings, fmt.Sprintf("would violate PodSecurity %q: %s", pol.Warn.String(), warn.ForbiddenDetail()))
	}
	return nil
}

// admitNamespace refuses pod-security labels that do not parse (a new
// namespace, or changed labels), and warns of the namespace's pods that a
// raised enforce level would refuse (they keep running, as in
// Kubernetes).
func (p *podSecurity) admitNamespace(r Reader, w *Write, ns *corev1.Namespace) error {
	pol, errs := psaapi.PolicyToEvaluate(ns.Labels, p.defaults)
	old, _ := w.Old.(*corev1.Namespace)
	var oldPol psaapi.Policy
	var oldErrs field.ErrorList
	if old != nil {
		oldPol, oldErrs = psaapi.PolicyToEvaluate(old.Labels, p.defaults)
	}
	if len(errs) > 0 && (old == nil || !apiequality.Semantic.DeepEqual(errs, oldErrs)) {
		for _, e := range errs {
			w.Errs = append(w.Errs, causeError(field.ErrorTypeInvalid, e.Field, e.ErrorBody()))
		}
		return nil
	}
	if old == nil || r == nil || pol.Enforce == oldPol.Enforce || pol.Enforce.Level == psaapi.LevelPrivileged ||
		(pol.Enforce.Version == oldPol.Enforce.Version && psaapi.CompareLevels(pol.Enforce.Level, oldPol.Enforce.Level) < 1) {
		return nil
	}
	objs, err := r.List("pods", store.ListOptions{Namespace: ns.Name})
	if err != nil {
		return err
	}
	found := map[string][]string{} // finding → pods
	var order []string
	for _, o := range objs {
		pod, ok := o.(*corev1.Pod)
		if !ok {
			continue
		}
		res := policy.AggregateCheckResults(p.evaluator.EvaluatePod(pol.Enforce, &pod.ObjectMeta, &pod.Spec))
		if res.Allowed {
			continue
		}
		d := res.ForbiddenDetail()
		if found[d] == nil {
			order = append(order, d)
		}
		found[d] = append(found[d], pod.Name)
	}
	if len(order) > 0 {
		w.Warnings = append(w.Warnings, fmt.Sprintf("existing pods in namespace %q violate the new PodSecurity enforce level %q", ns.Name, pol.Enforce.String()))
	}
	for _, d := range order {
		names := found[d]
		msg := names[0]
		if len(names) > 1 {
			msg = fmt.Sprintf("%s (and %d other pods)", names[0], len(names)-1)
		}
		w.Warnings = append(w.Warnings, msg+": "+d)
	}
	return nil
}

// significantPodUpdate is Kubernetes' rule: a pod update is judged again
// only when it adds or removes containers or changes an image (the other
// fields the policy reads are immutable).
func significantPodUpdate(pod, old *corev1.Pod) bool {
	if len(pod.Spec.Containers) != len(old.Spec.Containers) || len(pod.Spec.InitContainers) != len(old.Spec.InitContainers) ||
		len(pod.Spec.EphemeralContainers) != len(old.Spec.EphemeralContainers) {
		return true
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Image != old.Spec.Containers[i].Image {
			return true
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Image != old.Spec.InitContainers[i].Image {
			return true
		}
	}
	for i := range pod.Spec.EphemeralContainers {
		if pod.Spec.EphemeralContainers[i].Image != old.Spec.EphemeralContainers[i].Image {
			return true
		}
	}
	return false
}

// podTemplate is a workload's pod template; nil for other objects.
func podTemplate(obj schema.Object) (*metav1.ObjectMeta, *corev1.PodSpec) {
	var t *corev1.PodTemplateSpec
	switch x := obj.(type) {
	case *appsv1.Deployment:
		t = &x.Spec.Template
	case *appsv1.ReplicaSet:
		t = &x.Spec.Template
	case *appsv1.StatefulSet:
		t = &x.Spec.Template
	case *appsv1.DaemonSet:
		t = &x.Spec.Template
	case *batchv1.Job:
		t = &x.Spec.Template
	case *corev1.ReplicationController:
		t = x.Spec.Template
	case *corev1.PodTemplate:
		t = &x.Template
	}
	if t == nil {
		return nil, nil
	}
	return &t.ObjectMeta, &t.Spec
}

func podSpecField(kind string) string {
	if kind == "Pod" {
		return "spec"
	}
	return "spec.template.spec"
}

// namespaces reads a namespace's labels: from the batch when it writes the
// namespace (a commit that labels a namespace and adds its pods is judged
// by the new labels), else from the store. A namespace that does not
// exist has no labels: the defaults apply.
type namespaces struct {
	r     Reader
	batch []*Write
}

func (n namespaces) get(name string) (*corev1.Namespace, error) {
	if name == "" {
		name = "default"
	}
	for _, w := range n.batch {
		if ns, ok := w.Object.(*corev1.Namespace); ok && ns.Name == name && !w.Refused() {
			return ns, nil
		}
	}
	none := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if n.r == nil {
		return none, nil
	}
	obj, err := n.r.Get("namespaces", "", name)
	if errors.Is(err, store.ErrNotFound) {
		return none, nil
	}
	if err != nil {
		return nil, err
	}
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return nil, fmt.Errorf("namespace %q: stored as %T", name, obj)
	}
	return ns, nil
}

// VetPodSecurity judges the pods and pod templates of a set of manifests
// as the cluster would admit them, for `flotilla vet`: the namespaces'
// levels come from the Namespace manifests in the set (the default level
// for the others). Enforce-level findings are errors, warn-level ones
// warnings.
func VetPodSecurity(ms []schema.Manifest, defaultLevel psaapi.Level) (schema.Problems, error) {
	p, err := newPodSecurity(defaultLevel)
	if err != nil {
		return nil, err
	}
	ws := make([]*Write, 0, len(ms))
	for _, m := range ms {
		k, err := schema.KindOf(m.Object)
		if err != nil {
			ws = append(ws, nil)
			continue
		}
		w := &Write{Op: Create, Kind: k, Object: schema.Copy(m.Object), Origin: Git}
		if k.Namespaced && w.Object.GetNamespace() == "" {
			w.Object.SetNamespace("default")
		}
		ws = append(ws, w)
	}
	batch := make([]*Write, 0, len(ws))
	for _, w := range ws {
		if w != nil {
			batch = append(batch, w)
		}
	}
	if err := p.admit(nil, batch); err != nil {
		return nil, err
	}
	var out schema.Problems
	for i, w := range ws {
		if w == nil {
			continue
		}
		for _, r := range w.Reasons() {
			out = append(out, schema.Problem{File: ms[i].File, Line: ms[i].Line, Field: r.Field, Reason: r.Reason})
		}
		for _, msg := range w.Warnings {
			out = append(out, schema.Problem{File: ms[i].File, Line: ms[i].Line, Field: podSpecField(w.Kind.Kind), Reason: msg, Warning: true})
		}
	}
	return out, nil
}
