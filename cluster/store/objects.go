package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/flotilla-dev/flotilla/schema"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
)

// Key layout. Objects live under /registry/<resource>/<namespace>/<name>
// (namespace empty for cluster-scoped kinds); the store's own records live
// under /flotilla/, which sorts apart from /registry/.
const registryPrefix = "/registry/"

var (
	metaRevisionKey  = []byte("/flotilla/meta/revision")  // 8-byte big-endian: the current revision
	metaCompactedKey = []byte("/flotilla/meta/compacted") // 8-byte big-endian: history kept is > this
	metaPendingKey   = []byte("/flotilla/meta/pending")   // 8-byte big-endian: a sealed large commit's last revision
	eventPrefix      = []byte("/flotilla/events/")        // + 8-byte big-endian revision
)

func objectKey(resource, namespace, name string) []byte {
	return []byte(registryPrefix + resource + "/" + namespace + "/" + name)
}

// listPrefix is the key prefix of a List: one namespace or all of them.
func listPrefix(resource, namespace string) []byte {
	if namespace == "" {
		return []byte(registryPrefix + resource + "/")
	}
	return []byte(registryPrefix + resource + "/" + namespace + "/")
}

// readValue reads the value of one key, decrypted by open; ErrNotFound
// (wrapped with the key) if absent.
func readValue(btx *badger.Txn, open opener, key []byte) ([]byte, error) {
	item, err := btx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	data, err := item.ValueCopy(nil)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return open(key, data)
}

// readObject reads and decodes one stored object.
func readObject(btx *badger.Txn, open opener, resource, namespace, name string) (schema.Object, error) {
	k, err := kindOf(resource)
	if err != nil {
		return nil, err
	}
	key := objectKey(resource, namespace, name)
	data, err := readValue(btx, open, key)
	if err != nil {
		return nil, err
	}
	return decodeStored(k, key, data)
}

// decodeStored decodes an object read from the store. Whatever the bytes
// (a corrupted or hostile store) it never panics: it returns ErrCorrupt
// wrapped with the key and what to do.
func decodeStored(k schema.Kind, key, data []byte) (obj schema.Object, err error) {
	defer func() {
		if r := recover(); r != nil {
			obj, err = nil, fmt.Errorf("read %s: decoding panicked: %v (delete the object to clear it): %w", key, r, ErrCorrupt)
		}
	}()
	obj, err = schema.Decode(k, data)
	if err != nil {
		return nil, fmt.Errorf("read %s: %v (delete the object to clear it): %w", key, err, ErrCorrupt)
	}
	return obj, nil
}

// encodeObject is obj's JSON as stored under key; it never panics, whatever
// obj holds.
func encodeObject(key []byte, obj schema.Object) (data []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			data, err = nil, fmt.Errorf("encode %s: panicked: %v: %w", key, r, ErrInvalid)
		}
	}()
	data, err = schema.Encode(obj)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", key, err)
	}
	return data, nil
}

// listObjects scans one resource (and namespace) and filters, sorted by
// namespace then name (key order is not that order: '-' sorts before '/').
// staged, when not nil, overlays the scan: by object key, a txn's values
// of this resource (nil: deleted), in clear. open decrypts stored values.
func listObjects(btx *badger.Txn, open opener, resource string, opts ListOptions, staged map[string][]byte) ([]schema.Object, error) {
	k, err := kindOf(resource)
	if err != nil {
		return nil, err
	}
	f, err := newFilter(k, opts)
	if err != nil {
		return nil, err
	}
	prefix := listPrefix(resource, opts.Namespace)
	var objs []schema.Object
	add := func(key, data []byte) error {
		obj, err := decodeStored(k, key, data)
		if err != nil {
			return fmt.Errorf("list %s: %w", resource, err)
		}
		if f.matches(obj) {
			objs = append(objs, obj)
		}
		return nil
	}
	it := btx.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: prefix})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		if _, ok := staged[string(item.Key())]; ok {
			continue
		}
		err := item.Value(func(v []byte) error {
			plain, err := open(item.Key(), v)
			if err != nil {
				return fmt.Errorf("list %s: %w", resource, err)
			}
			return add(item.Key(), plain)
		})
		if err != nil {
			return nil, err
		}
	}
	for key, data := range staged {
		if data != nil && strings.HasPrefix(key, string(prefix)) {
			if err := add([]byte(key), data); err != nil {
				return nil, err
			}
		}
	}
	sort.Slice(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if a.GetNamespace() != b.GetNamespace() {
			return a.GetNamespace() < b.GetNamespace()
		}
		return a.GetName() < b.GetName()
	})
	return objs, nil
}

// kindOf resolves a resource name; an unknown one is ErrInvalid.
func kindOf(resource string) (schema.Kind, error) {
	k, ok := schema.KindByResource(resource)
	if !ok {
		return schema.Kind{}, fmt.Errorf("unknown resource %q: %w", resource, ErrInvalid)
	}
	return k, nil
}

// checkNamespace refuses a namespace on a cluster-scoped kind.
func checkNamespace(k schema.Kind, namespace string) error {
	if !k.Namespaced && namespace != "" {
		return fmt.Errorf("%s is cluster-scoped but namespace %q was given: %w", k.Kind, namespace, ErrInvalid)
	}
	if strings.Contains(namespace, "/") {
		return fmt.Errorf("namespace %q contains '/': %w", namespace, ErrInvalid)
	}
	return nil
}

