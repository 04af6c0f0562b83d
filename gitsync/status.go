package gitsync

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// The SyncStatus object is written only when what it says changes: an idle
// cluster (same commit, same outcome) writes nothing. Times move only with
// a change: LastAttemptTime when the result or the attempted commit
// changes, LastAppliedTime when the applied commit changes.

var statusKind, _ = schema.KindByName("SyncStatus")

// Condition types of the SyncStatus, as Flux's (kstatus) are.
const (
	// ConditionReady is True when the branch head is live, False (with the
	// reason) when it is not.
	ConditionReady = "Ready"
	// ConditionStalled is True when the branch head is refused: nothing
	// but a new commit helps, and no poll evaluates it again.
	ConditionStalled = "Stalled"
	// ConditionReconciling is True while a failed sync is being retried
	// with back-off (stored), or while a sync runs (in the answer to a
	// sync request only: a sync in progress is never written).
	ConditionReconciling = "Reconciling"
)

// Reasons of the conditions: what stalled the head, what failed, or what
// is under way.
const (
	ReasonApplied = "Applied" // the head is live
	// Stalled (refused) heads:
	ReasonValidationFailed = "ValidationFailed"   // a manifest is invalid (schema, cross-object checks)
	ReasonLimitExceeded    = "LimitExceeded"      // a limit: file or commit size, fetch size, objects per commit, the store's transaction size
	ReasonAdmissionRefused = "AdmissionRefused"   // admission refused an object (or Git may not take it over)
	ReasonInternalError    = "InternalError"      // evaluating the commit panicked: a bug, named in the log with its stack
	ReasonHistoryRewritten = "HistoryRewritten"   // the head does not descend from the live commit (Config.AllowHistoryRewrite)
	ReasonSignatureRefused = "VerificationFailed" // the head is unsigned or not signed by a trusted key (Config.VerifySignatures)
	// Transient failures, retried with back-off:
	ReasonFetchFailed = "FetchFailed" // listing refs, fetching or reading the clone failed or timed out
	ReasonStoreFailed = "StoreFailed" // reading or writing the store failed
	// Under way:
	ReasonRetrying    = "ProgressingWithRetry" // retrying after a transient failure
	ReasonProgressing = "Progressing"          // a sync is running
)

func appliedConditions(msg string) []metav1.Condition {
	return []metav1.Condition{{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonApplied, Message: msg}}
}

func stalledConditions(reason, msg string) []metav1.Condition {
	return []metav1.Condition{
		{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: msg},
		{Type: ConditionStalled, Status: metav1.ConditionTrue, Reason: reason, Message: msg + "; waiting for a new commit"},
	}
}

func transientConditions(reason, msg, live string) []metav1.Condition {
	return []metav1.Condition{
		{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: msg},
		{Type: ConditionReconciling, Status: metav1.ConditionTrue, Reason: ReasonRetrying,
			Message: fmt.Sprintf("retrying with back-off; %s stays live", orNone(short(live)))},
	}
}

// conditionReason is the reason of the condition of type t, "" without one.
func conditionReason(b schema.SyncStatusBody, t string) string {
	if c := meta.FindStatusCondition(b.Conditions, t); c != nil {
		return c.Reason
	}
	return ""
}

// problemsReason classes a refused commit's problems: a limit's (Problem.
// Limit, schema.ErrLimit), or invalid manifests.
func problemsReason(probs schema.Problems) string {
	if probs.Limited() {
		return ReasonLimitExceeded
	}
	return ReasonValidationFailed
}

// statusUpdater is the optional ability of a store.Tx to write a status
// inside the transaction. Without it the status is written right after the
// transaction commits.
type statusUpdater interface {
	UpdateStatus(obj schema.Object) (schema.Object, error)
}

func (s *Syncer) readStatus(ctx context.Context) (schema.SyncStatusBody, error) {
	obj, err := s.cfg.Store.Get(ctx, statusKind.Resource, "", schema.SyncStatusName)
	if errors.Is(err, store.ErrNotFound) {
		return schema.SyncStatusBody{}, nil
	}
	if err != nil {
		return schema.SyncStatusBody{}, fmt.Errorf("read sync status: %w", err)
	}
	ss, ok := obj.(*schema.SyncStatus)
	if !ok {
		return schema.SyncStatusBody{}, fmt.Errorf("read sync status: store returned %T", obj)
	}
	return ss.Status, nil
}

func (s *Syncer) spec() schema.SyncSpec {
	p := s.cfg.Path
	if p == "." {
		p = ""
	}
	return schema.SyncSpec{URL: s.remote.display, Branch: s.Branch(), Path: p}
}

func (s *Syncer) statusObject(body schema.SyncStatusBody) *schema.SyncStatus {
	obj := statusKind.New().(*schema.SyncStatus)
	obj.Name = schema.SyncStatusName
	obj.Spec = s.spec()
	obj.Status = body
	return obj
}

