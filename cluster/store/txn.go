package store

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"strconv"

	"github.com/dgraph-io/badger/v4"
	"github.com/flotilla-dev/flotilla/schema"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
)

// txn is one write transaction: every write of the store goes through one,
// whether it comes from Txn or from a single Create/Update/Delete. Its
// writes are staged in memory over a Badger read snapshot taken when it
// began; its reads see the staged writes. Nothing reaches Badger before
// commit (commit.go), so a transaction of any size can be staged and
// dropped.
type txn struct {
	snap *badger.Txn // read-only snapshot of the store as the txn began
	// staged is the latest staged value of each key the txn wrote, by
	// resource then object key; nil is a deletion.
	staged   map[string]map[string][]byte
	events   []change // every write in order; published after commit
	rev      int64    // the revision of the last staged write
	bytes    int64    // object JSON staged, summed over the writes
	keyBytes int64    // object keys staged, summed over the writes
	lim      limits
	tooLarge error // sticky: the txn went past a limit and cannot commit
	finished bool
	open     opener // decrypts what snap holds; staged values are in clear
	// parent is the batch this txn is staged on (replica.go): its staged
	// writes are read below this txn's own and above snap.
	parent *txn

	// Of a write set applied from the log (replica.go): the stored (sealed)
	// final value of each key, nil for a deletion, and the log index.
	sealedFinal map[string][]byte
	applied     uint64
}

// limits are the sizes a txn may stage (Config.MaxTxnBytes and friends).
type limits struct {
	txnBytes, objectBytes int64
	txnWrites             int
}

// keepDecodedBytes is how much staged JSON a txn keeps the decoded objects
// of, for publishing: past it (a big commit) events are decoded again at
// publish time, and only for resources someone watches.
const keepDecodedBytes = 4 << 20

func newTxn(snap *badger.Txn, rev int64, lim limits, open opener) *txn {
	return &txn{snap: snap, rev: rev, lim: lim, open: open, staged: map[string]map[string][]byte{}}
}

// TxStatusWriter is the optional ability of a Tx to replace only an
// object's status, as Interface.UpdateStatus does. The Tx of Badger.Txn has
// it: tx.(TxStatusWriter).UpdateStatus(obj).
type TxStatusWriter interface {
	UpdateStatus(obj schema.Object) (schema.Object, error)
}

// change is one write, as the event log and watchers see it. data is the
// object's JSON at rev (for a deletion, its last state), shared with the
// txn's staged value. obj is data decoded, or nil until publish decodes it;
// it is shared by every watcher and must not be modified (each watcher
// hands out its own copy).
type change struct {
	typ      EventType
	rev      int64
	resource string
	key      string
	data     []byte
	obj      schema.Object
	record   []byte // the stored event record, when it came from the log
}

var errTxnDone = errors.New("store: Tx used after its Txn function returned")

func (t *txn) check() error {
	if t.finished {
		return errTxnDone
	}
	return nil
}

// lookup reads one key as staged in this txn: the stored bytes, or
// ErrNotFound wrapped with the key.
func (t *txn) lookup(resource string, key []byte) ([]byte, error) {
	if data, ok := t.staged[resource][string(key)]; ok {
		if data == nil {
			return nil, fmt.Errorf("get %s: %w", key, ErrNotFound)
		}
		return data, nil
	}
	if t.parent != nil {
		return t.parent.lookup(resource, key)
	}
	return readValue(t.snap, t.open, key)
}

// overlay is what this txn and its parents staged of one resource: the
// staged values a List reads over snap.
func (t *txn) overlay(resource string) map[string][]byte {
	if t.parent == nil {
		return t.staged[resource]
	}
	below := t.parent.overlay(resource)
	if len(below) == 0 {
		return t.staged[resource]
	}
	merged := maps.Clone(below)
	maps.Copy(merged, t.staged[resource])
	return merged
}

// child is a new txn staged on t: it reads t's writes, and absorb adds
// its own to t, or it is dropped and t is as before.
func (t *txn) child(lim limits) *txn {
	c := newTxn(t.snap, t.rev, lim, t.open)
	c.parent = t
	return c
}

// absorb adds the writes of c, a finished child of t, to t.
func (t *txn) absorb(c *txn) {
	for resource, m := range c.staged {
		if t.staged[resource] == nil {
			t.staged[resource] = map[string][]byte{}
		}
		maps.Copy(t.staged[resource], m)
	}
	t.events = append(t.events, c.events...)
	t.rev = c.rev
	t.bytes += c.bytes
	t.keyBytes += c.keyBytes
}

// getObject reads and decodes one object as staged; it also returns the
// stored bytes.
func (t *txn) getObject(resource, namespace, name string) (schema.Object, []byte, error) {
	k, err := kindOf(resource)
	if err != nil {
		return nil, nil, err
	}
	key := objectKey(resource, namespace, name)
	data, err := t.lookup(resource, key)
	if err != nil {
		return nil, nil, err
	}
	obj, err := decodeStored(k, key, data)
	return obj, data, err
}

// Get returns one object, as staged in this transaction.
func (t *txn) Get(resource, namespace, name string) (schema.Object, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	obj, _, err := t.getObject(resource, namespace, name)
	return obj, err
}

