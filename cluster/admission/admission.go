// Package admission is Flotilla's one write pipeline: every create, update
// and delete — from a Git commit, from the API (kubectl, client-go), from
// the controllers and the agents — passes the same stages in the same
// order before it reaches the store:
//
//		strict decode → defaults → validation → admission → store
//
//	  - Decode reads a request body strictly: unknown and duplicate fields
//	    and values of the wrong type are refused with their field paths.
//	  - Defaults are Kubernetes' own (schema.SetDefaults).
//	  - Validation is the CUE schema that `cue vet` uses (an ObjectValidator)
//	    plus Go checks of every kind's metadata and of the kinds the schema
//	    does not cover (Node, Endpoints, EndpointSlice, Event, SyncStatus).
//	    Only what changed is validated: a status write, a metadata-only
//	    update and a pod binding (spec.nodeName set) skip the CUE schema.
//	  - Admission is a fixed list of plugins run on a batch of writes inside
//	    the store transaction, atomic with the write: ownership (objects from
//	    Git are read-only for users), immutable fields, Pod Security
//	    (podsecurity.go), Secrets' stringData,
//	    Services' cluster IPs, node ports and address families (ipalloc).
//
// Store wraps a store.Interface so that its writes, Txn included, pass the
// pipeline: the API server, the controllers and the in-process agent write
// through one. gitsync validates a commit's CUE in bulk and runs the rest of
// the pipeline (AdmitCommit) in its apply transaction.
//
// Refusals are *Error values that carry the Kubernetes Status the API
// answers with (422 Invalid with details.causes naming each field, 403
// Forbidden) and match store.ErrInvalid or ErrForbidden with errors.Is.
package admission

import (
	"errors"
	"fmt"
	"net/netip"

	"k8s.io/apimachinery/pkg/util/validation/field"
	psaapi "k8s.io/pod-security-admission/api"

	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// Origin is who writes, which decides what ownership allows.
type Origin int

const (
	// User is a request through the API: kubectl, client-go, the CLI and
	// agents that joined over the network. Objects from Git are read-only
	// to it, except their status.
	User Origin = iota
	// Cluster is the controllers, the scheduler and the in-process agent:
	// they may write the status of objects from Git and the fields the
	// cluster owns (system annotations, bindings), never Git's fields.
	Cluster
	// Git is a commit applied by gitsync, the source of truth.
	Git
)

func (o Origin) String() string {
	switch o {
	case User:
		return "user"
	case Cluster:
		return "cluster"
	case Git:
		return "git"
	}
	return fmt.Sprintf("origin(%d)", int(o))
}

// Operation is what a Write does.
type Operation string

const (
	Create Operation = "CREATE"
	Update Operation = "UPDATE"
	Delete Operation = "DELETE"
)

// Write is one write as the pipeline sees it. The pipeline completes
// Object in place (defaults, allocations) and records what it refuses.
type Write struct {
	Op   Operation
	Kind schema.Kind
	// Object is the object to store (Create, Update); nil for Delete.
	Object schema.Object
	// Old is the stored object (Update, Delete); nil for Create. The
	// pipeline only reads it.
	Old schema.Object
	// Status marks an update of the status subresource only: the store
	// keeps everything else as stored.
	Status bool
	Origin Origin
	// User is who asks, for a User write (nil for the others').
	User *auth.User

	// Errs are the field errors found so far; any refuses the write.
	Errs field.ErrorList
	// Warnings are what the write should be told although it is admitted
	// (Pod Security's warn level): Warning headers for kubectl, warnings
	// in a commit's sync status.
	Warnings []string
	// denied is a refusal that is not about a field (ownership).
	denied *Error

	cueChecked bool   // the CUE schema has seen Object
	comparedRV string // Old's resourceVersion when sameBody was found
	sameBody   bool   // Object's body equals Old's (a pod's node aside)
}

// Refused reports whether the pipeline refused the write.
func (w *Write) Refused() bool { return w.denied != nil || len(w.Errs) > 0 }

// Err is the refusal as an *Error (nil if none): the denial, else the
// field errors as one Invalid.
func (w *Write) Err() error {
	if w.denied != nil {
		return w.denied
	}
	if len(w.Errs) == 0 {
		return nil
	}
	name := ""
	if w.Object != nil {
		name = w.Object.GetName()
		if name == "" {
			name = w.Object.GetGenerateName()
		}
	} else if w.Old != nil {
		name = w.Old.GetName()
	}
	return Invalid(w.Kind, name, w.Errs)
}

// Reasons is the refusal as one line per problem, field first, for callers
// that report problems rather than Status objects (gitsync).
func (w *Write) Reasons() []Reason {
	if w.denied != nil {
		return []Reason{{Reason: w.denied.status.Message}}
	}
	out := make([]Reason, len(w.Errs))
	for i, e := range w.Errs {
		r := e.ErrorBody()
		if _, omitted := e.BadValue.(field.OmitValueType); omitted && e.Type == field.ErrorTypeInvalid && e.Detail != "" {
			r = e.Detail // a reason of its own (CUE's, ipalloc's): no "Invalid value: " before it
		}
		out[i] = Reason{Field: e.Field, Reason: r}
	}
	return out
}

// Reason is one problem of a refused write.
type Reason struct {
	Field  string // JSON path ("spec.replicas"); "" for the whole object
	Reason string
}

// deny records a refusal that is not about one field.
func (w *Write) deny(e *Error) {
	if w.denied == nil {
		w.denied = e
	}
}

func (w *Write) name() string {
	switch {
	case w.Object != nil:
		return w.Object.GetName()
	case w.Old != nil:
		return w.Old.GetName()
	}
	return ""
}

// Reader is the store as admission reads it: a transaction's view
// (store.Tx), so that what a plugin reads is exactly what the write
// replaces. Returned objects belong to the caller.
type Reader interface {
	Get(resource, namespace, name string) (schema.Object, error)
	List(resource string, opts store.ListOptions) ([]schema.Object, error)
}

// ObjectValidator checks one object against the CUE schema that `cue vet`
// uses: schema.Validator.ValidateObject. Problems carry the field's JSON
// path; warnings are ignored. Kinds without a CUE definition give nil. It
// must be safe for concurrent use.
type ObjectValidator interface {
	ValidateObject(obj schema.Object) schema.Problems
}

// Config configures a Pipeline.
type Config struct {
	// Validator is the CUE schema. nil skips the CUE stage (unit tests of
	// other stages only: the servers always set it).
	Validator ObjectValidator
	// Allocator gives Services their cluster IPs and node ports. nil: one
	// with ipalloc's defaults (10.96.0.0/16, 30000-32767).
	Allocator *ipalloc.Allocator
	// ExternalIPs are the ranges a Service's spec.externalIPs may use;
	// none refuses every externalIP (Kubernetes' DenyServiceExternalIPs).
	ExternalIPs []netip.Prefix
	// LBPool is the load balancer pool: a Service's status may name only
	// its addresses.
	LBPool ipalloc.Pool
	// PodSecurity is the Pod Security level of namespaces that do not
	// choose theirs with the pod-security.kubernetes.io labels; ""
	// is DefaultPodSecurity (baseline).
	PodSecurity psaapi.Level
}

// Pipeline runs the stages. It holds no state between writes (the store is
// the state) and is safe for concurrent use.
type Pipeline struct {
	validator ObjectValidator
	alloc     *ipalloc.Allocator
	plugins   []plugin
}

// New builds a Pipeline.
func New(cfg Config) (*Pipeline, error) {
	p := &Pipeline{validator: cfg.Validator, alloc: cfg.Allocator}
	if p.alloc == nil {
		a, err := ipalloc.New(ipalloc.Config{})
		if err != nil {
			return nil, fmt.Errorf("admission: %w", err)
		}
		p.alloc = a
	}
	ps, err := newPodSecurity(cfg.PodSecurity)
	if err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}
	// The fixed order: who may write, what may change, what pods may do,
	// then what the cluster completes.
	p.plugins = []plugin{nodeRestriction{}, ownership{}, immutable{}, ps, secrets{}, serviceAddresses{cfg.ExternalIPs, cfg.LBPool}, services{p.alloc}}
	return p, nil
}

