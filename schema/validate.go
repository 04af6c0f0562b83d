package schema

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sync"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
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

// Validator decodes and validates manifests against the embedded CUE
// definitions. Build it once with NewValidator; it is safe for concurrent
// use (calls are serialised: a cue.Context is not safe for concurrent use).
type Validator struct {
	mu      sync.Mutex
	ctx     *cue.Context
	doc     cue.Value              // #Document
	overlay map[string]load.Source // the embedded module, under embeddedRoot
}

// embeddedRoot is where the loader sees the embedded module; it need not
// exist on disk.
const embeddedRoot = "/flotilla-embedded-schema"

// NewValidator compiles the embedded CUE schema. It takes a few hundred
// milliseconds; keep the result.
func NewValidator() (*Validator, error) {
	// The loader reads the embedded files through an overlay.
	const root = embeddedRoot
	overlay := map[string]load.Source{}
	err := fs.WalkDir(cueFiles, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := cueFiles.ReadFile(name)
		if err != nil {
			return err
		}
		overlay[path.Join(root, name)] = load.FromBytes(data)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("schema: read embedded CUE: %w", err)
	}
	ctx := cuecontext.New()
	cfg := &load.Config{Dir: root, ModuleRoot: root, Overlay: overlay}
	insts := load.Instances([]string{"."}, cfg)
	if len(insts) != 1 {
		return nil, fmt.Errorf("schema: load embedded CUE: %d instances", len(insts))
	}
	if err := insts[0].Err; err != nil {
		return nil, fmt.Errorf("schema: load embedded CUE: %w", err)
	}
	pkg := ctx.BuildInstance(insts[0])
	if err := pkg.Err(); err != nil {
		return nil, fmt.Errorf("schema: build embedded CUE: %w", err)
	}
	doc := pkg.LookupPath(cue.ParsePath(documentDef))
	if !doc.Exists() {
		return nil, fmt.Errorf("schema: embedded CUE has no %s", documentDef)
	}
	return &Validator{ctx: ctx, doc: doc, overlay: overlay}, nil
}

// validate checks one document against the schema. data must already be
// known to be an object of a supported kind; problems are located in file.
func (v *Validator) validate(file, posFile string, data cue.Value) Problems {
	u := v.doc.Unify(data)
	err := u.Validate(cue.Concrete(true), cue.Hidden(true))
	if err == nil {
		return nil
	}
	return cueProblems(file, posFile, data, err)
}

// buildInModule builds a CUE manifest file that has imports as a package
// of the embedded module. It returns the value and the file name that its
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
	val := v.ctx.BuildInstance(insts[0])
	return val, file, val.Err()
}
