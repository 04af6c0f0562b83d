// Package wellformed holds the checks a controller makes before it acts on
// a workload read from the store. Objects reach the store past admission
// too (an older server, a restored backup, a bug), so a controller never
// trusts a spec: what it cannot act on is reported as an error naming the
// field, which the controller turns into a Stalled condition, instead of
// a panic, a loop of two billion or a pod nothing can run.
package wellformed

import (
	"errors"
	"fmt"
	"math"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// MaxNameLength is the longest object name Kubernetes accepts (a DNS
// subdomain).
const MaxNameLength = 253

// Replicas checks spec.replicas (nil means 1).
func Replicas(p *int32) error {
	if p != nil && *p < 0 {
		return fmt.Errorf("spec.replicas is %d, want 0 or more", *p)
	}
	return nil
}

// Seconds checks a field of seconds that must not be negative.
func Seconds(field string, v int64) error {
	if v < 0 {
		return fmt.Errorf("%s is %d, want 0 or more", field, v)
	}
	return nil
}

// Selector checks that sel is a valid, non-empty label selector that
// selects the template's labels (else the workload's pods would not be its
// own).
func Selector(sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec) error {
	if sel == nil {
		return errors.New("spec.selector is required")
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return fmt.Errorf("spec.selector: %w", err)
	}
	if s.Empty() {
		return errors.New("spec.selector is empty: it would select every pod of the namespace")
	}
	if !s.Matches(labels.Set(tmpl.Labels)) {
		return fmt.Errorf("spec.selector %s does not select spec.template.metadata.labels %v", s, tmpl.Labels)
	}
	return nil
}

// PodTemplate checks what a pod needs to be run at all: at least one
// container, each with a name (unique) and an image.
func PodTemplate(tmpl *corev1.PodTemplateSpec) error {
	if len(tmpl.Spec.Containers) == 0 {
		return errors.New("spec.template.spec.containers is empty: a pod needs at least one container")
	}
	seen := map[string]bool{}
	check := func(field string, cs []corev1.Container) error {
		for i, c := range cs {
			switch {
			case c.Name == "":
				return fmt.Errorf("spec.template.spec.%s[%d].name is required", field, i)
			case seen[c.Name]:
				return fmt.Errorf("spec.template.spec.%s[%d].name %q is used twice", field, i, c.Name)
			case c.Image == "":
				return fmt.Errorf("spec.template.spec.%s[%d].image is required", field, i)
			}
			seen[c.Name] = true
		}
		return nil
	}
	if err := check("initContainers", tmpl.Spec.InitContainers); err != nil {
		return err
	}
	return check("containers", tmpl.Spec.Containers)
}

// Workload runs Replicas, Seconds of minReadySeconds, Selector and
// PodTemplate.
func Workload(replicas *int32, minReadySeconds int32, sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec) error {
	if err := Replicas(replicas); err != nil {
		return err
	}
	if err := Seconds("spec.minReadySeconds", int64(minReadySeconds)); err != nil {
		return err
	}
	if err := Selector(sel, tmpl); err != nil {
		return err
	}
	return PodTemplate(tmpl)
}

// Name checks that name, derived by the controller for an object it
// makes, is one the store and Kubernetes clients accept.
func Name(what, name string) error {
	if len(name) > MaxNameLength {
		return fmt.Errorf("%s name would be %d characters long, more than %d: shorten the name", what, len(name), MaxNameLength)
	}
	return nil
}

// ClampInt32 converts v to int32, saturating at the bounds (arithmetic on
// replicas is done in int64 and comes back through here).
func ClampInt32(v int64) int32 {
	switch {
	case v > math.MaxInt32:
		return math.MaxInt32
	case v < math.MinInt32:
		return math.MinInt32
	}
	return int32(v)
}
