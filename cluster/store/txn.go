package store

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"github.com/dgraph-io/badger/v4"
	"github.com/flotilla-dev/flotilla/schema"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
)

// txn is one write transaction: every write of the store goes through one,
// whether it comes from Txn or from a single Create/Update/Delete. Reads see
// the staged writes (Badger's read-your-writes in an update transaction).
type txn struct {
	btx      *badger.Txn
	rev      int64    // the revision of the last staged write
	events   []change // staged, published after commit
	finished bool
}

// TxStatusWriter is the optional ability of a Tx to replace only an
// object's status, as Interface.UpdateStatus does. The Tx of Badger.Txn has
// it: tx.(TxStatusWriter).UpdateStatus(obj).
type TxStatusWriter interface {
	UpdateStatus(obj schema.Object) (schema.Object, error)
}

// change is one committed write, as the event log and watchers see it.
// obj is shared by every watcher and must not be modified; each watcher
// hands out its own copy.
type change struct {
	typ      EventType
	rev      int64
	resource string
	obj      schema.Object
}

var errTxnDone = errors.New("store: Tx used after its Txn function returned")

func (t *txn) check() error {
	if t.finished {
		return errTxnDone
	}
	return nil
}

// Get returns one object, as staged in this transaction.
func (t *txn) Get(resource, namespace, name string) (schema.Object, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	obj, _, err := getObject(t.btx, resource, namespace, name)
	return obj, err
}

// List returns the matching objects, as staged in this transaction.
func (t *txn) List(resource string, opts ListOptions) ([]schema.Object, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	return listObjects(t.btx, resource, opts)
}

// Create stages a new object.
func (t *txn) Create(in schema.Object) (schema.Object, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	k, ns, err := identify(in, false)
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	obj := schema.Copy(in)
	obj.SetNamespace(ns)
	if obj.GetName() == "" {
		if obj.GetGenerateName() == "" {
			return nil, fmt.Errorf("create %s in namespace %q: no name nor generateName: %w", k.Kind, ns, ErrInvalid)
		}
		name, err := t.freeName(k.Resource, ns, obj.GetGenerateName())
		if err != nil {
			return nil, err
		}
		obj.SetName(name)
	}
	key := objectKey(k.Resource, ns, obj.GetName())
	switch _, err := t.btx.Get(key); {
	case err == nil:
		return nil, fmt.Errorf("create %s: %w", key, ErrExists)
	case !errors.Is(err, badger.ErrKeyNotFound):
		return nil, fmt.Errorf("create %s: %w", key, err)
	}
	obj.SetUID(uuid.NewUUID())
	obj.SetCreationTimestamp(metav1.Now().Rfc3339Copy())
	obj.SetGeneration(1)
	obj.SetDeletionTimestamp(nil)
	obj.SetDeletionGracePeriodSeconds(nil)
	if err := t.put(k, key, obj, Added); err != nil {
		return nil, err
	}
	return schema.Copy(obj), nil
}

// freeName picks generateName + a random suffix that is not taken.
func (t *txn) freeName(resource, ns, prefix string) (string, error) {
	for range 8 {
		name := prefix + randomSuffix()
		_, err := t.btx.Get(objectKey(resource, ns, name))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return name, nil
		}
		if err != nil {
			return "", fmt.Errorf("create %s: %w", objectKey(resource, ns, name), err)
		}
	}
	return "", fmt.Errorf("create %s: no free name for generateName %q: %w",
		objectKey(resource, ns, prefix), prefix, ErrExists)
}

// Update stages new metadata and spec of an object; status, uid and
// creationTimestamp stay as stored. See Interface.Update.
func (t *txn) Update(in schema.Object) (schema.Object, error) {
	return t.update(in, false)
}

// UpdateStatus stages a new status of an object; everything else stays as
// stored. See Interface.UpdateStatus.
func (t *txn) UpdateStatus(in schema.Object) (schema.Object, error) {
	return t.update(in, true)
}

