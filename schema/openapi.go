package schema

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/load"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// KindSchema is the OpenAPI schema of one kind's objects.
type KindSchema struct {
	Kind Kind
	// Name is the kind's schema name as Kubernetes publishes it, from its
	// Go type: "io.k8s.api.apps.v1.Deployment".
	Name string
	// Schema is a JSON Schema object in the subset OpenAPI v2 and v3 share
	// (type, format, enum, properties, required, items,
	// additionalProperties, description and Kubernetes' x- extensions),
	// every nested type expanded in place. It carries
	// x-kubernetes-group-version-kind. Callers must not modify it.
	Schema map[string]any
	// FromCUE is true when the schema comes from a CUE definition; the
	// kinds that have none (written only by Flotilla itself) are described
	// from their Go types alone.
	FromCUE bool
}

// OpenAPISchemas returns the schema of every kind, in Kinds() order. They
// are derived once, on the first call, from the CUE definitions that
// validate the kinds (schema/*.cue: #Deployment, …; for kinds of the API
// that no repository may hold, the generated definition: corev1.#Node),
// walked field by field: the same field names, required fields (`!`),
// enumerations and maps. Descriptions are the CUE doc comments (from the
// Kubernetes Go sources, through `cue get go`), else the Kubernetes API
// types' own documentation (SwaggerDoc). Where the CUE says nothing about a
// value (`_`, as it does for Quantity, IntOrString and Time), the Go type
// decides its form, as Kubernetes' published schema does.
func OpenAPISchemas() ([]KindSchema, error) { return openAPISchemas() }

var openAPISchemas = sync.OnceValues(buildOpenAPISchemas)

// generatedPackages are the CUE packages of the generated Kubernetes
// types (cue.mod/gen), by Go package path.
var generatedPackages = []string{"k8s.io/api/core/v1", "k8s.io/api/apps/v1", "k8s.io/api/networking/v1", "k8s.io/api/storage/v1", "k8s.io/api/rbac/v1"}

func buildOpenAPISchemas() ([]KindSchema, error) {
	overlay, err := embeddedOverlay()
	if err != nil {
		return nil, err
	}
	ctx := cuecontext.New()
	pkg, err := buildModule(ctx, overlay)
	if err != nil {
		return nil, err
	}
	cfg := &load.Config{Dir: embeddedRoot, ModuleRoot: embeddedRoot, Overlay: overlay}
	gen := map[string]cue.Value{}
	for i, inst := range load.Instances(generatedPackages, cfg) {
		if inst.Err != nil {
			return nil, fmt.Errorf("schema: load %s: %w", generatedPackages[i], inst.Err)
		}
		v := ctx.BuildInstance(inst)
		if err := v.Err(); err != nil {
			return nil, fmt.Errorf("schema: build %s: %w", generatedPackages[i], err)
		}
		gen[generatedPackages[i]] = v
	}
	var out []KindSchema
	for _, k := range kinds {
		def := pkg.LookupPath(cue.ParsePath("#" + k.Kind))
		if !def.Exists() {
			if p, ok := gen[k.typ.PkgPath()]; ok {
				def = p.LookupPath(cue.ParsePath("#" + k.Kind))
			}
		}
		var s map[string]any
		if def.Exists() {
			if err := def.Err(); err != nil {
				return nil, fmt.Errorf("schema: #%s: %w", k.Kind, err)
			}
			s = cueSchema(def, k.typ, 0)
		} else {
			s = goSchema(k.typ, 0)
		}
		if d := typeDoc(k.typ); d != "" {
			s["description"] = d
		}
		s["x-kubernetes-group-version-kind"] = []map[string]string{{"group": k.Group, "version": k.Version, "kind": k.Kind}}
		out = append(out, KindSchema{Kind: k, Name: openAPIName(k.typ), Schema: s, FromCUE: def.Exists()})
	}
	return out, nil
}

// openAPIName is Kubernetes' name for a Go type's schema: the package
// path with its domain reversed, then the type name.
func openAPIName(t reflect.Type) string {
	parts := strings.Split(t.PkgPath(), "/")
	domain := strings.Split(parts[0], ".")
	for i, j := 0, len(domain)-1; i < j; i, j = i+1, j-1 {
		domain[i], domain[j] = domain[j], domain[i]
	}
	return strings.Join(append(append(domain, parts[1:]...), t.Name()), ".")
}

// maxSchemaDepth stops the expansion of a recursive type.
const maxSchemaDepth = 32

var (
	quantityType    = reflect.TypeOf(resource.Quantity{})
	intOrStringType = reflect.TypeOf(intstr.IntOrString{})
	timeType        = reflect.TypeOf(metav1.Time{})
	microTimeType   = reflect.TypeOf(metav1.MicroTime{})
	durationType    = reflect.TypeOf(metav1.Duration{})
	rawType         = reflect.TypeOf(runtime.RawExtension{})
	fieldsV1Type    = reflect.TypeOf(metav1.FieldsV1{})
)