// identify returns obj's kind and its normalized namespace ("default" for a
// namespaced kind without one), and checks the name when requireName is set.
func identify(obj schema.Object, requireName bool) (schema.Kind, string, error) {
	if v := reflect.ValueOf(obj); obj == nil || (v.Kind() == reflect.Pointer && v.IsNil()) {
		return schema.Kind{}, "", fmt.Errorf("nil object: %w", ErrInvalid)
	}
	k, err := schema.KindOf(obj)
	if err != nil {
		return schema.Kind{}, "", fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	ns := obj.GetNamespace()
	if k.Namespaced && ns == "" {
		ns = metav1NamespaceDefault
	}
	if err := checkNamespace(k, ns); err != nil {
		return k, "", err
	}
	name := obj.GetName()
	if requireName && name == "" {
		return k, "", fmt.Errorf("%s in namespace %q has no name: %w", k.Kind, ns, ErrInvalid)
	}
	if strings.Contains(name, "/") {
		return k, "", fmt.Errorf("%s name %q contains '/': %w", k.Kind, name, ErrInvalid)
	}
	return k, ns, nil
}

const metav1NamespaceDefault = "default"

// randomSuffix is what generateName gets: 5 lowercase alphanumerics, from the
// same alphabet as Kubernetes (no vowels, no confusable digits).
func randomSuffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, 5)
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}

// copyStatus sets dst's Status field to src's. ok is false for kinds with no
// status.
func copyStatus(dst, src schema.Object) bool {
	d := reflect.ValueOf(dst).Elem().FieldByName("Status")
	s := reflect.ValueOf(src).Elem().FieldByName("Status")
	if !d.IsValid() || !s.IsValid() || !d.CanSet() {
		return false
	}
	d.Set(s)
	return true
}

// specJSON is what a change of metadata.generation is decided on: the JSON
// of the "spec" field, or for kinds without one (ConfigMap, Secret,
// Endpoints, Event) of every field except metadata and status, so that a
// change of a ConfigMap's data bumps its generation too.
func specJSON(obj schema.Object) ([]byte, error) {
	v := reflect.ValueOf(obj).Elem()
	if f := v.FieldByName("Spec"); f.IsValid() {
		return json.Marshal(f.Interface())
	}
	c := reflect.New(v.Type()).Elem()
	c.Set(v)
	for _, name := range []string{"TypeMeta", "ObjectMeta", "Status"} {
		if f := c.FieldByName(name); f.IsValid() && f.CanSet() {
			f.Set(reflect.Zero(f.Type()))
		}
	}
	return json.Marshal(c.Addr().Interface())
}

func specChanged(a, b schema.Object) (changed bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			changed, err = false, fmt.Errorf("encode spec: panicked: %v: %w", r, ErrInvalid)
		}
	}()
	ja, err := specJSON(a)
	if err != nil {
		return false, err
	}
	jb, err := specJSON(b)
	if err != nil {
		return false, err
	}
	return !bytes.Equal(ja, jb), nil
}

// filter is a parsed ListOptions: what List and each watcher match against.
type filter struct {
	namespace string
	labels    labels.Selector // nil: everything
	fields    fields.Selector // nil: everything
}

// supportedField says which fields a field selector may name, per resource.
func supportedField(resource, field string) bool {
	switch field {
	case "metadata.name", "metadata.namespace":
		return true
	case "spec.nodeName":
		return resource == "pods"
	case "type":
		return resource == "secrets"
	}
	return false
}

func newFilter(k schema.Kind, opts ListOptions) (*filter, error) {
	if err := checkNamespace(k, opts.Namespace); err != nil {
		return nil, err
	}
	f := &filter{namespace: opts.Namespace}
	if opts.LabelSelector != "" {
		sel, err := labels.Parse(opts.LabelSelector)
		if err != nil {
			return nil, fmt.Errorf("label selector %q: %w: %w", opts.LabelSelector, err, ErrInvalid)
		}
		if !sel.Empty() {
			f.labels = sel
		}
	}
	if opts.FieldSelector != "" {
		sel, err := fields.ParseSelector(opts.FieldSelector)
		if err != nil {
			return nil, fmt.Errorf("field selector %q: %w: %w", opts.FieldSelector, err, ErrInvalid)
		}
		for _, r := range sel.Requirements() {
			if !supportedField(k.Resource, r.Field) {
				return nil, fmt.Errorf("field selector %q: field %q is not supported for %s: %w",
					opts.FieldSelector, r.Field, k.Resource, ErrInvalid)
			}
		}
		if !sel.Empty() {
			f.fields = sel
		}
	}
	return f, nil
}

func (f *filter) matches(obj schema.Object) bool {
	if f.namespace != "" && obj.GetNamespace() != f.namespace {
		return false
	}
	if f.labels != nil && !f.labels.Matches(labels.Set(obj.GetLabels())) {
		return false
	}
	if f.fields != nil {
		set := fields.Set{
			"metadata.name":      obj.GetName(),
			"metadata.namespace": obj.GetNamespace(),
		}
		switch o := obj.(type) {
		case *corev1.Pod:
			set["spec.nodeName"] = o.Spec.NodeName
		case *corev1.Secret:
			set["type"] = string(o.Type)
		}
		if !f.fields.Matches(set) {
			return false
		}
	}
	return true
}