func (t *txn) update(in schema.Object, status bool) (schema.Object, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	k, ns, err := identify(in, true)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	key := objectKey(k.Resource, ns, in.GetName())
	old, oldData, err := getObject(t.btx, k.Resource, ns, in.GetName())
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if rv := in.GetResourceVersion(); rv != "" && rv != old.GetResourceVersion() {
		return nil, fmt.Errorf("update %s: resourceVersion %s, stored %s: %w",
			key, rv, old.GetResourceVersion(), ErrConflict)
	}
	var obj schema.Object
	if status {
		obj = schema.Copy(old)
		if !copyStatus(obj, schema.Copy(in)) { // a copy: in stays the caller's
			return nil, fmt.Errorf("update status of %s: %s has no status: %w", key, k.Kind, ErrInvalid)
		}
	} else {
		obj = schema.Copy(in)
		obj.SetNamespace(ns)
		copyStatus(obj, old)
		obj.SetUID(old.GetUID())
		obj.SetCreationTimestamp(old.GetCreationTimestamp())
		obj.SetDeletionTimestamp(old.GetDeletionTimestamp())
		obj.SetDeletionGracePeriodSeconds(old.GetDeletionGracePeriodSeconds())
		obj.SetGeneration(old.GetGeneration())
		changed, err := specChanged(old, obj)
		if err != nil {
			return nil, fmt.Errorf("update %s: compare spec: %w", key, err)
		}
		if changed {
			obj.SetGeneration(old.GetGeneration() + 1)
		}
	}
	// The no-op rule: the object as it would be stored, at the old
	// revision, is byte-identical to what is stored.
	obj.SetResourceVersion(old.GetResourceVersion())
	data, err := schema.Encode(obj)
	if err != nil {
		return nil, fmt.Errorf("update %s: encode: %w", key, err)
	}
	if bytes.Equal(data, oldData) {
		return old, nil
	}
	if err := t.put(k, key, obj, Modified); err != nil {
		return nil, err
	}
	return schema.Copy(obj), nil
}

// Delete stages the removal of an object, after checking the
// preconditions, and returns its last state with the deletion's revision.
func (t *txn) Delete(resource, namespace, name string, opts DeleteOptions) (schema.Object, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	k, err := kindOf(resource)
	if err != nil {
		return nil, fmt.Errorf("delete: %w", err)
	}
	if err := checkNamespace(k, namespace); err != nil {
		return nil, fmt.Errorf("delete: %w", err)
	}
	key := objectKey(resource, namespace, name)
	old, _, err := getObject(t.btx, resource, namespace, name)
	if err != nil {
		return nil, fmt.Errorf("delete: %w", err)
	}
	if opts.ResourceVersion != "" && opts.ResourceVersion != old.GetResourceVersion() {
		return nil, fmt.Errorf("delete %s: precondition resourceVersion %s, stored %s: %w",
			key, opts.ResourceVersion, old.GetResourceVersion(), ErrConflict)
	}
	if opts.UID != "" && opts.UID != string(old.GetUID()) {
		return nil, fmt.Errorf("delete %s: precondition uid %s, stored %s: %w",
			key, opts.UID, old.GetUID(), ErrConflict)
	}
	if err := t.btx.Delete(key); err != nil {
		return nil, fmt.Errorf("delete %s: %w", key, err)
	}
	if err := t.stage(k, key, old, Deleted); err != nil {
		return nil, err
	}
	return schema.Copy(old), nil
}

// put stores obj under the next revision and stages its event.
func (t *txn) put(k schema.Kind, key []byte, obj schema.Object, typ EventType) error {
	rev := t.rev + 1
	obj.SetResourceVersion(strconv.FormatInt(rev, 10))
	data, err := schema.Encode(obj)
	if err != nil {
		return fmt.Errorf("write %s: encode: %w", key, err)
	}
	if err := t.btx.Set(key, data); err != nil {
		return fmt.Errorf("write %s at revision %d: %w", key, rev, err)
	}
	return t.logEvent(k, key, obj, data, typ, rev)
}

// stage logs a change that put did not write (a deletion): obj gets the
// next revision as its resourceVersion.
func (t *txn) stage(k schema.Kind, key []byte, obj schema.Object, typ EventType) error {
	rev := t.rev + 1
	obj.SetResourceVersion(strconv.FormatInt(rev, 10))
	data, err := schema.Encode(obj)
	if err != nil {
		return fmt.Errorf("write %s: encode: %w", key, err)
	}
	return t.logEvent(k, key, obj, data, typ, rev)
}

func (t *txn) logEvent(k schema.Kind, key []byte, obj schema.Object, data []byte, typ EventType, rev int64) error {
	if err := t.btx.Set(eventKey(rev), encodeEvent(typ, k.Resource, data)); err != nil {
		return fmt.Errorf("write %s: log event at revision %d: %w", key, rev, err)
	}
	t.rev = rev
	t.events = append(t.events, change{typ: typ, rev: rev, resource: k.Resource, obj: obj})
	return nil
}
