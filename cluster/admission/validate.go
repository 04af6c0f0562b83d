package admission

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/flotilla-dev/flotilla/schema"
)

// validate is the validation stage: the Go checks always (they are
// cheap), the CUE schema when asked and the object's body changed.
func (p *Pipeline) validate(w *Write, cue bool) {
	if w.Status {
		return // the store writes only the status: nothing else changes
	}
	w.Errs = append(w.Errs, validateMeta(w.Kind, w.Object)...)
	w.Errs = append(w.Errs, validateKind(w.Object, w.Old)...)
	if w.Old != nil {
		w.comparedRV = w.Old.GetResourceVersion()
		w.sameBody = bodyEqual(w.Old, w.Object)
	}
	if cue && p.validator != nil && w.Kind.FromGit {
		p.checkCUE(w)
	}
}

// checkCUE runs the CUE schema unless the body (everything but metadata
// and status) is what is stored already, or only a pod's binding changed:
// the stored object passed it, and what changed is checked in Go.
func (p *Pipeline) checkCUE(w *Write) {
	if w.Old != nil && w.sameBody {
		return
	}
	w.cueChecked = true
	w.Errs = append(w.Errs, fromProblems(p.validator.ValidateObject(w.Object), w.Errs)...)
}

// bodyUnchanged reports whether w's body was found equal to the stored
// one it is now compared against (a pod's node aside).
func (w *Write) bodyUnchanged() bool {
	return w.Old != nil && w.sameBody && w.comparedRV == w.Old.GetResourceVersion()
}

// recheck is called inside the transaction when the stored object is not
// the one the CUE decision was made against (a write in between): it runs
// the CUE schema if the body now differs. Rare, and the only CUE run that
// holds the writer lock.
func (p *Pipeline) recheck(w *Write) {
	if w.cueChecked || w.Status || p.validator == nil || !w.Kind.FromGit || w.Old == nil {
		return
	}
	if w.comparedRV == w.Old.GetResourceVersion() {
		return
	}
	w.comparedRV = w.Old.GetResourceVersion()
	w.sameBody = bodyEqual(w.Old, w.Object)
	p.checkCUE(w)
}

// bodyEqual reports whether two objects of one kind have the same body:
// every field but metadata and status, a pod's spec.nodeName aside (a
// binding). An object stored before defaults existed is compared
// defaulted too, so that defaults alone never count as a change.
func bodyEqual(old, obj schema.Object) bool {
	if sameBody(old, obj) {
		return true
	}
	d := schema.Copy(old)
	schema.SetDefaults(d)
	return sameBody(d, obj)
}

func sameBody(a, b schema.Object) bool {
	if pa, ok := a.(*corev1.Pod); ok {
		pb, ok := b.(*corev1.Pod)
		if !ok {
			return false
		}
		sa, sb := pa.Spec, pb.Spec // shallow copies: only NodeName is set
		sa.NodeName, sb.NodeName = "", ""
		return equal(sa, sb)
	}
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	if va.Type() != vb.Type() {
		return false
	}
	for i := range va.NumField() {
		switch va.Type().Field(i).Name {
		case "TypeMeta", "ObjectMeta", "Status":
			continue
		}
		if !equal(va.Field(i).Interface(), vb.Field(i).Interface()) {
			return false
		}
	}
	return true
}

// equal is Kubernetes' semantic equality (quantities by value), with
// reflect's plain one first: it is faster, and what it finds equal is.
func equal(a, b any) bool {
	return reflect.DeepEqual(a, b) || apiequality.Semantic.DeepEqual(a, b)
}

// nameRules is how each kind's name is checked, as in Kubernetes.
var nameRules = map[string]apivalidation.ValidateNameFunc{
	"Namespace": apivalidation.ValidateNamespaceName,
	"Service":   apivalidation.NameIsDNS1035Label,
	// RBAC names are path segments ("system:node-proxier").
	"Role":               path.ValidatePathSegmentName,
	"ClusterRole":        path.ValidatePathSegmentName,
	"RoleBinding":        path.ValidatePathSegmentName,
	"ClusterRoleBinding": path.ValidatePathSegmentName,
}

