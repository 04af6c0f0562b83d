package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	cuejson "cuelang.org/go/encoding/json"
	cueyaml "cuelang.org/go/encoding/yaml"
	corev1 "k8s.io/api/core/v1"
)

// pendingDoc is one document of a YAML or JSON file, parsed but not yet
// evaluated: syntax trees are plain data, so the goroutine that decodes a
// file hands them to the one (with its own CUE context) that validates.
type pendingDoc struct {
	expr ast.Expr
	line int
}

// document is one object-shaped value of a file, before validation.
type document struct {
	val     cue.Value
	line    int
	posFile string // the file name in val's positions
}

// docOut is one valid object: its JSON, as the typed object decodes it,
// and where it and some of its fields are (for the set checks).
type docOut struct {
	JSON json.RawMessage `json:"json"`
	Line int             `json:"line"`
	// Pos is line and column of metadata.name and, for a Service, of
	// spec.clusterIP and each spec.ports[i].nodePort.
	Pos map[string][2]int `json:"pos,omitempty"`
}

// decodeData parses a YAML or JSON file and calls doc with each object
// document, in order, until doc returns false. It returns the file's
// problems: syntax errors, documents that are not objects, and YAML aliases
// that expand beyond the limits (then no document is given to doc).
func (v *Validator) decodeData(name string, data []byte, doc func(pendingDoc) bool) (ps Problems) {
	defer func() {
		if r := recover(); r != nil {
			ps = append(ps, Problem{File: name, Reason: fmt.Sprintf("internal error while decoding this file (please report it): %v", r)})
		}
	}()
	give := func(expr ast.Expr) (bool, *Problem) {
		if lit, ok := expr.(*ast.BasicLit); ok && lit.Value == "null" {
			return true, nil // an empty document
		}
		line, col := lineCol(expr.Pos())
		if _, ok := expr.(*ast.StructLit); !ok {
			return true, &Problem{File: name, Line: line, Column: col, Reason: "document is not an object: want a mapping with apiVersion, kind and metadata"}
		}
		return doc(pendingDoc{expr: expr, line: line}), nil
	}
	switch path.Ext(name) {
	case ".json":
		expr, err := cuejson.Extract(name, data)
		if err != nil {
			return Problems{syntaxProblem(name, "JSON", err)}
		}
		if _, p := give(expr); p != nil {
			ps = append(ps, *p)
		}
		return ps
	case ".yaml", ".yml":
	default:
		return Problems{{File: name, Reason: "not a manifest file: want .yaml, .yml, .json or .cue"}}
	}
	if aps := checkAliases(name, data, v.limits); len(aps) > 0 {
		return aps
	}
	dec := cueyaml.NewDecoder(name, bytes.NewReader(data))
	for {
		expr, err := dec.Extract()
		if expr != nil && (err == nil || err == io.EOF) {
			more, p := give(expr)
			if p != nil {
				ps = append(ps, *p)
			}
			if !more {
				return ps
			}
		}
		if err == io.EOF {
			return ps
		}
		if err != nil {
			return append(ps, syntaxProblem(name, "YAML", err))
		}
	}
}

// loadDocument builds, validates and decodes one document of a YAML or
// JSON file in e. It returns the valid objects, the line of every object
// (valid or not) and the problems.
func (v *Validator) loadDocument(e *evaluator, name string, pd pendingDoc) (ls []loaded, objects []int, ps Problems) {
	defer func() {
		if r := recover(); r != nil {
			ls = nil
			ps = append(ps, Problem{File: name, Line: pd.line, Reason: fmt.Sprintf("internal error while validating this document (please report it): %v", r)})
		}
	}()
	val := e.ctx.BuildExpr(pd.expr)
	if err := val.Err(); err != nil {
		return nil, []int{pd.line}, Problems{syntaxProblem(name, "document", err)}
	}
	outs, objects, ps := e.objects(name, document{val: val, line: pd.line, posFile: name}, v.limits)
	for _, o := range outs {
		l, p := decodeOut(name, o)
		if p != nil {
			ps = append(ps, *p)
			continue
		}
		ls = append(ls, l)
	}
	return ls, objects, ps
}

// objects validates a document, or each item of a `kind: List`, and
// returns the valid objects as JSON, the line of every object and the
// problems (warnings included).
func (e *evaluator) objects(name string, d document, lim Limits) (outs []docOut, objects []int, ps Problems) {
	ds, ps := expandList(name, d)
	for _, x := range ds {
		objects = append(objects, x.line)
		o, ops := e.object(name, x, lim)
		ps = append(ps, ops...)
		if o != nil {
			outs = append(outs, *o)
		}
	}
	return outs, objects, ps
}

