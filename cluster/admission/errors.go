package admission

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// ErrForbidden is matched (errors.Is) by a write refused because of who
// writes: a user's write to an object from Git.
var ErrForbidden = errors.New("forbidden")

// ErrBadRequest is matched by a request body that is not JSON at all.
var ErrBadRequest = errors.New("bad request")

// Error is a write the pipeline refused, as the Kubernetes Status the API
// answers with. It implements apierrors.APIStatus, and errors.Is matches
// its class: store.ErrInvalid (422), ErrForbidden (403) or ErrBadRequest
// (400).
type Error struct {
	status metav1.Status
	class  error
}

func (e *Error) Error() string { return e.status.Message }

// Status is the Kubernetes Status of the refusal, details included.
func (e *Error) Status() metav1.Status { return e.status }

// Unwrap gives the class: store.ErrInvalid, ErrForbidden or ErrBadRequest.
func (e *Error) Unwrap() error { return e.class }

// Causes are the field errors of an Invalid (nil otherwise).
func (e *Error) Causes() []metav1.StatusCause {
	if e.status.Details == nil {
		return nil
	}
	return e.status.Details.Causes
}

var _ apierrors.APIStatus = (*Error)(nil)

func groupKind(k schema.Kind) k8sschema.GroupKind {
	return k8sschema.GroupKind{Group: k.Group, Kind: k.Kind}
}

// Invalid is the 422 of an object with field errors, as the Kubernetes
// API server words it: one cause per field.
func Invalid(k schema.Kind, name string, errs field.ErrorList) *Error {
	se := apierrors.NewInvalid(groupKind(k), name, errs)
	return &Error{status: se.ErrStatus, class: store.ErrInvalid}
}

// Forbidden is the 403 of a write its origin may not make.
func Forbidden(k schema.Kind, name, msg string) *Error {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"},
		Status:   metav1.StatusFailure,
		Code:     http.StatusForbidden,
		Reason:   metav1.StatusReasonForbidden,
		Message:  msg,
		Details:  &metav1.StatusDetails{Group: k.Group, Kind: k.Resource, Name: name},
	}
	return &Error{status: st, class: ErrForbidden}
}

// BadRequest is the 400 of a body that cannot be read at all.
func BadRequest(k schema.Kind, name, format string, args ...any) *Error {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"},
		Status:   metav1.StatusFailure,
		Code:     http.StatusBadRequest,
		Reason:   metav1.StatusReasonBadRequest,
		Message:  fmt.Sprintf(format, args...),
		Details:  &metav1.StatusDetails{Group: k.Group, Kind: k.Resource, Name: name},
	}
	return &Error{status: st, class: ErrBadRequest}
}

// refuseGit is the 403 of a user's write to an object that Git owns.
func refuseGit(k schema.Kind, obj schema.Object) *Error {
	where := ""
	if src := obj.GetAnnotations()[schema.AnnotationSource]; src != "" {
		if i := strings.LastIndexByte(src, ':'); i > 0 {
			if _, err := strconv.Atoi(src[i+1:]); err == nil {
				src = src[:i]
			}
		}
		where = " (" + src + ")"
	}
	return Forbidden(k, obj.GetName(), fmt.Sprintf("%s %q is managed by Git%s; change it in the repository and commit", k.Resource, obj.GetName(), where))
}

// fromProblems turns CUE problems into field errors, leaving out the
// fields that already have one (the Go checks speak first).
func fromProblems(ps schema.Problems, have field.ErrorList) field.ErrorList {
	seen := map[string]bool{}
	for _, e := range have {
		seen[e.Field] = true
	}
	var out field.ErrorList
	for _, p := range ps.Errors() {
		if seen[p.Field] {
			continue
		}
		seen[p.Field] = true
		out = append(out, &field.Error{Type: field.ErrorTypeInvalid, Field: p.Field, BadValue: field.OmitValueType{}, Detail: p.Reason})
	}
	return out
}

// causeError is a field error with a detail and no value shown.
func causeError(t field.ErrorType, path, detail string) *field.Error {
	return &field.Error{Type: t, Field: path, BadValue: field.OmitValueType{}, Detail: detail}
}