// validateMeta checks metadata as the Kubernetes API server does for every
// kind: name (and generateName), namespace scope, labels, annotations
// (and their total size), owner references and finalizers.
func validateMeta(k schema.Kind, obj schema.Object) field.ErrorList {
	nameFn, ok := nameRules[k.Kind]
	if !ok {
		nameFn = apivalidation.NameIsDNSSubdomain
	}
	errs := apivalidation.ValidateObjectMetaAccessor(obj, k.Namespaced, nameFn, field.NewPath("metadata"))
	if obj.GetName() == "" && obj.GetGenerateName() != "" {
		// The store makes the name from generateName (whose prefix was
		// checked): as Kubernetes, validate the rest before it exists.
		errs = slices.DeleteFunc(errs, func(e *field.Error) bool {
			return e.Type == field.ErrorTypeRequired && e.Field == "metadata.name"
		})
	}
	return errs
}

// validateKind is the Go validation of the kinds the CUE schema does not
// define (Node, Endpoints, EndpointSlice, Event), and of a pod's binding,
// which is all a CUE-less pod update may change.
func validateKind(obj, old schema.Object) field.ErrorList {
	switch o := obj.(type) {
	case *corev1.Pod:
		if o.Spec.NodeName != "" && (old == nil || old.(*corev1.Pod).Spec.NodeName != o.Spec.NodeName) {
			return dnsSubdomain(field.NewPath("spec", "nodeName"), o.Spec.NodeName)
		}
	case *corev1.Secret:
		return validateSecretData(o)
	case *corev1.Node:
		return validateNode(o)
	case *corev1.Endpoints:
		return validateEndpoints(o)
	case *discoveryv1.EndpointSlice:
		return validateEndpointSlice(o)
	case *corev1.Event:
		return validateEvent(o)
	case *coordinationv1.Lease:
		return validateLease(o)
	case *appsv1.Deployment, *appsv1.ReplicaSet, *appsv1.StatefulSet:
		// The selector is also the CUE schema's, but a selector that does
		// not parse must never reach a controller, whoever writes it.
		return validateSelector(obj)
	}
	return nil
}

func dnsSubdomain(p *field.Path, v string) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Subdomain(v) {
		errs = append(errs, field.Invalid(p, v, msg))
	}
	return errs
}

func validateSelector(obj schema.Object) field.ErrorList {
	v := reflect.ValueOf(obj).Elem().FieldByName("Spec").FieldByName("Selector")
	sel, _ := v.Interface().(*metav1.LabelSelector)
	if sel == nil {
		return nil
	}
	return metavalidation.ValidateLabelSelector(sel, metavalidation.LabelSelectorValidationOptions{}, field.NewPath("spec", "selector"))
}

var protocols = []string{string(corev1.ProtocolTCP), string(corev1.ProtocolUDP), string(corev1.ProtocolSCTP)}

func validProtocol(p corev1.Protocol) bool {
	for _, x := range protocols {
		if string(p) == x {
			return true
		}
	}
	return false
}

func validatePort(p *field.Path, port int32) field.ErrorList {
	if port < 1 || port > 65535 {
		return field.ErrorList{field.Invalid(p, port, "must be between 1 and 65535, inclusive")}
	}
	return nil
}

func validateNode(n *corev1.Node) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for i, c := range cidrs {
		if _, err := netip.ParsePrefix(c); err != nil {
			errs = append(errs, field.Invalid(spec.Child("podCIDRs").Index(i), c, "must be a CIDR such as 10.244.1.0/24"))
		}
	}
	if n.Spec.PodCIDR != "" && len(n.Spec.PodCIDRs) > 0 && n.Spec.PodCIDRs[0] != n.Spec.PodCIDR {
		errs = append(errs, field.Invalid(spec.Child("podCIDRs").Index(0), n.Spec.PodCIDRs[0], "must equal spec.podCIDR"))
	}
	for i, t := range n.Spec.Taints {
		p := spec.Child("taints").Index(i)
		for _, msg := range validation.IsQualifiedName(t.Key) {
			errs = append(errs, field.Invalid(p.Child("key"), t.Key, msg))
		}
		switch t.Effect {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			errs = append(errs, field.NotSupported(p.Child("effect"), t.Effect,
				[]string{string(corev1.TaintEffectNoSchedule), string(corev1.TaintEffectPreferNoSchedule), string(corev1.TaintEffectNoExecute)}))
		}
	}
	return errs
}

func validateEndpoints(e *corev1.Endpoints) field.ErrorList {
	var errs field.ErrorList
	for i, ss := range e.Subsets {
		p := field.NewPath("subsets").Index(i)
		for j, a := range append(append([]corev1.EndpointAddress(nil), ss.Addresses...), ss.NotReadyAddresses...) {
			if _, err := netip.ParseAddr(a.IP); err != nil {
				errs = append(errs, field.Invalid(p.Child("addresses").Index(j).Child("ip"), a.IP, "must be a valid IP address"))
			}
		}
		for j, port := range ss.Ports {
			pp := p.Child("ports").Index(j)
			errs = append(errs, validatePort(pp.Child("port"), port.Port)...)
			if !validProtocol(port.Protocol) {
				errs = append(errs, field.NotSupported(pp.Child("protocol"), port.Protocol, protocols))
			}
		}
	}
	return errs
}

