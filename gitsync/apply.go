package gitsync

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// This file is the pure part of a sync: manifests → desired objects, and
// desired vs stored → actions. It does no I/O beyond the reader it is given,
// so the same planner runs on a read-only view (to skip idle writes) and
// inside the apply transaction.

type objKey struct{ Resource, Namespace, Name string }

func (k objKey) String() string {
	if k.Namespace == "" {
		return k.Resource + "/" + k.Name
	}
	return k.Resource + "/" + k.Namespace + "/" + k.Name
}

// desired is one object as Git wants it, annotations set.
type desired struct {
	key    objKey
	obj    schema.Object
	hash   string // sha256 of the canonical JSON of Git's fields
	source string // "file:line"
	file   string
	line   int
}

// desiredSet is what one commit asks for.
type desiredSet struct {
	objs []desired
	// namespaces referenced by objects but not declared in the commit; they
	// are created if missing (managed by Git, so pruned once unreferenced).
	autoNamespaces map[string]string // name → source of the first reference
	hash           string            // hash of the whole set
}

// buildDesired turns validated manifests into desired objects: namespace
// defaulted to "default", server-owned metadata cleared, Flotilla's
// annotations set. Duplicate objects and kinds Git may not carry are
// problems.
func buildDesired(ms []schema.Manifest) (desiredSet, schema.Problems) {
	set := desiredSet{autoNamespaces: map[string]string{}}
	var probs schema.Problems
	seen := map[objKey]string{}
	declaredNS := map[string]bool{}
	for _, m := range ms {
		source := fmt.Sprintf("%s:%d", m.File, m.Line)
		if m.Object == nil {
			continue
		}
		k, err := schema.KindOf(m.Object)
		if err != nil || !k.FromGit {
			probs = append(probs, schema.Problem{File: m.File, Line: m.Line, Field: "kind",
				Reason: fmt.Sprintf("kind %q cannot be synced from Git (allowed: %s)", m.Object.GetObjectKind().GroupVersionKind().Kind, strings.Join(schema.GitKinds(), ", "))})
			continue
		}
		obj := schema.Copy(m.Object)
		schema.SetTypeMeta(obj, k)
		if k.Namespaced && obj.GetNamespace() == "" {
			obj.SetNamespace("default")
		}
		if !k.Namespaced && obj.GetNamespace() != "" {
			probs = append(probs, schema.Problem{File: m.File, Line: m.Line, Field: "metadata.namespace",
				Reason: fmt.Sprintf("%s is cluster-scoped and takes no namespace", k.Kind)})
			continue
		}
		if obj.GetName() == "" {
			probs = append(probs, schema.Problem{File: m.File, Line: m.Line, Field: "metadata.name",
				Reason: "a name is required (generateName would create a new object on every sync)"})
			continue
		}
		clearServerFields(obj)
		hash, err := canonicalHash(obj)
		if err != nil {
			probs = append(probs, schema.Problem{File: m.File, Line: m.Line, Reason: fmt.Sprintf("cannot encode object: %v", err)})
			continue
		}
		ann := obj.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[schema.AnnotationManagedBy] = schema.ManagedByGit
		ann[schema.AnnotationSource] = source
		ann[schema.AnnotationAppliedHash] = hash
		obj.SetAnnotations(ann)
		key := objKey{k.Resource, obj.GetNamespace(), obj.GetName()}
		if prev, dup := seen[key]; dup {
			probs = append(probs, schema.Problem{File: m.File, Line: m.Line, Field: "metadata.name",
				Reason: fmt.Sprintf("%s %q is also defined at %s", k.Kind, displayName(key), prev)})
			continue
		}
		seen[key] = source
		if k.Kind == "Namespace" {
			declaredNS[obj.GetName()] = true
		}
		set.objs = append(set.objs, desired{key: key, obj: obj, hash: hash, source: source, file: m.File, line: m.Line})
	}
	for _, d := range set.objs {
		if ns := d.key.Namespace; ns != "" && !declaredNS[ns] {
			if _, ok := set.autoNamespaces[ns]; !ok {
				set.autoNamespaces[ns] = d.source
			}
		}
	}
	// Namespaces first, so that watchers never see an object before its
	// namespace; then a stable order.
	sort.Slice(set.objs, func(i, j int) bool {
		a, b := set.objs[i].key, set.objs[j].key
		if (a.Resource == "namespaces") != (b.Resource == "namespaces") {
			return a.Resource == "namespaces"
		}
		return a.String() < b.String()
	})
	h := sha256.New()
	for _, d := range set.objs {
		fmt.Fprintf(h, "%s\x00%s\x00%s\n", d.key, d.hash, d.source)
	}
	set.hash = hex.EncodeToString(h.Sum(nil))
	return set, probs
}

func displayName(k objKey) string {
	if k.Namespace == "" {
		return k.Name
	}
	return k.Namespace + "/" + k.Name
}

