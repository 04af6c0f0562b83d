package gitsync

import (
	"io/fs"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// The seams of a Syncer that its owner fills in (besides store.Interface
// and k8s.io/utils' clock.Clock): the manifest loader and the admission
// hook.

// Loader turns the files of one commit into manifests, validating the whole
// set. schema.Validator implements it. Problems carry the file and line of
// each error or warning; any error refuses the commit. Load must not retain
// fsys after it returns.
type Loader interface {
	Load(fsys fs.FS, paths ...string) ([]schema.Manifest, schema.Problems)
}

// Reader is the store as the planner and the admission hook read it: the
// apply transaction's view (store.Tx), or the store itself outside one.
// Returned objects belong to the caller. It is admission.Reader.
type Reader interface {
	Get(resource, namespace, name string) (schema.Object, error)
	List(resource string, opts store.ListOptions) ([]schema.Object, error)
}

// AdmitFunc is the admission hook (Config.Admit): it completes and checks
// the objects a commit writes. The servers set PipelineAdmit, the write
// pipeline that every API, controller and agent write passes too
// (defaults, immutable fields, Services' cluster IPs and node ports, …),
// chained with hooks of the commit path's own (volumebinding.AdmitGit).
//
// The Syncer calls it inside the apply transaction, once per commit that
// changes something, after the plan and before any write, on the
// goroutine of the sync; r is the transaction's view, so what the hook
// reads is exactly what the commit replaces. Unchanged objects are not in
// objs (an unchanged commit plans nothing and calls nothing), so a value
// the hook filled in stays as written until Git changes the object.
//
// The hook may modify each Admission's Object in place (that is what gets
// written) but not Stored, and must not keep objs after it returns. It
// must be deterministic and do no I/O besides r. Any error Problem refuses
// the whole commit, exactly like a schema error (the SyncStatus lists it
// with its file and line); warnings are ignored. A returned error (a failed
// read of r) is transient: nothing is written and the next poll retries.
type AdmitFunc func(r Reader, objs []Admission) (schema.Problems, error)

// Admission is one write of a commit, as the admission hook sees it.
type Admission struct {
	// Resource is the object's resource ("services").
	Resource string
	// Object is the object to write: Git's object for a create (or a
	// namespace the commit's objects use but do not declare), Git's
	// object over the stored identity for an update (status is the
	// store's). nil for a delete.
	Object schema.Object
	// Stored is the stored object for an update or a delete; nil for a
	// create.
	Stored schema.Object
	// File and Line locate the manifest ("" and 0 for a delete and for
	// an undeclared namespace).
	File string
	Line int
}

// Interface guard: the real validator is a Loader.
var _ Loader = (*schema.Validator)(nil)

// Interface guard: the Reader is what the write pipeline reads.
var _ admission.Reader = Reader(nil)
