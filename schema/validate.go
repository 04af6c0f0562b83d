package schema

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"runtime"
	"sync"
	"sync/atomic"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/format"
	"cuelang.org/go/cue/load"
)

// cueFiles is the CUE module of this folder: Flotilla's constraints
// (schema/*.cue) and the generated Kubernetes types (cue.mod/gen). The same
// files serve `cue vet`; this is their only copy.
//
//go:embed *.cue cue.mod
var cueFiles embed.FS

// documentDef is the definition every manifest document is checked against
// (flotilla.cue); #Manifest adds empty YAML documents for `cue vet` users.
const documentDef = "#Document"

// schemaFile is the file name that the positions of the compiled schema
// carry (never a manifest's name, so that they are never shown as one).
const schemaFile = "flotilla-schema.cue"

// maxEvaluators bounds the CUE contexts a Validator keeps (one per core).
const maxEvaluators = 8

// Validator decodes and validates manifests against the embedded CUE
// definitions. Build it once with NewValidator; it is safe for concurrent
// use. It keeps one CUE context per core (a cue.Context is not safe for
// concurrent evaluation), so that documents are validated in parallel.
type Validator struct {
	limits    Limits
	schemaSrc []byte                 // the schema with its imports inlined (see compileSchema)
	overlay   map[string]load.Source // the embedded module, under embeddedRoot

	pool chan *evaluator // idle evaluators
	mu   sync.Mutex      // guards made
	made int             // evaluators made, at most cap(pool)

	validated atomic.Int64 // documents and objects validated, ever

	modMu sync.Mutex // serialises mod, and its making
	mod   *evaluator // the module as loaded, for CUE manifests that import it: made by the first (module)

	// cueInProcess evaluates .cue manifests in this process instead of the
	// sandbox: without the sandbox's time and memory limits. Only for tests
	// (the fuzz target) that need thousands of evaluations per second.
	cueInProcess bool
}

// evaluator is one CUE context with the schema compiled in it. It is used
// by one goroutine at a time.
type evaluator struct {
	validated *atomic.Int64 // the Validator's count
	ctx       *cue.Context
	doc       cue.Value            // #Document
	kinds     map[string]cue.Value // #ConfigMap, ... by Kind
}

// embeddedRoot is where the loader sees the embedded module; it need not
// exist on disk.
const embeddedRoot = "/flotilla-embedded-schema"

// NewValidator compiles the embedded CUE schema, with DefaultLimits. It
// takes a few hundred milliseconds; keep the result.
func NewValidator() (*Validator, error) {
	return NewValidatorWithLimits(Limits{})
}

// NewValidatorWithLimits is NewValidator with other limits; a zero field
// of l means its default (DefaultLimits).
func NewValidatorWithLimits(l Limits) (*Validator, error) {
	overlay, err := embeddedOverlay()
	if err != nil {
		return nil, err
	}
	ctx := cuecontext.New()
	pkg, err := buildModule(ctx, overlay)
	if err != nil {
		return nil, err
	}
	v := &Validator{limits: l.withDefaults(), overlay: overlay}
	// The module itself is garbage from here on: it is built again only
	// for a CUE manifest that imports it (module), which a server leaves
	// to the sandbox. Kept, it was about 8 MB of a server's live heap.
	src, err := compileSchema(pkg)
	if err != nil {
		return nil, err
	}
	v.schemaSrc = src
	v.pool = make(chan *evaluator, min(max(runtime.GOMAXPROCS(0), 1), maxEvaluators))
	// Make the first evaluator now: a schema that does not compile is an
	// error of NewValidator, not of the first Load.
	e, err := v.get()
	if err != nil {
		return nil, err
	}
	v.put(e)
	return v, nil
}

// embeddedOverlay is the embedded module as the loader's overlay, under
// embeddedRoot.
func embeddedOverlay() (map[string]load.Source, error) {
	overlay := map[string]load.Source{}
	err := fs.WalkDir(cueFiles, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := cueFiles.ReadFile(name)
		if err != nil {
			return err
		}
		overlay[path.Join(embeddedRoot, name)] = load.FromBytes(data)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("schema: read embedded CUE: %w", err)
	}
	return overlay, nil
}

// buildModule loads the embedded CUE module's root package.
func buildModule(ctx *cue.Context, overlay map[string]load.Source) (cue.Value, error) {
	cfg := &load.Config{Dir: embeddedRoot, ModuleRoot: embeddedRoot, Overlay: overlay}
	insts := load.Instances([]string{"."}, cfg)
	if len(insts) != 1 {
		return cue.Value{}, fmt.Errorf("schema: load embedded CUE: %d instances", len(insts))
	}
	if err := insts[0].Err; err != nil {
		return cue.Value{}, fmt.Errorf("schema: load embedded CUE: %w", err)
	}
	pkg := ctx.BuildInstance(insts[0])
	if err := pkg.Err(); err != nil {
		return cue.Value{}, fmt.Errorf("schema: build embedded CUE: %w", err)
	}
	return pkg, nil
}