// clearServerFields drops metadata the store owns, should a manifest carry
// it (one exported from a cluster, say).
func clearServerFields(obj schema.Object) {
	obj.SetUID("")
	obj.SetResourceVersion("")
	obj.SetGeneration(0)
	obj.SetCreationTimestamp(metav1.Time{})
	obj.SetDeletionTimestamp(nil)
	obj.SetManagedFields(nil)
	ann := obj.GetAnnotations()
	for _, k := range []string{schema.AnnotationManagedBy, schema.AnnotationSource, schema.AnnotationAppliedHash} {
		delete(ann, k)
	}
	if len(ann) == 0 {
		ann = nil
	}
	obj.SetAnnotations(ann)
}

// canonicalHash is the sha256 of the object's JSON without status: only
// the fields Git sets, so cluster-defaulted fields never count as drift.
func canonicalHash(obj schema.Object) (string, error) {
	data, err := schema.Encode(obj)
	if err != nil {
		return "", err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return "", err
	}
	delete(m, "status")
	canon, err := json.Marshal(m) // maps marshal with sorted keys
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:]), nil
}

type opType int

const (
	opCreate opType = iota
	opUpdate
	opDelete
)

func (o opType) String() string { return [...]string{"create", "update", "delete"}[o] }

type action struct {
	op     opType
	key    objKey
	obj    schema.Object // create/update: the object to write; delete: the stored one
	stored schema.Object // update: the stored object
	file   string
	line   int
}

// applyError is a store write of one action that failed; when the store
// refused the object itself (store.ErrInvalid) the commit is refused with
// a problem at the manifest, otherwise the failure is transient.
type applyError struct {
	act action
	err error
}

func (e *applyError) Error() string { return fmt.Sprintf("%s %s: %v", e.act.op, e.act.key, e.err) }
func (e *applyError) Unwrap() error { return e.err }

func (e *applyError) problem() (schema.Problem, bool) {
	if !errors.Is(e.err, store.ErrInvalid) || e.act.file == "" {
		return schema.Problem{}, false
	}
	return schema.Problem{File: e.act.file, Line: e.act.line, Reason: "the store refused the object: " + e.err.Error()}, true
}

// plan compares the desired set with what r holds. It returns the actions
// that make the store match, the number of objects Git owns afterwards, and
// problems that refuse the commit (objects Git would have to take over).
func plan(r Reader, set desiredSet) ([]action, int, schema.Problems, error) {
	var acts []action
	var probs schema.Problems
	keep := map[objKey]bool{}
	owned := 0
	nsKind, _ := schema.KindByName("Namespace")
	autoNS := make([]string, 0, len(set.autoNamespaces))
	for ns := range set.autoNamespaces {
		autoNS = append(autoNS, ns)
	}
	sort.Strings(autoNS)
	for _, ns := range autoNS {
		key := objKey{nsKind.Resource, "", ns}
		cur, err := r.Get(key.Resource, "", ns)
		switch {
		case errors.Is(err, store.ErrNotFound):
			acts = append(acts, action{op: opCreate, key: key, obj: autoNamespace(nsKind, ns, set.autoNamespaces[ns])})
			keep[key] = true
			if ns != "default" {
				owned++
			}
		case err != nil:
			return nil, 0, nil, fmt.Errorf("read namespace %s: %w", ns, err)
		case isManaged(cur):
			keep[key] = true
			owned++
		}
	}
	for _, d := range set.objs {
		keep[d.key] = true
		owned++
		cur, err := r.Get(d.key.Resource, d.key.Namespace, d.key.Name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			acts = append(acts, action{op: opCreate, key: d.key, obj: d.obj, file: d.file, line: d.line})
			continue
		case err != nil:
			return nil, 0, nil, fmt.Errorf("read %s: %w", d.key, err)
		}
		if !isManaged(cur) {
			probs = append(probs, schema.Problem{File: d.file, Line: d.line, Field: "metadata.name",
				Reason: fmt.Sprintf("%s %q already exists in the cluster and was not created from Git; Flotilla will not take it over: delete it from the cluster or rename it in the repository",
					d.obj.GetObjectKind().GroupVersionKind().Kind, displayName(d.key))})
			continue
		}
		ann := cur.GetAnnotations()
		if ann[schema.AnnotationAppliedHash] == d.hash && ann[schema.AnnotationSource] == d.source {
			continue
		}
		acts = append(acts, action{op: opUpdate, key: d.key, obj: mergeForUpdate(cur, d.obj), stored: cur, file: d.file, line: d.line})
	}
	var prunes, nsPrunes []action
	for _, k := range schema.Kinds() {
		if !k.FromGit {
			continue
		}
		objs, err := r.List(k.Resource, store.ListOptions{})
		if err != nil {
			return nil, 0, nil, fmt.Errorf("list %s: %w", k.Resource, err)
		}
		for _, o := range objs {
			key := objKey{k.Resource, o.GetNamespace(), o.GetName()}
			if !isManaged(o) || keep[key] {
				continue
			}
			a := action{op: opDelete, key: key, obj: o}
			if k.Kind == "Namespace" {
				nsPrunes = append(nsPrunes, a)
			} else {
				prunes = append(prunes, a)
			}
		}
	}
	acts = append(acts, prunes...)
	acts = append(acts, nsPrunes...) // namespaces last, after their contents
	return acts, owned, probs, nil
}

