package pvbinding

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Why a volume does not take a claim, as counted in FindVolume's
// explanation.
const (
	whyDeleting     = "being deleted"
	whyReleased     = "released by a deleted claim"
	whyOtherClaim   = "bound to another claim"
	whyClass        = "of another storage class"
	whyTooSmall     = "too small"
	whyAccessModes  = "lacking a requested access mode"
	whyVolumeMode   = "of another volumeMode"
	whySelector     = "not matching the claim's selector"
	whyNodeAffinity = "not reachable from the selected node"
)

var whyOrder = []string{whyTooSmall, whyAccessModes, whyVolumeMode, whySelector, whyNodeAffinity, whyOtherClaim, whyReleased, whyClass, whyDeleting}

// Request is the storage a claim asks for (spec.resources.requests.storage;
// zero when unset).
func Request(claim *corev1.PersistentVolumeClaim) resource.Quantity {
	return claim.Spec.Resources.Requests[corev1.ResourceStorage]
}

// Capacity is a volume's storage capacity.
func Capacity(pv *corev1.PersistentVolume) resource.Quantity {
	return pv.Spec.Capacity[corev1.ResourceStorage]
}

// HasAccessModes reports whether a volume offers every access mode the
// claim requests.
func HasAccessModes(claim *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) bool {
	for _, want := range claim.Spec.AccessModes {
		found := false
		for _, have := range pv.Spec.AccessModes {
			if have == want {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func volumeMode(m *corev1.PersistentVolumeMode) corev1.PersistentVolumeMode {
	if m == nil || *m == "" {
		return corev1.PersistentVolumeFilesystem
	}
	return *m
}

// Satisfies says why pv cannot serve claim as its class asks ("" when it
// can): capacity at least the request, the class, every requested access
// mode, the volume mode. It ignores the claim's selector and who the
// volume is bound to: it is the check of a binding the user asked for
// (spec.volumeName), which Kubernetes makes too.
func Satisfies(claim *corev1.PersistentVolumeClaim, class string, pv *corev1.PersistentVolume) string {
	req, capa := Request(claim), Capacity(pv)
	switch {
	case VolumeClass(pv) != class:
		return fmt.Sprintf("volume %s is of storage class %q, the claim asks for %q", pv.Name, VolumeClass(pv), class)
	case capa.Cmp(req) < 0:
		return fmt.Sprintf("volume %s has %s, the claim requests %s", pv.Name, capa.String(), req.String())
	case !HasAccessModes(claim, pv):
		return fmt.Sprintf("volume %s offers access modes %s, the claim requests %s", pv.Name, modes(pv.Spec.AccessModes), modes(claim.Spec.AccessModes))
	case volumeMode(pv.Spec.VolumeMode) != volumeMode(claim.Spec.VolumeMode):
		return fmt.Sprintf("volume %s has volumeMode %s, the claim asks for %s", pv.Name, volumeMode(pv.Spec.VolumeMode), volumeMode(claim.Spec.VolumeMode))
	}
	return ""
}

// mismatch is why pv cannot take the unbound claim ("" when it can),
// for FindVolume.
func mismatch(claim *corev1.PersistentVolumeClaim, class string, sel labels.Selector, pv *corev1.PersistentVolume, node *corev1.Node) string {
	req, capa := Request(claim), Capacity(pv)
	if pv.DeletionTimestamp != nil {
		return whyDeleting
	}
	if pv.Spec.ClaimRef != nil && ClaimRefers(pv.Spec.ClaimRef, claim) {
		// A volume reserved for this claim takes it whatever its class,
		// modes or labels, as in Kubernetes, if it is big enough.
		switch {
		case capa.Cmp(req) < 0:
			return whyTooSmall
		case volumeMode(pv.Spec.VolumeMode) != volumeMode(claim.Spec.VolumeMode):
			return whyVolumeMode
		case node != nil && !NodeAffinityMatches(pv, node):
			return whyNodeAffinity
		}
		return ""
	}
	switch {
	case VolumeClass(pv) != class:
		return whyClass
	case pv.Status.Phase == corev1.VolumeReleased || pv.Status.Phase == corev1.VolumeFailed:
		return whyReleased
	case pv.Spec.ClaimRef != nil:
		return whyOtherClaim
	case capa.Cmp(req) < 0:
		return whyTooSmall
	case !HasAccessModes(claim, pv):
		return whyAccessModes
	case volumeMode(pv.Spec.VolumeMode) != volumeMode(claim.Spec.VolumeMode):
		return whyVolumeMode
	case sel != nil && !sel.Matches(labels.Set(pv.Labels)):
		return whySelector
	case node != nil && !NodeAffinityMatches(pv, node):
		return whyNodeAffinity
	}
	return ""
}

// FindVolume is the volume an unbound claim of class binds to: a volume
// reserved for it (spec.claimRef naming it) if one is big enough, else
// the smallest available volume with capacity at least the request,
// the same class, every requested access mode, the same volume mode,
// labels matching the claim's selector and no claim; ties go to the
// first by name. node, when not nil, is the node the claim's pod was
// scheduled to (WaitForFirstConsumer): the volume's node affinity must
// match it. taken are volumes to skip (chosen for other claims in the
// same pass; may be nil).
//
// With no volume, why says what kept each from fitting, counted
// ("1 too small (at most 20Gi), 2 of another storage class"),
// or "there are no persistent volumes".
func FindVolume(claim *corev1.PersistentVolumeClaim, class string, volumes []*corev1.PersistentVolume, node *corev1.Node, taken map[string]bool) (best *corev1.PersistentVolume, why string) {
	var sel labels.Selector
	if claim.Spec.Selector != nil {
		s, err := metav1.LabelSelectorAsSelector(claim.Spec.Selector)
		if err != nil {
			return nil, fmt.Sprintf("the claim's selector is invalid: %v", err)
		}
		sel = s
	}
	counts := map[string]int{}
	var largestSmall resource.Quantity
	bestPrebound := false
	considered := 0
	for _, pv := range volumes {
		if taken[pv.Name] {
			continue
		}
		considered++
		if w := mismatch(claim, class, sel, pv, node); w != "" {
			counts[w]++
			if w == whyTooSmall {
				if c := Capacity(pv); c.Cmp(largestSmall) > 0 {
					largestSmall = c
				}
			}
			continue
		}
		prebound := pv.Spec.ClaimRef != nil
		switch {
		case best == nil, prebound && !bestPrebound:
		case prebound != bestPrebound:
			continue
		default:
			c, bc := Capacity(pv), Capacity(best)
			if d := c.Cmp(bc); d > 0 || d == 0 && pv.Name > best.Name {
				continue
			}
		}
		best, bestPrebound = pv, prebound
	}
	if best != nil {
		return best, ""
	}
	if considered == 0 {
		return nil, "there are no persistent volumes"
	}
	var parts []string
	for _, w := range whyOrder {
		n := counts[w]
		if n == 0 {
			continue
		}
		part := fmt.Sprintf("%d %s", n, w)
		switch w {
		case whyTooSmall:
			if !largestSmall.IsZero() {
				part += fmt.Sprintf(" (at most %s)", largestSmall.String())
			}
		case whyNodeAffinity:
			part = fmt.Sprintf("%d not reachable from node %s", n, node.Name)
		}
		parts = append(parts, part)
	}
	return nil, strings.Join(parts, ", ")
}

// Describe is how a message names a claim's wish: class, request, modes.
func Describe(claim *corev1.PersistentVolumeClaim, class string) string {
	req := Request(claim)
	c := fmt.Sprintf("storage class %q", class)
	if class == "" {
		c = "no storage class"
	}
	s := fmt.Sprintf("%s, %s", c, req.String())
	if len(claim.Spec.AccessModes) > 0 {
		s += ", " + modes(claim.Spec.AccessModes)
	}
	return s
}

func modes(ms []corev1.PersistentVolumeAccessMode) string {
	if len(ms) == 0 {
		return "none"
	}
	ss := make([]string, len(ms))
	for i, m := range ms {
		ss[i] = string(m)
	}
	sort.Strings(ss)
	return strings.Join(ss, ",")
}

// NodeAffinityMatches reports whether a volume can be used from node:
// true without spec.nodeAffinity.required, else when one of its terms
// matches the node's labels (matchExpressions) and name (matchFields on
// metadata.name), as Kubernetes' node selectors do.
func NodeAffinityMatches(pv *corev1.PersistentVolume, node *corev1.Node) bool {
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return true
	}
	return NodeSelectorMatches(pv.Spec.NodeAffinity.Required, node.Name, node.Labels)
}

// NodeSelectorMatches evaluates a required node selector: its terms are
// ORed, a term's requirements ANDed; a term with no requirement (and a
// selector with no term) matches nothing.
func NodeSelectorMatches(ns *corev1.NodeSelector, name string, nodeLabels map[string]string) bool {
	for i := range ns.NodeSelectorTerms {
		t := &ns.NodeSelectorTerms[i]
		if len(t.MatchExpressions) == 0 && len(t.MatchFields) == 0 {
			continue
		}
		ok := true
		for _, r := range t.MatchExpressions {
			v, has := nodeLabels[r.Key]
			if !requirementMatches(r, v, has) {
				ok = false
				break
			}
		}
		for _, r := range t.MatchFields {
			if !ok {
				break
			}
			if r.Key != "metadata.name" || !requirementMatches(r, name, true) {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func requirementMatches(r corev1.NodeSelectorRequirement, v string, has bool) bool {
	in := func() bool {
		for _, x := range r.Values {
			if x == v {
				return true
			}
		}
		return false
	}
	switch r.Operator {
	case corev1.NodeSelectorOpIn:
		return has && in()
	case corev1.NodeSelectorOpNotIn:
		return !has || !in()
	case corev1.NodeSelectorOpExists:
		return has
	case corev1.NodeSelectorOpDoesNotExist:
		return !has
	case corev1.NodeSelectorOpGt, corev1.NodeSelectorOpLt:
		if !has || len(r.Values) != 1 {
			return false
		}
		a, err1 := strconv.ParseInt(v, 10, 64)
		b, err2 := strconv.ParseInt(r.Values[0], 10, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		if r.Operator == corev1.NodeSelectorOpGt {
			return a > b
		}
		return a < b
	}
	return false
}
