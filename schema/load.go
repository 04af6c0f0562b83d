package schema

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/parser"
	cuejson "cuelang.org/go/encoding/json"
	cueyaml "cuelang.org/go/encoding/yaml"
	corev1 "k8s.io/api/core/v1"
)

// Manifest is one object read from a manifest file.
type Manifest struct {
	Object Object
	File   string // path within the fs.FS given to Load (or as given to LoadPaths)
	Line   int    // 1-based line where the document starts
}

// MaxFileSize is the largest manifest file Load reads; a bigger one is a
// Problem, not a memory spike.
const MaxFileSize = 8 << 20

// isManifestFile says whether Load reads a file found in a directory.
func isManifestFile(name string) bool {
	switch path.Ext(name) {
	case ".yaml", ".yml", ".json", ".cue":
		return true
	}
	return false
}

// document is one object-shaped value of a file, before validation.
type document struct {
	val     cue.Value
	line    int
	posFile string // the file name in val's positions
}

// loaded is a valid manifest and where its name is, for the set checks.
type loaded struct {
	Manifest
	nameLine, nameCol int
	doc               document // to locate other fields
}

// LoadDir loads every manifest under dir on disk; Problem.File and
// Manifest.File are relative to dir.
func (v *Validator) LoadDir(dir string) ([]Manifest, Problems) {
	return v.Load(os.DirFS(dir), ".")
}

// Load reads the manifests at paths in fsys (files, or directories walked
// for .yaml, .yml, .json and .cue files, skipping hidden directories and
// cue.mod), validates each document against the CUE schema, decodes it into
// its typed object, and checks the set as a whole (one object per kind,
// namespace and name; no nodePort or requested clusterIP in two Services).
// No paths means ".".
//
// The manifests are returned in file order, even when some documents have
// problems: the caller decides, usually with Problems.Err, whether the set
// may be applied. Problems are sorted by file, line and column.
func (v *Validator) Load(fsys fs.FS, paths ...string) ([]Manifest, Problems) {
	return v.load(fsys, paths, func(name string) string { return name })
}