func isManaged(o schema.Object) bool {
	return o.GetAnnotations()[schema.AnnotationManagedBy] == schema.ManagedByGit
}

// autoNamespace is a namespace that objects in Git use but that the commit
// does not declare. It is marked as Git's (pruned when no longer used),
// except "default", which belongs to the cluster and is never pruned.
func autoNamespace(k schema.Kind, name, referencedBy string) schema.Object {
	obj := k.New()
	obj.SetName(name)
	if name == "default" {
		return obj
	}
	hash, _ := canonicalHash(obj)
	obj.SetAnnotations(map[string]string{
		schema.AnnotationManagedBy:   schema.ManagedByGit,
		schema.AnnotationSource:      "auto: used by " + referencedBy,
		schema.AnnotationAppliedHash: hash,
	})
	return obj
}

// mergeForUpdate builds the update of a Git-managed object: Git's object
// (labels, annotations, spec/data) over the stored identity. Annotations
// that Git does not set are dropped, except those in system domains
// (*kubernetes.io/, *k8s.io/, *flotilla.dev/) that controllers add, such
// as deployment.kubernetes.io/revision. Owner references and finalizers
// the cluster added are kept; status is kept by the store. A pod's node,
// which Git never sets but the scheduler does, is kept when Git leaves it
// empty (a bound pod's node is immutable). Defaults are the admission
// hook's: they are applied to the result like to any write.
func mergeForUpdate(cur, git schema.Object) schema.Object {
	upd := schema.Copy(git)
	if p, ok := upd.(*corev1.Pod); ok && p.Spec.NodeName == "" {
		if old, ok := cur.(*corev1.Pod); ok {
			p.Spec.NodeName = old.Spec.NodeName
		}
	}
	upd.SetUID(cur.GetUID())
	upd.SetResourceVersion(cur.GetResourceVersion())
	upd.SetCreationTimestamp(cur.GetCreationTimestamp())
	upd.SetGeneration(cur.GetGeneration())
	if len(upd.GetOwnerReferences()) == 0 {
		upd.SetOwnerReferences(cur.GetOwnerReferences())
	}
	fin := upd.GetFinalizers()
	for _, f := range cur.GetFinalizers() {
		if !contains(fin, f) {
			fin = append(fin, f)
		}
	}
	upd.SetFinalizers(fin)
	ann := upd.GetAnnotations()
	for k, v := range cur.GetAnnotations() {
		if _, set := ann[k]; !set && schema.SystemAnnotation(k) {
			ann[k] = v
		}
	}
	upd.SetAnnotations(ann)
	return upd
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// admit hands the creates, updates and deletes of acts to the admission
// hook, inside the transaction: every write of the commit, the namespaces
// its objects use included. Objects to write are copied first (a create's
// object is the desired set's), so the hook may complete them in place;
// the plan then writes what it made of them. The problems are the
// refusals and the warnings (Pod Security's warn level).
func admit(hook AdmitFunc, r Reader, acts []action) (schema.Problems, error) {
	if hook == nil {
		return nil, nil
	}
	objs := make([]Admission, 0, len(acts))
	for i, a := range acts {
		ad := Admission{Resource: a.key.Resource, File: a.file, Line: a.line}
		switch a.op {
		case opCreate:
			acts[i].obj = schema.Copy(a.obj)
			ad.Object = acts[i].obj
		case opUpdate:
			ad.Object, ad.Stored = a.obj, a.stored // a.obj is mergeForUpdate's own copy
		case opDelete:
			ad.Stored = a.obj
		}
		objs = append(objs, ad)
	}
	if len(objs) == 0 {
		return nil, nil
	}
	probs, err := hook(r, objs)
	if err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}
	return probs, nil
}

// applyActions performs the plan inside a transaction.
func applyActions(tx store.Tx, acts []action) error {
	for _, a := range acts {
		var err error
		switch a.op {
		case opCreate:
			_, err = tx.Create(a.obj)
		case opUpdate:
			_, err = tx.Update(a.obj)
		case opDelete:
			_, err = tx.Delete(a.key.Resource, a.key.Namespace, a.key.Name, store.DeleteOptions{UID: string(a.obj.GetUID())})
			if errors.Is(err, store.ErrNotFound) {
				err = nil
			}
		}
		if err != nil {
			return &applyError{act: a, err: err}
		}
	}
	return nil
}