// cueSchema is the schema of the CUE value v; t is the Go type it
// describes (nil when unknown).
func cueSchema(v cue.Value, t reflect.Type, depth int) map[string]any {
	t = deref(t)
	if s, ok := specialSchema(t); ok {
		return s
	}
	if depth > maxSchemaDepth {
		return map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
	}
	k := v.IncompleteKind()
	switch {
	case k == cue.TopKind && t != nil:
		return goSchema(t, depth)
	case k == cue.StructKind:
		return cueStruct(v, t, depth)
	case k == cue.ListKind:
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && t.Elem().Kind() != reflect.Uint8 {
			et = t.Elem()
		}
		return map[string]any{"type": "array", "items": cueSchema(v.LookupPath(cue.MakePath(cue.AnyIndex)), et, depth+1)}
	}
	s := map[string]any{}
	switch k &^ cue.NullKind {
	case cue.StringKind:
		s["type"] = "string"
	case cue.BytesKind:
		s["type"], s["format"] = "string", "byte"
	case cue.BoolKind:
		s["type"] = "boolean"
	case cue.IntKind:
		s["type"] = "integer"
		if t != nil {
			switch t.Kind() {
			case reflect.Int32, reflect.Uint32, reflect.Int16, reflect.Uint16, reflect.Int8, reflect.Uint8:
				s["format"] = "int32"
			default:
				s["format"] = "int64"
			}
		}
	case cue.FloatKind, cue.NumberKind:
		s["type"], s["format"] = "number", "double"
	case cue.IntKind | cue.StringKind:
		s["type"], s["format"] = "string", "int-or-string"
		s["x-kubernetes-int-or-string"] = true
	case cue.BottomKind:
		return s
	default:
		if k&cue.StringKind != 0 {
			s["type"] = "string" // a number or a string (a quantity) is sent as either
		} else if t != nil {
			return goSchema(t, depth)
		}
	}
	if e := enum(v); e != nil {
		s["enum"] = e
	}
	return s
}

// enum lists the values v allows when it is (or is narrowed by) a
// disjunction of concrete scalars, or is one concrete scalar; else nil.
func enum(v cue.Value) []any {
	if v.IsConcrete() {
		return scalars([]cue.Value{v})
	}
	cands := candidates(v, 0)
	if cands == nil {
		return nil
	}
	// A disjunction narrowed by other conjuncts: keep what v accepts.
	var out []any
	for _, c := range cands {
		if v.Unify(v.Context().Encode(c)).Validate(cue.Concrete(true)) == nil {
			out = append(out, c)
		}
	}
	return out
}

// candidates are the values of the first disjunction of scalars among
// v's conjuncts.
func candidates(v cue.Value, depth int) []any {
	op, args := v.Expr()
	switch {
	case op == cue.OrOp:
		return scalars(args)
	case op == cue.AndOp && depth < 8:
		for _, a := range args {
			if c := candidates(a, depth+1); c != nil {
				return c
			}
		}
	}
	return nil
}

func scalars(alts []cue.Value) []any {
	var out []any
	for _, a := range alts {
		if !a.IsConcrete() || a.Kind() == cue.NullKind || a.Kind()&(cue.StructKind|cue.ListKind) != 0 {
			return nil
		}
		var x any
		if err := a.Decode(&x); err != nil {
			return nil
		}
		out = append(out, x)
	}
	return out
}

func cueStruct(v cue.Value, t reflect.Type, depth int) map[string]any {
	s := map[string]any{"type": "object"}
	props := map[string]any{}
	var required []string
	it, err := v.Fields(cue.Optional(true))
	if err == nil {
		for it.Next() {
			sel := it.Selector()
			if !sel.IsString() {
				continue
			}
			name := sel.Unquoted()
			ft := goField(t, name)
			fs := cueSchema(it.Value(), ft, depth+1)
			if d := fieldDoc(it.Value(), t, name); d != "" {
				fs["description"] = d
			}
			props[name] = fs
			if sel.ConstraintType() == cue.RequiredConstraint {
				required = append(required, name)
			}
		}
	}
	if len(props) > 0 {
		s["properties"] = props
	}
	if len(required) > 0 {
		s["required"] = required
	}
	if elem := v.LookupPath(cue.MakePath(cue.AnyString)); elem.Exists() {
		var et reflect.Type
		if t != nil && t.Kind() == reflect.Map {
			et = t.Elem()
		}
		s["additionalProperties"] = cueSchema(elem, et, depth+1)
	} else if len(props) == 0 && t != nil && t.Kind() == reflect.Map {
		s["additionalProperties"] = goSchema(t.Elem(), depth+1)
	}
	return s
}

