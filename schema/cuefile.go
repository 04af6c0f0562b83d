package schema

import (
	"fmt"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/parser"
)

// cueFile is one .cue manifest to evaluate; Name is how Problems show it
// (and the file name of its positions).
type cueFile struct {
	Name string `json:"name"`
	Data []byte `json:"data"`
}

// cueResult is what the evaluation of one .cue file found: its valid
// objects, the lines of all its objects (valid or not, for the object
// count) and its problems.
type cueResult struct {
	File     string   `json:"file"`
	Docs     []docOut `json:"docs,omitempty"`
	Objects  []int    `json:"objects,omitempty"`
	Problems Problems `json:"problems,omitempty"`
}

// evalCUEFiles evaluates .cue manifests, in order, and gives each file's
// result to result. Before each step that may take long or much memory it
// calls at with the place about to be evaluated, so that a sandbox killed
// for a limit can say where. At most budget objects are produced: past
// that the files are not evaluated further (the caller counts objects).
// This is the work of the sandbox process (sandbox.go).
func (v *Validator) evalCUEFiles(files []cueFile, budget int, at func(file string, line int), result func(cueResult)) error {
	e, err := v.get()
	if err != nil {
		return err
	}
	defer v.put(e)
	for _, f := range files {
		if budget < 0 {
			return nil
		}
		r := v.evalCUEFile(e, f, budget, at)
		budget -= len(r.Objects)
		result(r)
	}
	return nil
}

func (v *Validator) evalCUEFile(e *evaluator, f cueFile, budget int, at func(file string, line int)) (r cueResult) {
	name := f.Name
	r.File = name
	defer func() {
		// The CUE evaluator is large; one odd input must not take the
		// process down. FuzzLoad is what should keep this from firing.
		if x := recover(); x != nil {
			r.Docs = nil
			r.Problems = append(r.Problems, Problem{File: name, Reason: fmt.Sprintf("internal error while evaluating this file (please report it): %v", x)})
		}
	}()
	at(name, 1)
	docs, ev, unlock, ps := v.cueDocuments(e, name, f.Data)
	defer unlock()
	r.Problems = ps
	for _, d := range docs {
		if len(r.Objects) > budget {
			break
		}
		at(name, d.line)
		outs, lines, dps := ev.objects(name, d, v.limits)
		r.Docs = append(r.Docs, outs...)
		r.Objects = append(r.Objects, lines...)
		r.Problems = append(r.Problems, dps...)
	}
	return r
}

// cueDocuments finds the manifests of a CUE file: each top-level struct
// with apiVersion and kind, and each such struct one level further down.
// A file without imports is compiled on its own, in e; a file with imports
// is loaded inside the embedded CUE module, so that it may import the
// Kubernetes packages (k8s.io/api/apps/v1, ...) and Flotilla's schema
// (github.com/flotilla-dev/flotilla/schema), in the module's evaluator,
// which it returns locked (call unlock when done with the documents). A
// package split over several files is not supported: each file must stand
// alone.
func (v *Validator) cueDocuments(e *evaluator, name string, data []byte) (docs []document, ev *evaluator, unlock func(), ps Problems) {
	unlock = func() {}
	f, err := parser.ParseFile(name, data, parser.ImportsOnly)
	if err != nil {
		return nil, e, unlock, errorProblems(name, name, err)
	}
	posFile := name
	var val cue.Value
	imports := false
	for range f.ImportSpecs() {
		imports = true
	}
	ev = e
	if !imports {
		val = e.ctx.CompileBytes(data, cue.Filename(name))
	} else {
		v.modMu.Lock()
		unlock = v.modMu.Unlock
		if ev, err = v.module(); err != nil {
			return nil, e, unlock, errorProblems(name, name, err)
		}
		val, posFile, err = v.buildInModule(data)
		if err != nil {
			return nil, ev, unlock, errorProblems(name, posFile, err)
		}
	}
	if err := val.Err(); err != nil {
		return nil, ev, unlock, errorProblems(name, posFile, err)
	}
	add := func(x cue.Value) {
		line, _ := lineCol(x.Pos())
		docs = append(docs, document{val: x, line: line, posFile: posFile})
	}
	it, err := val.Fields()
	if err != nil {
		return nil, ev, unlock, errorProblems(name, posFile, err)
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
	return docs, ev, unlock, nil
}

func isObject(x cue.Value) bool {
	return x.IncompleteKind() == cue.StructKind &&
		x.LookupPath(cuePath("apiVersion")).Exists() &&
		x.LookupPath(cuePath("kind")).Exists()
}