// compileSchema returns the schema package as one self-contained CUE file:
// the same definitions, with the Kubernetes packages they import inlined.
//
// Why: CUE (v0.17) evaluates an imported package's root afresh in every
// evaluation (each Value.Unify), so that concurrent evaluations do not share
// state; with the Kubernetes packages that is about a thousand nodes and
// 1.3 MB of garbage per document, most of the time Load spent. Without
// imports a ConfigMap costs a tenth of that. The file is formatted and
// compiled from source, not from the syntax tree, so that every literal
// has a position: CUE merges the errors of disjuncts that have none.
func compileSchema(pkg cue.Value) ([]byte, error) {
	syn := pkg.Syntax(cue.Docs(false), cue.Definitions(true), cue.Hidden(true), cue.Optional(true), cue.InlineImports(true))
	src, err := format.Node(syn)
	if err != nil {
		return nil, fmt.Errorf("schema: format the compiled schema: %w", err)
	}
	return src, nil
}

// newEvaluator compiles the self-contained schema in a new CUE context.
func newEvaluator(src []byte, validated *atomic.Int64) (*evaluator, error) {
	ctx := cuecontext.New()
	pkg := ctx.CompileBytes(src, cue.Filename(schemaFile))
	if err := pkg.Err(); err != nil {
		return nil, fmt.Errorf("schema: compile the self-contained schema: %w", err)
	}
	return newEvaluatorOf(ctx, pkg, validated)
}

func newEvaluatorOf(ctx *cue.Context, pkg cue.Value, validated *atomic.Int64) (*evaluator, error) {
	e := &evaluator{validated: validated, ctx: ctx, doc: pkg.LookupPath(cue.ParsePath(documentDef)), kinds: map[string]cue.Value{}}
	if !e.doc.Exists() {
		return nil, fmt.Errorf("schema: embedded CUE has no %s", documentDef)
	}
	for _, k := range kinds {
		if !k.FromGit {
			continue
		}
		def := pkg.LookupPath(cue.ParsePath("#" + k.Kind))
		if !def.Exists() {
			return nil, fmt.Errorf("schema: embedded CUE has no #%s", k.Kind)
		}
		e.kinds[k.Kind] = def
	}
	return e, nil
}

// get takes an idle evaluator, makes one if there are fewer than the pool
// holds, or waits for one. Give it back with put.
func (v *Validator) get() (*evaluator, error) {
	select {
	case e := <-v.pool:
		return e, nil
	default:
	}
	v.mu.Lock()
	if v.made < cap(v.pool) {
		v.made++
		v.mu.Unlock()
		e, err := newEvaluator(v.schemaSrc, &v.validated)
		if err != nil {
			v.mu.Lock()
			v.made--
			v.mu.Unlock()
			return nil, err
		}
		return e, nil
	}
	v.mu.Unlock()
	return <-v.pool, nil
}

func (v *Validator) put(e *evaluator) { v.pool <- e }

// parallelism is how many documents the Validator validates at once.
func (v *Validator) parallelism() int { return cap(v.pool) }

// validate checks one document of kind k against the schema (the kind's
// definition: the verdict of #Document for a known kind, without its
// if-chain). Problems are located in file.
func (e *evaluator) validate(k Kind, file, posFile string, data cue.Value) Problems {
	e.validated.Add(1)
	def, ok := e.kinds[k.Kind]
	if !ok {
		def = e.doc
	}
	u := data.Unify(def)
	err := u.Validate(cue.Concrete(true), cue.Hidden(true))
	if err == nil {
		return nil
	}
	return cueProblems(file, posFile, data, err)
}

// module returns the evaluator of the module as loaded, made at the first
// call (call with modMu held).
func (v *Validator) module() (*evaluator, error) {
	if v.mod == nil {
		ctx := cuecontext.New()
		pkg, err := buildModule(ctx, v.overlay)
		if err != nil {
			return nil, err
		}
		if v.mod, err = newEvaluatorOf(ctx, pkg, &v.validated); err != nil {
			return nil, err
		}
	}
	return v.mod, nil
}

// buildInModule builds a CUE manifest file that has imports as a package
// of the embedded module, in the module's own context (call with modMu
// held, after module). It returns the value and the file name that its
// positions carry.
func (v *Validator) buildInModule(src []byte) (cue.Value, string, error) {
	dir := path.Join(embeddedRoot, "internal", "manifest")
	file := path.Join(dir, "manifest.cue")
	overlay := make(map[string]load.Source, len(v.overlay)+1)
	for k, s := range v.overlay {
		overlay[k] = s
	}
	overlay[file] = load.FromBytes(src)
	cfg := &load.Config{Dir: dir, ModuleRoot: embeddedRoot, Overlay: overlay}
	insts := load.Instances([]string{"."}, cfg)
	if len(insts) != 1 {
		return cue.Value{}, file, fmt.Errorf("load CUE manifest: %d instances", len(insts))
	}
	if err := insts[0].Err; err != nil {
		return cue.Value{}, file, err
	}
	val := v.mod.ctx.BuildInstance(insts[0])
	return val, file, val.Err()
}