// fieldDoc is the description of field name: its CUE doc comment, else
// the Go type's SwaggerDoc.
func fieldDoc(v cue.Value, parent reflect.Type, name string) string {
	var parts []string
	for _, cg := range v.Doc() {
		if d := cleanDoc(cg.Text()); d != "" && !containsString(parts, d) {
			parts = append(parts, d)
		}
	}
	if len(parts) > 0 {
		return strings.Join(parts, "\n\n")
	}
	return goFieldDoc(parent, name)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// cleanDoc drops the Go generators' markers (+optional, +listType=map, …),
// TODOs and what follows a "---" line from a doc comment.
func cleanDoc(text string) string {
	var keep []string
	for _, line := range strings.Split(text, "\n") {
		l := strings.TrimSpace(line)
		if l == "---" { // Kubernetes' marker: what follows is not public
			break
		}
		if strings.HasPrefix(l, "+") || strings.HasPrefix(l, "TODO") {
			continue
		}
		keep = append(keep, strings.TrimRight(line, " \t"))
	}
	return strings.TrimSpace(strings.Join(keep, "\n"))
}

// ---- The Go side: field lookup, SwaggerDoc, and types the CUE leaves open ----

func deref(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// jsonName is a struct field's JSON name, "" for an inlined embedding,
// "-" for a field that is not serialised.
func jsonName(f reflect.StructField) string {
	tag, ok := f.Tag.Lookup("json")
	if !ok {
		if f.Anonymous {
			return ""
		}
		return f.Name
	}
	name, opts, _ := strings.Cut(tag, ",")
	if name == "" && (f.Anonymous || strings.Contains(","+opts+",", ",inline,")) {
		return ""
	}
	if name == "" {
		return f.Name
	}
	return name
}

// goField finds the Go type of the JSON field name of struct type t
// (looking into inlined embeddings), or nil.
func goField(t reflect.Type, name string) reflect.Type {
	f, _, ok := findField(deref(t), name)
	if !ok {
		return nil
	}
	return f.Type
}

// findField returns the field and the struct type that declares it.
func findField(t reflect.Type, name string) (reflect.StructField, reflect.Type, bool) {
	if t == nil || t.Kind() != reflect.Struct {
		return reflect.StructField{}, nil, false
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		switch jsonName(f) {
		case name:
			return f, t, true
		case "":
			if g, in, ok := findField(deref(f.Type), name); ok {
				return g, in, true
			}
		}
	}
	return reflect.StructField{}, nil, false
}

type swaggerDoc interface{ SwaggerDoc() map[string]string }

func swaggerDocs(t reflect.Type) map[string]string {
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	if d, ok := reflect.New(t).Interface().(swaggerDoc); ok {
		return d.SwaggerDoc()
	}
	return nil
}

// typeDoc is a Go type's own documentation.
func typeDoc(t reflect.Type) string { return swaggerDocs(deref(t))[""] }

// goFieldDoc is the SwaggerDoc of field name of struct type parent.
func goFieldDoc(parent reflect.Type, name string) string {
	_, in, ok := findField(deref(parent), name)
	if !ok {
		return ""
	}
	return swaggerDocs(in)[name]
}

// specialSchema is the published form of the API types whose JSON is
// not their Go structure.
func specialSchema(t reflect.Type) (map[string]any, bool) {
	switch t {
	case nil:
		return nil, false
	case quantityType:
		return map[string]any{"type": "string"}, true
	case intOrStringType:
		return map[string]any{"type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": true}, true
	case timeType, microTimeType:
		return map[string]any{"type": "string", "format": "date-time"}, true
	case durationType:
		return map[string]any{"type": "string"}, true
	case rawType, fieldsV1Type:
		return map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}, true
	}
	return nil, false
}

var (
	marshalerType     = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
	textMarshalerType = reflect.TypeOf((*interface{ MarshalText() ([]byte, error) })(nil)).Elem()
)

// goSchema is the schema of a Go type, for what the CUE leaves open.
func goSchema(t reflect.Type, depth int) map[string]any {
	t = deref(t)
	if s, ok := specialSchema(t); ok {
		return s
	}
	if depth > maxSchemaDepth || t == nil {
		return map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int32, reflect.Uint32, reflect.Int16, reflect.Uint16, reflect.Int8, reflect.Uint8:
		return map[string]any{"type": "integer", "format": "int32"}
	case reflect.Int, reflect.Int64, reflect.Uint, reflect.Uint64:
		return map[string]any{"type": "integer", "format": "int64"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number", "format": "double"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "format": "byte"}
		}
		return map[string]any{"type": "array", "items": goSchema(t.Elem(), depth+1)}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": goSchema(t.Elem(), depth+1)}
	case reflect.Struct:
		if t.Implements(marshalerType) || reflect.PointerTo(t).Implements(marshalerType) ||
			t.Implements(textMarshalerType) || reflect.PointerTo(t).Implements(textMarshalerType) {
			return map[string]any{"type": "string"}
		}
		props := map[string]any{}
		goFields(t, props, depth)
		s := map[string]any{"type": "object"}
		if len(props) > 0 {
			s["properties"] = props
		}
		return s
	}
	return map[string]any{"x-kubernetes-preserve-unknown-fields": true}
}

func goFields(t reflect.Type, props map[string]any, depth int) {
	docs := swaggerDocs(t)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		switch name := jsonName(f); name {
		case "-":
		case "":
			if et := deref(f.Type); et.Kind() == reflect.Struct {
				goFields(et, props, depth)
			}
		default:
			fs := goSchema(f.Type, depth+1)
			if d := docs[name]; d != "" {
				fs["description"] = d
			}
			props[name] = fs
		}
	}
}
