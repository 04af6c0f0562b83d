// Package store is Flotilla's state: every object, desired and observed, in
// an embedded Badger database, under one global revision counter that is the
// objects' resourceVersion, with watches that resume from a revision.
package store

import (
	"context"
	"errors"

	"github.com/flotilla-dev/flotilla/schema"
)

// Sentinel errors. Callers branch on them with errors.Is; the API server maps
// them once to Kubernetes Status codes.
var (
	ErrNotFound  = errors.New("not found")                   // 404
	ErrExists    = errors.New("already exists")              // 409 AlreadyExists
	ErrConflict  = errors.New("resourceVersion conflict")    // 409 Conflict: re-read and retry
	ErrCompacted = errors.New("revision has been compacted") // 410 Gone: relist, then watch
	ErrInvalid   = errors.New("invalid object")              // 422: missing name, wrong namespace scope
	ErrClosed    = errors.New("store closed")
	// ErrTooLarge: a write past the store's documented limits (bytes per
	// object, writes or bytes per transaction); errors.As gives the
	// *LimitError naming the limit. It is permanent for that input: refuse
	// it, do not retry it. 413.
	ErrTooLarge = errors.New("too large for the store")
	// ErrCorrupt: a stored value cannot be read (a corrupted or hostile
	// store), wrapped with its key. Only that key fails; Delete without
	// preconditions still removes it. 500.
	ErrCorrupt = errors.New("stored value is corrupt")
)

// LimitError is the error of a write past one of the store's limits. It
// matches ErrTooLarge (errors.Is).
type LimitError struct {
	// Limit names the limit: the Config field "MaxObjectBytes",
	// "MaxTxnWrites" or "MaxTxnBytes".
	Limit string
	// Value is the limit's value (bytes, or writes).
	Value int64
	// Msg says what went past it, for people.
	Msg string
}

func (e *LimitError) Error() string { return e.Msg + ": " + ErrTooLarge.Error() }

// Unwrap makes errors.Is(err, ErrTooLarge) true.
func (e *LimitError) Unwrap() error { return ErrTooLarge }

// EventType is what happened to an object, with the Kubernetes watch names.
type EventType string

const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
)

// Event is one change seen by a watch. Object is the object after the change
// (for Deleted: its last state, with ResourceVersion set to the revision of
// the deletion). The receiver owns Object.
type Event struct {
	Type     EventType
	Object   schema.Object
	Revision int64
}

// ListOptions narrows a List or Watch.
type ListOptions struct {
	// Namespace limits to one namespace; "" means all (and is the only value
	// for cluster-scoped kinds).
	Namespace string
	// LabelSelector in Kubernetes syntax ("app=web,tier!=db"); "" means all.
	LabelSelector string
	// FieldSelector supports "metadata.name=X", "metadata.namespace=X" and
	// "spec.nodeName=X" (what agents watch their pods by) and, for Secrets,
	// "type=X" (agents list the ingresses' TLS Secrets); "" means all.
	FieldSelector string
}

// DeleteOptions are the preconditions of a Delete.
type DeleteOptions struct {
	// ResourceVersion, when set, must equal the stored one (else ErrConflict).
	ResourceVersion string
	// UID, when set, must equal the stored one (else ErrConflict).
	UID string
}

// Interface is the store as every consumer sees it: the API server,
// reconcilers, the scheduler, gitsync and (in-process) the node agent. A
// remote client over the API implements it too, so consumers do not care
// whether the store is in their process.
//
// Objects passed in are not retained or modified; objects returned are new
// copies that the caller owns, with apiVersion and kind set. All methods are
// safe for concurrent use. A write past an implementation's size limits
// (per object, per transaction) fails with ErrTooLarge; a stored value that
// cannot be read fails its own key only, with ErrCorrupt.
type Interface interface {
	// Get returns one object. resource is the plural ("pods"); namespace is ""
	// for cluster-scoped kinds. ErrNotFound if absent.
	Get(ctx context.Context, resource, namespace, name string) (schema.Object, error)

	// List returns the matching objects sorted by namespace then name, and
	// the store revision they were read at (to start a Watch from).
	List(ctx context.Context, resource string, opts ListOptions) ([]schema.Object, int64, error)

	// Create stores a new object. The store sets uid, creationTimestamp,
	// generation 1 and resourceVersion; a namespaced object with no namespace
	// goes to "default"; generateName is honoured when name is empty.
	// ErrExists if the name is taken.
	Create(ctx context.Context, obj schema.Object) (schema.Object, error)

	// Update replaces an object's metadata and spec (status is kept as
	// stored). If obj's resourceVersion is set it must match the stored one
	// (ErrConflict). metadata.generation is bumped when the spec changes. An
	// update that changes nothing writes nothing and returns the stored object.
	Update(ctx context.Context, obj schema.Object) (schema.Object, error)

	// UpdateStatus replaces only the status, with the same optimistic
	// concurrency and no-op rule as Update.
	UpdateStatus(ctx context.Context, obj schema.Object) (schema.Object, error)

	// Delete removes an object and returns its last state. ErrNotFound if absent.
	Delete(ctx context.Context, resource, namespace, name string, opts DeleteOptions) (schema.Object, error)

	// Watch streams the changes with a revision greater than sinceRevision
	// (0: from now on). ErrCompacted if sinceRevision is older than the kept
	// history. The channel is closed when ctx ends, when the store closes, or
	// when the receiver falls too far behind; the receiver then lists and
	// watches again.
	Watch(ctx context.Context, resource string, opts ListOptions, sinceRevision int64) (<-chan Event, error)

	// Txn runs fn with a view of the store in which writes are staged; if fn
	// returns nil they commit atomically (readers and watchers see all or
	// none of them, also across a crash), otherwise none do. Returns the
	// revision after commit. Any size within the store's limits commits; a
	// write past them fails with ErrTooLarge, and so does the Txn even if fn
	// ignores that error. fn runs while every other write waits. Used by
	// gitsync to apply a whole commit at once.
	Txn(ctx context.Context, fn func(tx Tx) error) (int64, error)

	// Revision is the current store revision.
	Revision() int64
}

// Tx is the view inside Txn: the same operations as Interface, reading the
// transaction's own staged writes.
type Tx interface {
	Get(resource, namespace, name string) (schema.Object, error)
	List(resource string, opts ListOptions) ([]schema.Object, error)
	Create(obj schema.Object) (schema.Object, error)
	Update(obj schema.Object) (schema.Object, error)
	Delete(resource, namespace, name string, opts DeleteOptions) (schema.Object, error)
}
