package admission

import (
	"fmt"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// ownership keeps Git the source of truth: users may not create, change
// or delete an object from Git (its status aside), nor mark an object as
// Git's; the cluster (controllers, agents) may write such an object's
// status and the fields the cluster owns, never Git's fields.
type ownership struct{}

func (ownership) name() string { return "ownership" }

func gitOwned(obj schema.Object) bool {
	return obj != nil && obj.GetAnnotations()[schema.AnnotationManagedBy] == schema.ManagedByGit
}

func (ownership) admit(_ Reader, ws []*Write) error {
	for _, w := range ws {
		if w.Origin == Git || w.Status || w.Refused() {
			continue
		}
		switch {
		case w.Origin == User && gitOwned(w.Old):
			w.deny(refuseGit(w.Kind, w.Old))
		case gitOwned(w.Object) && !gitOwned(w.Old):
			w.deny(Forbidden(w.Kind, w.name(), fmt.Sprintf("%s %q may not be marked %s=%s: only objects that a Git commit created are Git's; remove the annotation",
				w.Kind.Resource, w.name(), schema.AnnotationManagedBy, schema.ManagedByGit)))
		case w.Origin == Cluster && w.Op == Update && gitOwned(w.Old) && !sameGitFields(w.Old, w.Object):
			w.deny(Forbidden(w.Kind, w.name(), fmt.Sprintf("%s %q is managed by Git: the cluster may change only its status, system annotations, owner references, finalizers and bindings",
				w.Kind.Resource, w.name())))
		}
	}
	return nil
}

// sameGitFields reports whether an update by the cluster leaves every
// field that Git sets as stored: it may change the status (kept by the
// store anyway), annotations in system domains other than Flotilla's Git
// bookkeeping, owner references, finalizers, and the bindings the cluster
// makes (a pod's node, a volume's claim, a claim's volume, a Service's
// addresses).
func sameGitFields(old, obj schema.Object) bool {
	a, b := schema.Copy(old), schema.Copy(obj)
	schema.SetDefaults(a)
	schema.SetDefaults(b)
	maskCluster(a)
	maskCluster(b)
	return apiequality.Semantic.DeepEqual(a, b)
}

var gitBookkeeping = map[string]bool{
	schema.AnnotationManagedBy: true, schema.AnnotationSource: true, schema.AnnotationAppliedHash: true,
}

func maskCluster(o schema.Object) {
	o.SetResourceVersion("")
	o.SetGeneration(0)
	o.SetUID("")
	o.SetCreationTimestamp(metav1.Time{})
	o.SetDeletionTimestamp(nil)
	o.SetDeletionGracePeriodSeconds(nil)
	o.SetManagedFields(nil)
	o.SetOwnerReferences(nil)
	o.SetFinalizers(nil)
	ann := map[string]string{}
	for k, v := range o.GetAnnotations() {
		if gitBookkeeping[k] || !schema.SystemAnnotation(k) {
			ann[k] = v
		}
	}
	o.SetAnnotations(ann)
	if st := reflect.ValueOf(o).Elem().FieldByName("Status"); st.IsValid() && st.CanSet() {
		st.Set(reflect.Zero(st.Type()))
	}
	switch x := o.(type) {
	case *corev1.Pod:
		x.Spec.NodeName = ""
	case *corev1.PersistentVolume:
		x.Spec.ClaimRef = nil
	case *corev1.PersistentVolumeClaim:
		x.Spec.VolumeName = ""
	case *corev1.Service:
		x.Spec.ClusterIP, x.Spec.ClusterIPs, x.Spec.IPFamilies = "", nil, nil
		for i := range x.Spec.Ports {
			x.Spec.Ports[i].NodePort = 0
		}
	}
}

// secrets merges a Secret's stringData into its data (stringData wins,
// as in Kubernetes) and drops it: it is never stored nor served.
type secrets struct{}

func (secrets) name() string { return "secrets" }

func (secrets) admit(_ Reader, ws []*Write) error {
	for _, w := range ws {
		s, ok := w.Object.(*corev1.Secret)
		if !ok || w.Status || w.Refused() || s.StringData == nil {
			continue
		}
		if s.Data == nil {
			s.Data = make(map[string][]byte, len(s.StringData))
		}
		for k, v := range s.StringData {
			s.Data[k] = []byte(v)
		}
		s.StringData = nil
	}
	return nil
}

// services gives Services their cluster IPs and node ports (ipalloc),
// checks them against every other stored Service, and sets the address
// families. The writes of one batch are allocated together, so a commit
// may rename a Service and keep its address by asking for it; two
// concurrent API creates are two transactions of the single writer and
// never get one address.
type services struct{ alloc *ipalloc.Allocator }

func (services) name() string { return "services" }

func (s services) admit(r Reader, ws []*Write) error {
	var reqs []ipalloc.Request
	var owners []*Write
	leaving := map[string]bool{} // services these writes replace or delete
	for _, w := range ws {
		if w.Kind.Resource != "services" || w.Status || w.Refused() {
			continue
		}
		if w.Old != nil {
			leaving[w.Old.GetNamespace()+"/"+w.Old.GetName()] = true
		}
		svc, ok := w.Object.(*corev1.Service)
		if !ok {
			continue // a delete
		}
		ns := svc.Namespace
		if ns == "" {
			ns = "default"
		}
		leaving[ns+"/"+svc.Name] = true
		req := ipalloc.Request{Service: svc}
		if old, ok := w.Old.(*corev1.Service); ok {
			req.Stored = old
		}
		reqs = append(reqs, req)
		owners = append(owners, w)
	}
	if len(reqs) == 0 {
		return nil
	}
	objs, err := r.List("services", store.ListOptions{})
	if err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	var existing []*corev1.Service
	for _, o := range objs {
		if svc, ok := o.(*corev1.Service); ok && !leaving[svc.Namespace+"/"+svc.Name] {
			existing = append(existing, svc)
		}
	}
	for i, ps := range s.alloc.AdmitEach(existing, reqs) {
		w := owners[i]
		for _, p := range ps {
			w.Errs = append(w.Errs, causeError(field.ErrorTypeInvalid, p.Field, p.Reason))
		}
		if len(ps) == 0 {
			w.Errs = append(w.Errs, s.families(reqs[i].Service)...)
		}
	}
	return nil
}

// families sets and checks spec.ipFamilies and spec.ipFamilyPolicy: a
// Flotilla cluster is single-stack, of its service CIDR's family.
func (s services) families(svc *corev1.Service) field.ErrorList {
	spec := &svc.Spec
	if spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	family := corev1.IPv4Protocol
	if s.alloc.ServiceCIDR().Addr().Is6() {
		family = corev1.IPv6Protocol
	}
	path := field.NewPath("spec")
	var errs field.ErrorList
	if p := spec.IPFamilyPolicy; p != nil && *p == corev1.IPFamilyPolicyRequireDualStack {
		errs = append(errs, field.Invalid(path.Child("ipFamilyPolicy"), *p,
			fmt.Sprintf("this cluster is single-stack (service CIDR %s): use SingleStack or PreferDualStack", s.alloc.ServiceCIDR())))
	}
	switch {
	case len(spec.IPFamilies) == 0:
		spec.IPFamilies = []corev1.IPFamily{family}
	case len(spec.IPFamilies) > 1:
		errs = append(errs, field.TooMany(path.Child("ipFamilies"), len(spec.IPFamilies), 1))
	case spec.IPFamilies[0] != family:
		errs = append(errs, field.NotSupported(path.Child("ipFamilies").Index(0), spec.IPFamilies[0], []string{string(family)}))
	}
	return errs
}