// plugin is one admission step, run on a batch of writes inside the store
// transaction. It records refusals on the writes; a returned error is a
// failed read of r (transient: nothing is written).
type plugin interface {
	name() string
	admit(r Reader, ws []*Write) error
}

// Prepare runs the object-local stages on w: defaults, then validation
// (Go checks, and the CUE schema when cue is set and the object's body
// changed). It reads nothing but w, so callers run it outside the store's
// writer lock. Refusals are recorded on w.
func (p *Pipeline) Prepare(w *Write, cue bool) {
	if w.Op == Delete {
		return
	}
	normalize(w)
	schema.SetDefaults(w.Object)
	p.validate(w, cue)
}

// prepare is Prepare with the CUE schema, after a first ownership check:
// who may not write at all is told so (403) before what is wrong with the
// object (422), as Kubernetes authorizes before it validates. The check
// runs again inside the transaction, where it counts.
func (p *Pipeline) prepare(w *Write) {
	_ = ownership{}.admit(nil, []*Write{w})
	if w.Refused() {
		return
	}
	p.Prepare(w, true)
}

// Admit runs the admission plugins, in their fixed order, on writes that
// are stored together, inside the transaction r reads. A plugin skips the
// writes already refused. The error is a failed read of r.
func (p *Pipeline) Admit(r Reader, ws []*Write) error {
	for _, w := range ws {
		w.Warnings = nil // a transaction run again judges again
	}
	for _, pl := range p.plugins {
		if err := pl.admit(r, ws); err != nil {
			return fmt.Errorf("admission %s: %w", pl.name(), err)
		}
	}
	return nil
}

// AdmitCommit is the pipeline as gitsync runs it on a commit's writes,
// inside its apply transaction: defaults, the Go checks and the
// admission plugins (the commit's CUE was checked in bulk when it was
// loaded, on Git's own objects). Refusals are on the writes; the error is
// a failed read of r.
func (p *Pipeline) AdmitCommit(r Reader, ws []*Write) error {
	for _, w := range ws {
		w.Origin = Git
		p.Prepare(w, false)
	}
	return p.Admit(r, ws)
}

// normalize gives a namespaced object without a namespace "default", as
// the store does, so that validation sees what will be stored.
func normalize(w *Write) {
	if w.Kind.Namespaced && w.Object.GetNamespace() == "" {
		w.Object.SetNamespace("default")
	}
}

// Interface guard: the CUE schema is the pipeline's validator.
var _ ObjectValidator = (*schema.Validator)(nil)

// errDryRun rolls back the transaction of a dry run.
var errDryRun = errors.New("admission: dry run")