// putStatusTx writes the status object inside the transaction. It reports
// whether the status body is written too (false: the caller writes it after
// the commit, with putStatus).
func (s *Syncer) putStatusTx(tx store.Tx, body schema.SyncStatusBody) (bool, error) {
	want := s.statusObject(body)
	cur, err := tx.Get(statusKind.Resource, "", schema.SyncStatusName)
	if errors.Is(err, store.ErrNotFound) {
		created, err := tx.Create(want)
		if err != nil {
			return false, fmt.Errorf("create sync status: %w", err)
		}
		cs, ok := created.(*schema.SyncStatus)
		return ok && sameBody(cs.Status, body), nil
	}
	if err != nil {
		return false, fmt.Errorf("read sync status: %w", err)
	}
	cs, ok := cur.(*schema.SyncStatus)
	if !ok {
		return false, fmt.Errorf("read sync status: store returned %T", cur)
	}
	if cs.Spec != want.Spec {
		upd := schema.Copy(cs)
		upd.Spec = want.Spec
		upd.ResourceVersion = ""
		if _, err := tx.Update(upd); err != nil {
			return false, fmt.Errorf("update sync status spec: %w", err)
		}
	}
	if sameBody(cs.Status, body) {
		return true, nil
	}
	su, ok := tx.(statusUpdater)
	if !ok {
		return false, nil
	}
	upd := schema.Copy(cs)
	upd.Spec = want.Spec
	upd.Status = body
	upd.ResourceVersion = ""
	if _, err := su.UpdateStatus(upd); err != nil {
		return false, fmt.Errorf("update sync status: %w", err)
	}
	return true, nil
}

// putStatus writes the status object outside a transaction.
func (s *Syncer) putStatus(ctx context.Context, body schema.SyncStatusBody) error {
	want := s.statusObject(body)
	cur, err := s.cfg.Store.Get(ctx, statusKind.Resource, "", schema.SyncStatusName)
	if errors.Is(err, store.ErrNotFound) {
		cur, err = s.cfg.Store.Create(ctx, want)
		if err != nil {
			return fmt.Errorf("create sync status: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("read sync status: %w", err)
	}
	cs, ok := cur.(*schema.SyncStatus)
	if !ok {
		return fmt.Errorf("read sync status: store returned %T", cur)
	}
	if cs.Spec != want.Spec {
		upd := schema.Copy(cs)
		upd.Spec = want.Spec
		upd.ResourceVersion = ""
		if cur, err = s.cfg.Store.Update(ctx, upd); err != nil {
			return fmt.Errorf("update sync status spec: %w", err)
		}
		if cs, ok = cur.(*schema.SyncStatus); !ok {
			return fmt.Errorf("update sync status: store returned %T", cur)
		}
	}
	if sameBody(cs.Status, body) {
		return nil
	}
	upd := schema.Copy(cs)
	upd.Status = body
	upd.ResourceVersion = ""
	if _, err := s.cfg.Store.UpdateStatus(ctx, upd); err != nil {
		return fmt.Errorf("update sync status: %w", err)
	}
	return nil
}

// stamp sets next's times: now where the corresponding fact changed since
// stored, stored's otherwise. Times are whole seconds, as they serialise.
func stamp(stored, next schema.SyncStatusBody, now time.Time) schema.SyncStatusBody {
	t := metav1.NewTime(now.Truncate(time.Second))
	next.LastAppliedTime = stored.LastAppliedTime
	if next.LastAppliedCommit != stored.LastAppliedCommit {
		next.LastAppliedTime = &t
	}
	next.LastAttemptTime = stored.LastAttemptTime
	if next.Result != stored.Result || next.LastAttemptedCommit != stored.LastAttemptedCommit || next.LastAttemptTime == nil {
		next.LastAttemptTime = &t
	}
	next.Conditions = stampConditions(stored.Conditions, next.Conditions, t)
	return next
}

// stampConditions gives each condition of next its transition time: the
// stored one's while its status is unchanged, t otherwise. next's own
// times are ignored.
func stampConditions(stored, next []metav1.Condition, t metav1.Time) []metav1.Condition {
	if len(next) == 0 {
		return nil
	}
	out := make([]metav1.Condition, len(next))
	for i, c := range next {
		c.LastTransitionTime = t
		if old := meta.FindStatusCondition(stored, c.Type); old != nil && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		out[i] = c
	}
	return out
}

// sameStatus compares what a status says, times aside.
func sameStatus(a, b schema.SyncStatusBody) bool {
	a.LastAppliedTime, b.LastAppliedTime = nil, nil
	a.LastAttemptTime, b.LastAttemptTime = nil, nil
	if len(a.Problems) == 0 && len(b.Problems) == 0 {
		a.Problems, b.Problems = nil, nil
	}
	a.Conditions, b.Conditions = untimed(a.Conditions), untimed(b.Conditions)
	return reflect.DeepEqual(a, b)
}

func untimed(cs []metav1.Condition) []metav1.Condition {
	if len(cs) == 0 {
		return nil
	}
	out := make([]metav1.Condition, len(cs))
	for i, c := range cs {
		c.LastTransitionTime = metav1.Time{}
		out[i] = c
	}
	return out
}

// sameBody compares two status bodies, times included.
func sameBody(a, b schema.SyncStatusBody) bool {
	if !sameStatus(a, b) || !sameTime(a.LastAppliedTime, b.LastAppliedTime) || !sameTime(a.LastAttemptTime, b.LastAttemptTime) {
		return false
	}
	for i := range a.Conditions {
		if !a.Conditions[i].LastTransitionTime.Equal(&b.Conditions[i].LastTransitionTime) {
			return false
		}
	}
	return true
}

func sameTime(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Time.Equal(b.Time)
}

// event records an Event about the SyncStatus object, if Config.Events is set.
func (s *Syncer) event(typ, reason, format string, args ...any) {
	if s.cfg.Events == nil {
		return
	}
	ref := &corev1.ObjectReference{APIVersion: statusKind.APIVersion(), Kind: statusKind.Kind, Name: schema.SyncStatusName}
	s.cfg.Events.Eventf(ref, typ, reason, format, args...)
}
