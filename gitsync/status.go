package gitsync

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// The SyncStatus object is written only when what it says changes: an idle
// cluster (same commit, same outcome) writes nothing. Times move only with
// a change: LastAttemptTime when the result or the attempted commit
// changes, LastAppliedTime when the applied commit changes.

var statusKind, _ = schema.KindByName("SyncStatus")

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
	return next
}

// sameStatus compares what a status says, times aside.
func sameStatus(a, b schema.SyncStatusBody) bool {
	a.LastAppliedTime, b.LastAppliedTime = nil, nil
	a.LastAttemptTime, b.LastAttemptTime = nil, nil
	if len(a.Problems) == 0 && len(b.Problems) == 0 {
		a.Problems, b.Problems = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

// sameBody compares two status bodies, times included.
func sameBody(a, b schema.SyncStatusBody) bool {
	return sameStatus(a, b) && sameTime(a.LastAppliedTime, b.LastAppliedTime) && sameTime(a.LastAttemptTime, b.LastAttemptTime)
}

func sameTime(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Time.Equal(b.Time)
}
