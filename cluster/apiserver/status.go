package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/raftlog"
	"github.com/flotilla-dev/flotilla/cluster/store"
)

// CauseNoLeader is the cause of a 503 answer from a server that knows no
// leader of the store (cut off from the majority, or during an
// election): nothing was written, and the same request may go to another
// server at once.
const CauseNoLeader metav1.CauseType = "flotilla.dev/NoLeader"

// apiError is an error the server itself decides (bad request, forbidden …),
// already in its wire form.
type apiError struct{ status metav1.Status }

func (e *apiError) Error() string { return e.status.Message }

func newError(code int32, reason metav1.StatusReason, format string, args ...any) *apiError {
	return &apiError{status: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    code,
		Reason:  reason,
		Message: fmt.Sprintf(format, args...),
	}}
}

func badRequest(format string, args ...any) *apiError {
	return newError(http.StatusBadRequest, metav1.StatusReasonBadRequest, format, args...)
}

func notFound(format string, args ...any) *apiError {
	return newError(http.StatusNotFound, metav1.StatusReasonNotFound, format, args...)
}

func methodNotAllowed(method, what string) *apiError {
	return newError(http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed,
		"the server does not allow this method on the requested resource: %s %s", method, what)
}

// target names the object a request is about, for error messages.
type target struct {
	group, resource, name string
}

// toStatus is the one place where errors become Kubernetes Status objects:
// the server's own apiErrors pass through, the store's sentinel errors get
// their codes and the apiserver's usual wording, anything else is a 500.
func toStatus(err error, t target) metav1.Status {
	var ae *apiError
	if errors.As(err, &ae) {
		return finish(ae.status, t)
	}
	var as apierrors.APIStatus
	if errors.As(err, &as) {
		return finish(as.Status(), t)
	}
	var mbe *http.MaxBytesError
	st := metav1.Status{Status: metav1.StatusFailure}
	switch {
	case errors.As(err, &mbe):
		st.Code, st.Reason = http.StatusRequestEntityTooLarge, metav1.StatusReasonRequestEntityTooLarge
		st.Message = fmt.Sprintf("request body too large: limit is %d bytes", mbe.Limit)
	case errors.Is(err, store.ErrNotFound):
		st.Code, st.Reason = http.StatusNotFound, metav1.StatusReasonNotFound
		st.Message = fmt.Sprintf("%s %q not found", qualified(t), t.name)
		if t.name == "" {
			st.Message = fmt.Sprintf("%s not found", qualified(t))
		}
	case errors.Is(err, store.ErrExists):
		st.Code, st.Reason = http.StatusConflict, metav1.StatusReasonAlreadyExists
		st.Message = fmt.Sprintf("%s %q already exists", qualified(t), t.name)
	case errors.Is(err, store.ErrConflict):
		st.Code, st.Reason = http.StatusConflict, metav1.StatusReasonConflict
		st.Message = fmt.Sprintf("Operation cannot be fulfilled on %s %q: the object has been modified; "+
			"please apply your changes to the latest version and try again (%v)", qualified(t), t.name, err)
	case errors.Is(err, store.ErrCompacted):
		st.Code, st.Reason = http.StatusGone, metav1.StatusReasonExpired
		st.Message = fmt.Sprintf("too old resource version: %v", err)
	case errors.Is(err, store.ErrInvalid):
		st.Code, st.Reason = http.StatusUnprocessableEntity, metav1.StatusReasonInvalid
		st.Message = fmt.Sprintf("%s %q is invalid: %v", qualified(t), t.name, err)
	case errors.Is(err, store.ErrClosed):
		st.Code, st.Reason = http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable
		st.Message = "the store is closed"
	case errors.Is(err, store.ErrStale):
		// Writes through several servers at once kept beating this one:
		// nothing was written; a retry goes through.
		st.Code, st.Reason = http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests
		st.Message = fmt.Sprintf("the store is busy with concurrent writes, nothing was written: retry (%v)", err)
		st.Details = &metav1.StatusDetails{Name: t.name, Group: t.group, Kind: t.resource, RetryAfterSeconds: 1}
	case errors.Is(err, raftlog.ErrNoLeader), errors.Is(err, raftlog.ErrProposalDropped):
		st.Code, st.Reason = http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable
		st.Message = fmt.Sprintf("the store's servers have no leader: this server is cut off from the majority, or an election is going on; "+
			"nothing was written: retry, or reach another server (%v)", err)
		st.Details = &metav1.StatusDetails{Name: t.name, Group: t.group, Kind: t.resource, RetryAfterSeconds: 1,
			Causes: []metav1.StatusCause{{Type: CauseNoLeader, Message: "this server knows no leader of the store; nothing was done"}}}
	case errors.Is(err, raftlog.ErrUnknownOutcome):
		st.Code, st.Reason = http.StatusGatewayTimeout, metav1.StatusReasonTimeout
		st.Message = fmt.Sprintf("this server cannot tell whether the write was applied: it may or may not be; "+
			"read the object, through another server if this one is cut off (%v)", err)
		st.Details = &metav1.StatusDetails{Name: t.name, Group: t.group, Kind: t.resource, RetryAfterSeconds: 1}
	default:
		st.Code, st.Reason = http.StatusInternalServerError, metav1.StatusReasonInternalError
		st.Message = fmt.Sprintf("Internal error occurred: %v", err)
	}
	return finish(st, t)
}

// finish completes a Status: every error carries details, as clients
// expect (kubectl itself dereferences them), naming what the request was
// about when it is known.
func finish(st metav1.Status, t target) metav1.Status {
	st.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Status"}
	st.Status = metav1.StatusFailure
	if st.Details == nil {
		st.Details = &metav1.StatusDetails{Name: t.name, Group: t.group, Kind: t.resource}
	}
	return st
}

func qualified(t target) string {
	if t.group == "" || t.resource == "" {
		return t.resource
	}
	return t.resource + "." + t.group
}

// writeError writes err as a Status with its code.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error, t target) {
	st := toStatus(err, t)
	if st.Details != nil && st.Details.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(st.Details.RetryAfterSeconds))
	}
	if st.Code >= 500 {
		s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		s.log.Debug("api request refused", "method", r.Method, "path", r.URL.Path, "code", st.Code, "msg", st.Message)
	}
	writeJSON(w, int(st.Code), st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		data = []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"InternalError","code":500}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(data)
	_, _ = w.Write([]byte("\n"))
}
