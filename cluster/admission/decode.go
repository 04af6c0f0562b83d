package admission

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"

	"github.com/flotilla-dev/flotilla/schema"
)

// FieldValidation is what a request asks of unknown and duplicate fields
// (the fieldValidation query parameter).
type FieldValidation string

const (
	// Strict refuses them (422 with each field's path). What kubectl
	// sends, and Flotilla's default: a field the server drops silently is
	// a field the user believes is honoured.
	Strict FieldValidation = "Strict"
	// Warn accepts the object without them and returns them as warnings.
	Warn FieldValidation = "Warn"
	// Ignore drops them silently.
	Ignore FieldValidation = "Ignore"
)

// ParseFieldValidation reads the fieldValidation parameter; "" is Strict.
func ParseFieldValidation(v string) (FieldValidation, bool) {
	switch FieldValidation(v) {
	case "", Strict:
		return Strict, true
	case Warn, Ignore:
		return FieldValidation(v), true
	}
	return "", false
}

// Decode is the first stage: a JSON body into an object of kind k, read
// case-sensitively as Kubernetes does. A body that is not JSON is a
// BadRequest; a value of the wrong type ("replicas: 1.5", "memory: lots")
// is an Invalid naming its field; unknown and duplicate fields are an
// Invalid under Strict, warnings under Warn, dropped under Ignore. The
// object's apiVersion and kind are set to k's.
func Decode(k schema.Kind, body []byte, mode FieldValidation) (schema.Object, []string, error) {
	obj := k.New()
	strict, err := sigsjson.UnmarshalStrict(body, obj)
	if err != nil {
		if syntax, _ := sigsjson.SyntaxErrorOffset(err); syntax || !json.Valid(body) {
			return nil, nil, BadRequest(k, "", "the request body is not valid JSON: %v", err)
		}
		var top map[string]json.RawMessage
		if json.Unmarshal(body, &top) != nil {
			return nil, nil, BadRequest(k, "", "the request body is not a JSON object")
		}
		path, detail := locate(reflect.TypeOf(obj).Elem(), body, nil)
		if detail == "" {
			detail = err.Error()
		}
		return nil, nil, Invalid(k, nameIn(top), field.ErrorList{causeError(field.ErrorTypeInvalid, pathString(path), detail)})
	}
	schema.SetTypeMeta(obj, k)
	var errs field.ErrorList
	var warnings []string
	for _, se := range strict {
		p, msg := "", se.Error()
		var fe sigsjson.FieldError
		if errors.As(se, &fe) {
			p = fe.FieldPath()
		}
		t := field.ErrorTypeInvalid
		if strings.Contains(msg, "duplicate field") {
			t = field.ErrorTypeDuplicate
		}
		switch mode {
		case Warn:
			warnings = append(warnings, msg)
		case Ignore:
		default:
			errs = append(errs, causeError(t, p, "strict decoding error: "+msg))
		}
	}
	if len(errs) > 0 {
		return nil, nil, Invalid(k, obj.GetName(), errs)
	}
	return obj, warnings, nil // strict decoding filled obj all the same
}

func nameIn(top map[string]json.RawMessage) string {
	var meta struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(top["metadata"], &meta)
	return meta.Name
}

func pathString(p *field.Path) string {
	if p == nil {
		return ""
	}
	return p.String()
}

// locate finds the value of raw that does not decode into t: it descends
// into the first field, element or entry that fails, and returns its path
// and why. A value that decodes returns "".
func locate(t reflect.Type, raw []byte, path *field.Path) (*field.Path, string) {
	err := json.Unmarshal(raw, reflect.New(t).Interface())
	if err == nil {
		return nil, ""
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()) {
		return path, why(err)
	}
	switch t.Kind() {
	case reflect.Struct:
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return path, why(err)
		}
		if p, d := locateFields(t, m, path); d != "" {
			return p, d
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return path, why(err) // []byte: base64
		}
		var a []json.RawMessage
		if json.Unmarshal(raw, &a) != nil {
			return path, why(err)
		}
		for i, e := range a {
			if p, d := locate(t.Elem(), e, path.Index(i)); d != "" {
				return p, d
			}
		}
	case reflect.Map:
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return path, why(err)
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if p, d := locate(t.Elem(), m[k], path.Key(k)); d != "" {
				return p, d
			}
		}
	}
	return path, why(err)
}

// locateFields tries each field of struct t that m holds, embedded
// (inline) structs included.
func locateFields(t reflect.Type, m map[string]json.RawMessage, path *field.Path) (*field.Path, string) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if p, d := locateFields(ft, m, path); d != "" {
					return p, d
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		raw, ok := m[name]
		if !ok {
			continue
		}
		child := field.NewPath(name)
		if path != nil {
			child = path.Child(name)
		}
		if p, d := locate(f.Type, raw, child); d != "" {
			return p, d
		}
	}
	return nil, ""
}

// why words a decoding error of one value.
func why(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s is not a valid %s", te.Value, typeName(te.Type))
	}
	var be base64.CorruptInputError
	if errors.As(err, &be) {
		return fmt.Sprintf("must be base64 (%v): put plain text under stringData instead", err)
	}
	return err.Error()
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int32, reflect.Int64, reflect.Int, reflect.Uint32, reflect.Uint64:
		return "integer (" + t.Kind().String() + ")"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice:
		return "list"
	}
	return t.String()
}
