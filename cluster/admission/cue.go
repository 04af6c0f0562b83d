package admission

import (
	"encoding/json"
	"testing/fstest"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/schema"
)

// SchemaValidator is the CUE schema of v as the pipeline's ObjectValidator:
// v itself once schema.Validator has a ValidateObject of its own, else a
// LoaderValidator on it.
func SchemaValidator(v *schema.Validator) ObjectValidator {
	if ov, ok := any(v).(ObjectValidator); ok {
		return ov
	}
	return LoaderValidator{V: v}
}

// LoaderValidator is an ObjectValidator on the manifest loader: it checks
// one object's JSON with schema.Validator.Load, the very code path of a
// commit and of `flotilla vet`. Use it where the validator has no
// ValidateObject of its own.
type LoaderValidator struct{ V *schema.Validator }

// objectFile is the name the object's JSON has for the loader.
const objectFile = "object.json"

// ValidateObject checks obj against the CUE schema; kinds a repository may
// not hold give nil.
func (l LoaderValidator) ValidateObject(obj schema.Object) schema.Problems {
	k, err := schema.KindOf(obj)
	if err != nil || !k.FromGit {
		return nil
	}
	if sec, ok := obj.(*corev1.Secret); ok && len(sec.Data) > 0 {
		// The generated CUE types a Secret's data as bytes, which base64
		// JSON never unifies with: every Secret with data would fail. Its
		// keys and size are checked in Go (validateKind).
		sec = sec.DeepCopy()
		sec.Data = nil
		obj = sec
	}
	data, err := schema.Encode(obj)
	if err != nil {
		return schema.Problems{{Reason: "cannot encode the object: " + err.Error()}}
	}
	// Go's encoding writes absent lists and maps as null, which the CUE
	// schema (like a manifest) reads as a value: leave them out.
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return schema.Problems{{Reason: "cannot encode the object: " + err.Error()}}
	}
	if data, err = json.Marshal(dropNulls(v)); err != nil {
		return schema.Problems{{Reason: "cannot encode the object: " + err.Error()}}
	}
	_, ps := l.V.Load(fstest.MapFS{objectFile: &fstest.MapFile{Data: data}})
	for i := range ps {
		ps[i].File, ps[i].Line, ps[i].Column = "", 0, 0
	}
	return ps
}

var _ ObjectValidator = LoaderValidator{}

// dropNulls removes the null members of objects, recursively.
func dropNulls(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if e == nil {
				delete(v, k)
			} else {
				v[k] = dropNulls(e)
			}
		}
	case []any:
		for i, e := range v {
			v[i] = dropNulls(e)
		}
	}
	return v
}