// expandList replaces a `kind: List` document by its items.
func expandList(name string, d document) ([]document, Problems) {
	kind, _ := d.val.LookupPath(cuePath("kind")).String()
	api, _ := d.val.LookupPath(cuePath("apiVersion")).String()
	if kind != "List" || api != "v1" {
		return []document{d}, nil
	}
	items := d.val.LookupPath(cuePath("items"))
	iter, err := items.List()
	if err != nil {
		line, col := lineCol(items.Pos())
		return nil, Problems{{File: name, Line: line, Column: col, Field: "items", Reason: "a List needs items: a list of objects"}}
	}
	var out []document
	for iter.Next() {
		line, _ := lineCol(iter.Value().Pos())
		out = append(out, document{val: iter.Value(), line: line, posFile: d.posFile})
	}
	return out, nil
}

// at is the line and column of field (a CUE path such as
// "spec.ports[1].nodePort") in d, or the document's start.
func (d document) at(field string) (int, int) {
	if x := d.val.LookupPath(cuePath(field)); x.Exists() {
		if l, c := lineCol(x.Pos()); l > 0 {
			return l, c
		}
	}
	return d.line, 1
}

// object validates one document and returns it as JSON when it is valid.
func (e *evaluator) object(name string, d document, lim Limits) (*docOut, Problems) {
	at := d.at
	kind, kerr := d.val.LookupPath(cuePath("kind")).String()
	api, aerr := d.val.LookupPath(cuePath("apiVersion")).String()
	if kerr != nil || kind == "" {
		l, c := at("kind")
		return nil, Problems{{File: name, Line: l, Column: c, Field: "kind", Reason: "missing kind: every manifest needs apiVersion and kind (a string)"}}
	}
	if aerr != nil || api == "" {
		l, c := at("apiVersion")
		return nil, Problems{{File: name, Line: l, Column: c, Field: "apiVersion", Reason: "missing apiVersion: every manifest needs apiVersion and kind (a string)"}}
	}
	k, ok := KindByAPIVersion(api, kind)
	if !ok || !k.FromGit {
		field := "kind"
		reason := fmt.Sprintf("unsupported kind %q (apiVersion %q); supported kinds: %s", kind, api, strings.Join(GitKinds(), ", "))
		if known, found := KindByName(kind); found && known.FromGit {
			field = "apiVersion"
			reason = fmt.Sprintf("unsupported apiVersion %q for kind %s: want %q", api, kind, known.APIVersion())
		}
		l, c := at(field)
		return nil, Problems{{File: name, Line: l, Column: c, Field: field, Reason: reason}}
	}

	ps := e.validate(k, name, d.posFile, d.val)
	ps = append(ps, notHonouredWarnings(name, k, d.val)...)
	if len(ps.Errors()) > 0 {
		return nil, ps
	}
	js, err := d.val.MarshalJSON()
	if err != nil {
		return nil, append(ps, errorProblems(name, d.posFile, err)...)
	}
	if n := int64(len(js)); n > lim.MaxObjectBytes {
		return nil, append(ps, limitProblem(name, d.line, 1, LimitObjectBytes,
			fmt.Sprintf("object is %s of JSON, larger than %s", formatBytes(n), formatBytes(lim.MaxObjectBytes)), lim.MaxObjectBytes))
	}
	out := &docOut{JSON: js, Line: d.line, Pos: map[string][2]int{}}
	mark := func(field string) {
		l, c := at(field)
		out.Pos[field] = [2]int{l, c}
	}
	mark("metadata.name")
	if k.Kind == "Service" {
		mark("spec.clusterIP")
		var spec struct {
			Ports []corev1.ServicePort `json:"ports"`
		}
		if err := d.val.LookupPath(cuePath("spec")).Decode(&spec); err == nil {
			for i, p := range spec.Ports {
				if p.NodePort != 0 {
					mark(fmt.Sprintf("spec.ports[%d].nodePort", i))
				}
			}
		}
	}
	return out, ps
}

var cuePaths sync.Map // string → cue.Path

// cuePath is cue.ParsePath, remembered: parsing a path is a CUE parse,
// and documents look up the same few paths again and again.
func cuePath(s string) cue.Path {
	if p, ok := cuePaths.Load(s); ok {
		return p.(cue.Path)
	}
	p := cue.ParsePath(s)
	if !strings.Contains(s, "[") { // not an indexed one: they are many
		cuePaths.Store(s, p)
	}
	return p
}