// List returns the matching objects, as staged in this transaction.
func (t *txn) List(resource string, opts ListOptions) ([]schema.Object, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	return listObjects(t.snap, t.open, resource, opts, t.overlay(resource))
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
	switch _, err := t.lookup(k.Resource, key); {
	case err == nil:
		return nil, fmt.Errorf("create %s: %w", key, ErrExists)
	case !errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("create: %w", err)
	}
	obj.SetUID(uuid.NewUUID())
	obj.SetCreationTimestamp(metav1.Now().Rfc3339Copy())
	obj.SetGeneration(1)
	obj.SetDeletionTimestamp(nil)
	obj.SetDeletionGracePeriodSeconds(nil)
	if err := t.stage(k, key, obj, Added); err != nil {
		return nil, err
	}
	return schema.Copy(obj), nil
}

// freeName picks generateName + a random suffix that is not taken.
func (t *txn) freeName(resource, ns, prefix string) (string, error) {
	for range 8 {
		name := prefix + randomSuffix()
		_, err := t.lookup(resource, objectKey(resource, ns, name))
		if errors.Is(err, ErrNotFound) {
			return name, nil
		}
		if err != nil {
			return "", fmt.Errorf("create: %w", err)
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
	old, oldData, err := t.getObject(k.Resource, ns, in.GetName())
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
	data, err := encodeObject(key, obj)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if bytes.Equal(data, oldData) {
		return old, nil
	}
	if err := t.stage(k, key, obj, Modified); err != nil {
		return nil, err
	}
	return schema.Copy(obj), nil
}

// Delete stages the removal of an object, after checking the
// preconditions, and returns its last state with the deletion's revision.
// An object whose stored value cannot be decoded (ErrCorrupt) is removed
// too when no precondition is given; its last state is then only its
// kind, namespace and name.
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
	old, _, err := t.getObject(resource, namespace, name)
	if errors.Is(err, ErrCorrupt) && opts == (DeleteOptions{}) {
		old, err = k.New(), nil
		schema.SetTypeMeta(old, k)
		old.SetNamespace(namespace)
		old.SetName(name)
	}
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
	if err := t.stage(k, key, old, Deleted); err != nil {
		return nil, err
	}
	return schema.Copy(old), nil
}

// stage gives obj the next revision as its resourceVersion and stages the
// write: the key's new value (none for a deletion) and the event.
func (t *txn) stage(k schema.Kind, key []byte, obj schema.Object, typ EventType) error {
	rev := t.rev + 1
	obj.SetResourceVersion(strconv.FormatInt(rev, 10))
	data, err := encodeObject(key, obj)
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := t.admit(key, len(data), typ); err != nil {
		return err
	}
	m := t.staged[k.Resource]
	if m == nil {
		m = map[string][]byte{}
		t.staged[k.Resource] = m
	}
	if typ == Deleted {
		m[string(key)] = nil
	} else {
		m[string(key)] = data
	}
	ch := change{typ: typ, rev: rev, resource: k.Resource, key: string(key), data: data}
	if t.bytes < keepDecodedBytes {
		ch.obj = obj
	}
	t.events = append(t.events, ch)
	t.rev = rev
	t.bytes += int64(len(data))
	t.keyBytes += int64(len(key))
	return nil
}

// eachFinal calls fn with the final value of each key the txn wrote (nil
// for a deletion), in no particular order.
func (t *txn) eachFinal(fn func(key, data []byte) error) error {
	for _, m := range t.staged {
		for key, data := range m {
			if err := fn([]byte(key), data); err != nil {
				return err
			}
		}
	}
	return nil
}

// finals is how many keys the txn wrote.
func (t *txn) finals() int {
	n := 0
	for _, m := range t.staged {
		n += len(m)
	}
	return n
}

// admit checks a write of n bytes of JSON against the limits. Past the
// limits of a transaction the txn can no longer commit: the error sticks.
func (t *txn) admit(key []byte, n int, typ EventType) error {
	if t.tooLarge != nil {
		return t.tooLarge
	}
	if typ != Deleted && int64(n) > t.lim.objectBytes {
		return &LimitError{Limit: "MaxObjectBytes", Value: t.lim.objectBytes,
			Msg: fmt.Sprintf("write %s: the object is %d bytes of JSON, more than the store's limit of %d per object (MaxObjectBytes)", key, n, t.lim.objectBytes)}
	}
	if len(t.events) >= t.lim.txnWrites {
		t.tooLarge = &LimitError{Limit: "MaxTxnWrites", Value: int64(t.lim.txnWrites),
			Msg: fmt.Sprintf("write %s: the transaction makes more than %d writes, the store's limit per transaction (MaxTxnWrites); split the change", key, t.lim.txnWrites)}
		return t.tooLarge
	}
	if t.bytes+int64(n) > t.lim.txnBytes {
		t.tooLarge = &LimitError{Limit: "MaxTxnBytes", Value: t.lim.txnBytes,
			Msg: fmt.Sprintf("write %s: the transaction writes more than %d bytes (%d MiB) of objects, the store's limit per transaction (MaxTxnBytes); split the change", key, t.lim.txnBytes, t.lim.txnBytes>>20)}
		return t.tooLarge
	}
	return nil
}