// load is Load with the names shown in Problems and Manifests computed by
// show from the names within fsys.
func (v *Validator) load(fsys fs.FS, paths []string, show func(string) string) ([]Manifest, Problems) {
	if len(paths) == 0 {
		paths = []string{"."}
	}
	files, ps := manifestFiles(fsys, paths)
	for i := range ps {
		ps[i].File = show(ps[i].File)
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	var all []loaded
	for _, name := range files {
		ls, fps := v.loadFile(fsys, name, show(name))
		all = append(all, ls...)
		ps = append(ps, fps...)
	}
	ps = append(ps, duplicates(all)...)
	ps = append(ps, serviceClashes(all)...)
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	ms := make([]Manifest, len(all))
	for i, l := range all {
		ms[i] = l.Manifest
	}
	return ms, ps
}

// manifestFiles expands paths into the sorted, de-duplicated list of files
// to read.
func manifestFiles(fsys fs.FS, paths []string) ([]string, Problems) {
	var files []string
	var ps Problems
	seen := map[string]bool{}
	add := func(name string) {
		if !seen[name] {
			seen[name] = true
			files = append(files, name)
		}
	}
	for _, p := range paths {
		root := path.Clean(p)
		if !fs.ValidPath(root) {
			ps = append(ps, Problem{File: p, Reason: "invalid path: want a slash-separated path inside the repository, without .. or a leading /"})
			continue
		}
		info, err := fs.Stat(fsys, root)
		if err != nil {
			ps = append(ps, Problem{File: root, Reason: fmt.Sprintf("cannot read: %v", unwrapPathError(err))})
			continue
		}
		if !info.IsDir() {
			if !isManifestFile(root) {
				ps = append(ps, Problem{File: root, Reason: "not a manifest file: want .yaml, .yml, .json or .cue"})
				continue
			}
			add(root)
			continue
		}
		err = fs.WalkDir(fsys, root, func(name string, d fs.DirEntry, err error) error {
			if err != nil {
				ps = append(ps, Problem{File: name, Reason: fmt.Sprintf("cannot read: %v", unwrapPathError(err))})
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			hidden := strings.HasPrefix(d.Name(), ".") && name != root
			if d.IsDir() {
				if hidden || d.Name() == "cue.mod" {
					return fs.SkipDir
				}
				return nil
			}
			if !hidden && d.Type().IsRegular() && isManifestFile(name) {
				add(name)
			}
			return nil
		})
		if err != nil {
			ps = append(ps, Problem{File: root, Reason: fmt.Sprintf("cannot walk: %v", err)})
		}
	}
	return files, ps
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func readLimited(fsys fs.FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, fmt.Errorf("cannot open: %w", unwrapPathError(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", unwrapPathError(err))
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("file is larger than %d bytes", MaxFileSize)
	}
	return data, nil
}

// loadFile reads, validates and decodes the documents of one file.
// name is the file within fsys, shown how Problems and Manifests name it.
func (v *Validator) loadFile(fsys fs.FS, name, shown string) (ls []loaded, ps Problems) {
	defer func() {
		// The CUE evaluator is large; one odd input must not take the
		// server down. FuzzLoad is what should keep this from firing.
		if r := recover(); r != nil {
			ls = nil
			ps = append(ps, Problem{File: shown, Reason: fmt.Sprintf("internal error while decoding this file (please report it): %v", r)})
		}
	}()
	data, err := readLimited(fsys, name)
	name = shown // from here on, the name that Problems show
	if err != nil {
		return nil, Problems{{File: shown, Reason: err.Error()}}
	}
	var docs []document
	switch path.Ext(name) {
	case ".yaml", ".yml":
		docs, ps = v.yamlDocuments(name, data)
	case ".json":
		docs, ps = v.jsonDocuments(name, data)
	case ".cue":
		docs, ps = v.cueDocuments(name, data)
	default:
		return nil, Problems{{File: shown, Reason: "not a manifest file: want .yaml, .yml, .json or .cue"}}
	}
	for _, d := range v.expandLists(name, docs, &ps) {
		l, dps := v.loadDocument(name, d)
		ps = append(ps, dps...)
		if l != nil {
			ls = append(ls, *l)
		}
	}
	return ls, ps
}

func (v *Validator) yamlDocuments(name string, data []byte) ([]document, Problems) {
	var docs []document
	var ps Problems
	dec := cueyaml.NewDecoder(name, bytes.NewReader(data))
	for {
		expr, err := dec.Extract()
		if expr != nil && (err == nil || err == io.EOF) {
			if d, p := v.documentOf(name, expr); p != nil {
				ps = append(ps, *p)
			} else if d != nil {
				docs = append(docs, *d)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			ps = append(ps, syntaxProblem(name, "YAML", err))
			break
		}
	}
	return docs, ps
}

func (v *Validator) jsonDocuments(name string, data []byte) ([]document, Problems) {
	expr, err := cuejson.Extract(name, data)
	if err != nil {
		return nil, Problems{syntaxProblem(name, "JSON", err)}
	}
	d, p := v.documentOf(name, expr)
	if p != nil {
		return nil, Problems{*p}
	}
	if d == nil {
		return nil, nil
	}
	return []document{*d}, nil
}

// documentOf builds one YAML or JSON document; an empty one is skipped.
func (v *Validator) documentOf(name string, expr ast.Expr) (*document, *Problem) {
	if lit, ok := expr.(*ast.BasicLit); ok && lit.Value == "null" {
		return nil, nil
	}
	line, col := lineCol(expr.Pos())
	if _, ok := expr.(*ast.StructLit); !ok {
		return nil, &Problem{File: name, Line: line, Column: col, Reason: "document is not an object: want a mapping with apiVersion, kind and metadata"}
	}
	val := v.ctx.BuildExpr(expr)
	if err := val.Err(); err != nil {
		p := syntaxProblem(name, "document", err)
		return nil, &p
	}
	return &document{val: val, line: line, posFile: name}, nil
}

// cueDocuments finds the manifests of a CUE file: each top-level struct
// with apiVersion and kind, and each such struct one level further down.
// A file without imports is compiled on its own; a file with imports is
// loaded inside the embedded CUE module, so that it may import the
// Kubernetes packages (k8s.io/api/apps/v1, ...) and Flotilla's schema
// (github.com/flotilla-dev/flotilla/schema). A package split over several
// files is not supported: each file must stand alone.
func (v *Validator) cueDocuments(name string, data []byte) ([]document, Problems) {
	f, err := parser.ParseFile(name, data, parser.ImportsOnly)
	if err != nil {
		return nil, errorProblems(name, name, err)
	}
	posFile := name
	var val cue.Value
	imports := false
	for range f.ImportSpecs() {
		imports = true
	}
	if !imports {
		val = v.ctx.CompileBytes(data, cue.Filename(name))
	} else {
		val, posFile, err = v.buildInModule(data)
		if err != nil {
			return nil, errorProblems(name, posFile, err)
		}
	}
	if err := val.Err(); err != nil {
		return nil, errorProblems(name, posFile, err)
	}
	var docs []document
	add := func(x cue.Value) {
		line, _ := lineCol(x.Pos())
		docs = append(docs, document{val: x, line: line, posFile: posFile})
	}
	it, err := val.Fields()
	if err != nil {
		return nil, errorProblems(name, posFile, err)
	}
	for it.Next() {
		x := it.Value()
		if isObject(x) {
			add(x)
			continue
		}
		if x.IncompleteKind() != cue.StructKind {
			continue
		}
		inner, err := x.Fields()
		if err != nil {
			continue
		}
		for inner.Next() {
			if y := inner.Value(); isObject(y) {
				add(y)
			}
		}
	}
	return docs, nil
}

func isObject(x cue.Value) bool {
	return x.IncompleteKind() == cue.StructKind &&
		x.LookupPath(cue.ParsePath("apiVersion")).Exists() &&
		x.LookupPath(cue.ParsePath("kind")).Exists()
}

// expandLists replaces each `kind: List` document by its items.
func (v *Validator) expandLists(name string, docs []document, ps *Problems) []document {
	var out []document
	for _, d := range docs {
		kind, _ := d.val.LookupPath(cue.ParsePath("kind")).String()
		api, _ := d.val.LookupPath(cue.ParsePath("apiVersion")).String()
		if kind != "List" || api != "v1" {
			out = append(out, d)
			continue
		}
		items := d.val.LookupPath(cue.ParsePath("items"))
		iter, err := items.List()
		if err != nil {
			line, col := lineCol(items.Pos())
			*ps = append(*ps, Problem{File: name, Line: line, Column: col, Field: "items", Reason: "a List needs items: a list of objects"})
			continue
		}
		for iter.Next() {
			line, _ := lineCol(iter.Value().Pos())
			out = append(out, document{val: iter.Value(), line: line, posFile: d.posFile})
		}
	}
	return out
}

// at is the line and column of field (a CUE path such as
// "spec.ports[1].nodePort") in d, or the document's start.
func (d document) at(field string) (int, int) {
	if x := d.val.LookupPath(cue.ParsePath(field)); x.Exists() {
		if l, c := lineCol(x.Pos()); l > 0 {
			return l, c
		}
	}
	return d.line, 1
}

// loadDocument validates and decodes one document.
func (v *Validator) loadDocument(name string, d document) (*loaded, Problems) {
	at := d.at
	kind, kerr := d.val.LookupPath(cue.ParsePath("kind")).String()
	api, aerr := d.val.LookupPath(cue.ParsePath("apiVersion")).String()
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

	ps := v.validate(name, d.posFile, d.val)
	ps = append(ps, notHonouredWarnings(name, k, d.val)...)
	if len(ps.Errors()) > 0 {
		return nil, ps
	}
	js, err := d.val.MarshalJSON()
	if err != nil {
		return nil, append(ps, errorProblems(name, d.posFile, err)...)
	}
	obj, err := Decode(k, js)
	if err != nil {
		return nil, append(ps, Problem{File: name, Line: d.line, Column: 1, Reason: err.Error()})
	}
	l, c := at("metadata.name")
	return &loaded{Manifest: Manifest{Object: obj, File: name, Line: d.line}, nameLine: l, nameCol: c, doc: d}, ps
}

// duplicates reports every object that has the kind, namespace and name of
// an earlier one. The namespace of a namespaced kind defaults to "default".
func duplicates(ls []loaded) Problems {
	var ps Problems
	first := map[string]loaded{}
	for _, l := range ls {
		k, err := KindOf(l.Object)
		if err != nil {
			continue
		}
		id := l.Object.GetName()
		if k.Namespaced {
			ns := l.Object.GetNamespace()
			if ns == "" {
				ns = "default"
			}
			id = ns + "/" + id
		}
		key := k.Kind + " " + id
		if f, ok := first[key]; ok {
			ps = append(ps, Problem{File: l.File, Line: l.nameLine, Column: l.nameCol, Field: "metadata.name",
				Reason: fmt.Sprintf("duplicate %s %q: already defined at %s:%d", k.Kind, id, f.File, f.nameLine)})
			continue
		}
		first[key] = l
	}
	return ps
}

// serviceClashes reports what two Services of the set cannot share: a
// node port (whatever the protocols: a node has one port of that number
// for the service) and a requested cluster IP. Each clash is located at the
// later service's field and names the first service, with its place. What
// one service may not repeat is checked by flotilla.cue; an address or port
// of a Service already in the cluster is checked when the commit is applied.
func serviceClashes(ls []loaded) Problems {
	type claim struct{ who, at string }
	var ps Problems
	nodePorts := map[int32]claim{}
	clusterIPs := map[string]claim{}
	for _, l := range ls {
		svc, ok := l.Object.(*corev1.Service)
		if !ok {
			continue
		}
		ns := svc.Namespace
		if ns == "" {
			ns = "default"
		}
		who := ns + "/" + svc.Name
		if ip := svc.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone && svc.Spec.Type != corev1.ServiceTypeExternalName {
			key := ip
			if a, err := netip.ParseAddr(ip); err == nil {
				key = a.Unmap().String()
			}
			line, col := l.doc.at("spec.clusterIP")
			switch c, ok := clusterIPs[key]; {
			case !ok:
				clusterIPs[key] = claim{who, fmt.Sprintf("%s:%d", l.File, line)}
			case c.who != who:
				ps = append(ps, Problem{File: l.File, Line: line, Column: col, Field: "spec.clusterIP",
					Reason: fmt.Sprintf("clusterIP %s is also requested by service %s (%s)", ip, c.who, c.at)})
			}
		}
		own := map[int32]bool{}
		for i, p := range svc.Spec.Ports {
			if p.NodePort == 0 || own[p.NodePort] {
				continue
			}
			own[p.NodePort] = true
			field := fmt.Sprintf("spec.ports[%d].nodePort", i)
			line, col := l.doc.at(field)
			switch c, ok := nodePorts[p.NodePort]; {
			case !ok:
				nodePorts[p.NodePort] = claim{who, fmt.Sprintf("%s:%d", l.File, line)}
			case c.who != who:
				ps = append(ps, Problem{File: l.File, Line: line, Column: col, Field: field,
					Reason: fmt.Sprintf("nodePort %d is also used by service %s (%s)", p.NodePort, c.who, c.at)})
			}
		}
	}
	return ps
}

// syntaxProblem locates a decoder error; the YAML decoder puts the line
// only in its message ("file:12: did not find expected key").
func syntaxProblem(name, what string, err error) Problem {
	p := Problem{File: name}
	for _, pos := range cueerrors.Positions(err) {
		if pos.IsValid() {
			p.Line, p.Column = pos.Line(), pos.Column()
			break
		}
	}
	msg := err.Error()
	if es := cueerrors.Errors(err); len(es) > 0 && p.Line > 0 {
		format, args := es[0].Msg()
		msg = fmt.Sprintf(format, args...)
	}
	lineRE := regexp.MustCompile(`^(.*?):(\d+)(?::(\d+))?: `)
	for {
		m := lineRE.FindStringSubmatch(msg)
		if m == nil || m[1] != name {
			break
		}
		if p.Line == 0 {
			p.Line, _ = strconv.Atoi(m[2])
			p.Column, _ = strconv.Atoi(m[3])
		}
		msg = msg[len(m[0]):]
	}
	p.Reason = fmt.Sprintf("%s syntax error: %s", what, msg)
	return p
}

// errorProblems turns any CUE error into Problems located in name, whose
// positions name posFile.
func errorProblems(name, posFile string, err error) Problems {
	var ps Problems
	for _, e := range cueerrors.Errors(err) {
		p := Problem{File: name, Field: strings.Join(e.Path(), ".")}
		if pos := positionIn(posFile, e); pos.IsValid() {
			p.Line, p.Column = lineCol(pos)
		}
		format, args := e.Msg()
		p.Reason = fmt.Sprintf(format, args...)
		ps = append(ps, p)
	}
	if len(ps) == 0 {
		ps = Problems{{File: name, Reason: err.Error()}}
	}
	return ps
}