func validateEndpointSlice(s *discoveryv1.EndpointSlice) field.ErrorList {
	var errs field.ErrorList
	switch s.AddressType {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
	default:
		errs = append(errs, field.NotSupported(field.NewPath("addressType"), s.AddressType, []string{"IPv4", "IPv6", "FQDN"}))
	}
	if len(s.Endpoints) > 1000 {
		errs = append(errs, field.TooMany(field.NewPath("endpoints"), len(s.Endpoints), 1000))
	}
	for i, ep := range s.Endpoints {
		p := field.NewPath("endpoints").Index(i).Child("addresses")
		if len(ep.Addresses) < 1 || len(ep.Addresses) > 100 {
			errs = append(errs, field.Invalid(p, len(ep.Addresses), "must hold 1 to 100 addresses"))
		}
		for j, a := range ep.Addresses {
			ip, err := netip.ParseAddr(a)
			switch {
			case s.AddressType == discoveryv1.AddressTypeFQDN:
				errs = append(errs, dnsSubdomain(p.Index(j), a)...)
			case err != nil:
				errs = append(errs, field.Invalid(p.Index(j), a, "must be a valid IP address"))
			case ip.Is4() != (s.AddressType == discoveryv1.AddressTypeIPv4):
				errs = append(errs, field.Invalid(p.Index(j), a, fmt.Sprintf("must be an %s address", s.AddressType)))
			}
		}
	}
	if len(s.Ports) > 100 {
		errs = append(errs, field.TooMany(field.NewPath("ports"), len(s.Ports), 100))
	}
	for i, port := range s.Ports {
		p := field.NewPath("ports").Index(i)
		if port.Port != nil {
			errs = append(errs, validatePort(p.Child("port"), *port.Port)...)
		}
		if port.Protocol != nil && !validProtocol(*port.Protocol) {
			errs = append(errs, field.NotSupported(p.Child("protocol"), *port.Protocol, protocols))
		}
		if port.Name != nil && *port.Name != "" {
			for _, msg := range validation.IsDNS1123Label(*port.Name) {
				errs = append(errs, field.Invalid(p.Child("name"), *port.Name, msg))
			}
		}
	}
	return errs
}

func validateEvent(e *corev1.Event) field.ErrorList {
	var errs field.ErrorList
	if ns := e.InvolvedObject.Namespace; ns != "" && ns != e.Namespace {
		errs = append(errs, field.Invalid(field.NewPath("involvedObject", "namespace"), ns, "does not match the event's namespace"))
	}
	switch e.Type {
	case "", corev1.EventTypeNormal, corev1.EventTypeWarning:
	default:
		errs = append(errs, field.NotSupported(field.NewPath("type"), e.Type, []string{corev1.EventTypeNormal, corev1.EventTypeWarning}))
	}
	if len(e.Reason) > 128 {
		errs = append(errs, field.TooLong(field.NewPath("reason"), "", 128))
	}
	if e.Count < 0 {
		errs = append(errs, field.Invalid(field.NewPath("count"), e.Count, "must not be negative"))
	}
	return errs
}

// maxSecretSize is Kubernetes' limit of a Secret's data.
const maxSecretSize = 1 << 20

func validateSecretData(s *corev1.Secret) field.ErrorList {
	var errs field.ErrorList
	total := 0
	for k, v := range s.Data {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(field.NewPath("data").Key(k), k, msg))
		}
		total += len(v)
	}
	for k, v := range s.StringData {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(field.NewPath("stringData").Key(k), k, msg))
		}
		total += len(v)
	}
	if total > maxSecretSize {
		errs = append(errs, field.TooLong(field.NewPath("data"), "", maxSecretSize))
	}
	return errs
}

// validateLease is Kubernetes' Lease validation: a positive duration and
// no negative transition count.
func validateLease(l *coordinationv1.Lease) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	if d := l.Spec.LeaseDurationSeconds; d != nil && *d <= 0 {
		errs = append(errs, field.Invalid(spec.Child("leaseDurationSeconds"), *d, "must be greater than 0"))
	}
	if n := l.Spec.LeaseTransitions; n != nil && *n < 0 {
		errs = append(errs, field.Invalid(spec.Child("leaseTransitions"), *n, "must be greater than or equal to 0"))
	}
	return errs
}
