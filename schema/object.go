package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"

	cuejson "cuelang.org/go/encoding/json"
)

// ValidateObject checks one typed object, as an API request body decodes
// into, against the CUE definition its kind has in a manifest (#Deployment,
// ...): the API refuses exactly what a commit refuses, with the same
// reasons. Each Problem's Field is the JSON path of the field
// ("spec.replicas", "spec.template.spec.containers[0].image"); File, Line
// and Column are empty. Warnings (fields accepted but not honoured) are
// not reported here.
//
// What the server sets is not judged: metadata's uid, resourceVersion,
// generation, creationTimestamp, deletionTimestamp,
// deletionGracePeriodSeconds, managedFields and selfLink, and status. An
// object with generateName and no name is judged with the name the server
// would make (the prefix and five characters), and a problem of that name
// is reported at metadata.generateName. A typed object cannot tell
// a missing field from its zero value: a null, and an empty string in a
// field Go always encodes, count as missing (Kubernetes says "Required
// value" for both); other zero values (a port 0) are judged as written. An
// empty map or list that Go omits is missing too (so `requests: {}`
// without `storage` is reported at `requests`, where a commit's would be at
// `requests.storage`).
//
// Kinds that have no CUE definition (they never come from Git: Node,
// Endpoints, EndpointSlice, Event, SyncStatus) give nil: validate them in
// Go. Safe for concurrent use; it validates on one of the Validator's CUE
// contexts (one per core), in about the time Load takes per document.
func (v *Validator) ValidateObject(obj Object) (ps Problems) {
	k, err := KindOf(obj)
	if err != nil {
		return Problems{{Reason: err.Error()}}
	}
	if !k.FromGit {
		return nil
	}
	data, generated, err := objectJSON(obj, k)
	if err != nil {
		return Problems{{Reason: fmt.Sprintf("cannot encode the %s: %v", k.Kind, err)}}
	}
	if n := int64(len(data)); n > v.limits.MaxObjectBytes {
		return Problems{limitProblem("", 0, 0, LimitObjectBytes,
			fmt.Sprintf("object is %s of JSON, larger than %s", formatBytes(n), formatBytes(v.limits.MaxObjectBytes)), v.limits.MaxObjectBytes)}
	}
	expr, err := cuejson.Extract("", data)
	if err != nil {
		return Problems{{Reason: fmt.Sprintf("cannot read the %s: %v", k.Kind, err)}}
	}
	e, err := v.get()
	if err != nil {
		return Problems{{Reason: fmt.Sprintf("internal error: %v", err)}}
	}
	defer v.put(e)
	defer func() {
		if r := recover(); r != nil {
			ps = Problems{{Reason: fmt.Sprintf("internal error while validating the %s (please report it): %v", k.Kind, r)}}
		}
	}()
	val := e.ctx.BuildExpr(expr)
	if err := val.Err(); err != nil {
		return errorProblems("", "", err)
	}
	ps = e.validate(k, "", "", val)
	for i := range ps {
		ps[i].Line, ps[i].Column = 0, 0
		if generated && ps[i].Field == "metadata.name" {
			ps[i].Field = "metadata.generateName"
			prefix := obj.GetGenerateName()
			ps[i].Reason = strings.ReplaceAll(ps[i].Reason, strconv.Quote(prefix+generatedSuffix), strconv.Quote(prefix))
		}
	}
	return ps
}

// serverSetMeta are the metadata fields the API server sets: they are not
// the user's to get wrong.
var serverSetMeta = []string{"uid", "resourceVersion", "generation", "creationTimestamp",
	"deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"}

// generatedSuffix stands for the five characters the API server appends
// to generateName.
const generatedSuffix = "x0x0x"

// objectJSON is obj's JSON as a manifest would have it: apiVersion and
// kind set; status, server-set metadata and nulls dropped; an empty string
// dropped where Go writes a field whatever its value (see ValidateObject).
// An object with generateName and no name is given the name the server
// would make of it (generated is then true).
func objectJSON(obj Object, k Kind) (data []byte, generated bool, err error) {
	obj = obj.DeepCopyObject().(Object)
	SetTypeMeta(obj, k)
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, false, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // keep 3 an integer
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, false, err
	}
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok {
		for _, f := range serverSetMeta {
			delete(meta, f)
		}
		if prefix, _ := meta["generateName"].(string); prefix != "" && meta["name"] == nil {
			meta["name"] = prefix + generatedSuffix
			generated = true
		}
	}
	clean(m, reflect.TypeOf(obj))
	data, err = json.Marshal(m)
	return data, generated, err
}

// clean drops, in x (t's JSON), every null, and every empty string of a
// string field without omitempty.
func clean(x any, t reflect.Type) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch x := x.(type) {
	case map[string]any:
		var fields map[string]jsonField
		if t != nil && t.Kind() == reflect.Struct && !isJSONLeaf(t) {
			fields = jsonFields(t)
		}
		for key, val := range x {
			if val == nil {
				delete(x, key)
				continue
			}
			var ft reflect.Type
			switch {
			case fields != nil:
				f, ok := fields[key]
				if ok && (f.requiredString && val == "" || f.zeroJSON != "" && isJSON(val, f.zeroJSON)) {
					delete(x, key)
					continue
				}
				ft = f.typ
			case t != nil && t.Kind() == reflect.Map:
				ft = t.Elem()
			}
			clean(val, ft)
		}
	case []any:
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		for _, val := range x {
			clean(val, et)
		}
	}
}

// jsonField is what clean needs to know of a struct field.
type jsonField struct {
	typ            reflect.Type
	requiredString bool   // a string without omitempty: Go writes "" when unset
	zeroJSON       string // for a value type with omitempty that writes its own JSON (an IntOrString): its zero, which Go writes when unset
}

var jsonFieldCache sync.Map // reflect.Type → map[string]jsonField

// jsonFields maps the JSON names of t's fields (inline embeddings
// included) to their types.
func jsonFields(t reflect.Type) map[string]jsonField {
	if m, ok := jsonFieldCache.Load(t); ok {
		return m.(map[string]jsonField)
	}
	m := map[string]jsonField{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					if _, ok := m[k]; !ok {
						m[k] = v
					}
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		omit := false
		for _, o := range strings.Split(opts, ",") {
			if o == "omitempty" || o == "omitzero" {
				omit = true
			}
		}
		jf := jsonField{typ: f.Type, requiredString: f.Type.Kind() == reflect.String && !omit}
		if omit && f.Type.Kind() == reflect.Struct && isJSONLeaf(f.Type) {
			if z, err := json.Marshal(reflect.Zero(f.Type).Interface()); err == nil {
				jf.zeroJSON = string(z)
			}
		}
		m[name] = jf
	}
	jsonFieldCache.Store(t, m)
	return m
}

// isJSON says whether val (decoded with UseNumber) encodes as js.
func isJSON(val any, js string) bool {
	b, err := json.Marshal(val)
	return err == nil && string(b) == js
}

var jsonMarshaler = reflect.TypeFor[json.Marshaler]()

// isJSONLeaf says whether t writes its own JSON (a Quantity, a Time, an
// IntOrString): its JSON is not its fields.
func isJSONLeaf(t reflect.Type) bool {
	return t.Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(jsonMarshaler)
}
