package schema

import (
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
	"sync"

	cueerrors "cuelang.org/go/cue/errors"
	corev1 "k8s.io/api/core/v1"
)

// Manifest is one object read from a manifest file.
type Manifest struct {
	Object Object
	File   string // path within the fs.FS given to Load (or as given to LoadPaths)
	Line   int    // 1-based line where the document starts
}

// isManifestFile says whether Load reads a file found in a directory.
func isManifestFile(name string) bool {
	switch path.Ext(name) {
	case ".yaml", ".yml", ".json", ".cue":
		return true
	}
	return false
}

// loaded is a valid manifest and where its fields are, for the set checks.
type loaded struct {
	Manifest
	pos map[string][2]int // field → line, column (see docOut.Pos)
}

// at is the line and column of field in the manifest, or its start.
func (l loaded) at(field string) (int, int) {
	if p, ok := l.pos[field]; ok {
		return p[0], p[1]
	}
	return l.Line, 1
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
// Documents are validated in parallel, one CUE context per core; .cue files
// are evaluated in a sandbox process under the time and memory limits (see
// MaybeRunSandbox). Input beyond the Validator's Limits is refused with a
// Problem whose Limit names the limit.
//
// The manifests are returned in file order, even when some documents have
// problems: the caller decides, usually with Problems.Err, whether the set
// may be applied. Problems are sorted by file, line and column.
func (v *Validator) Load(fsys fs.FS, paths ...string) ([]Manifest, Problems) {
	return v.load(fsys, paths, func(name string) string { return name }, nil)
}

// FileFilter rewrites a manifest file before it is validated: it returns
// the data to validate instead (nil skips the file) and problems about the
// file (their File is set by the caller). name is the file's path. `flotilla vet` uses one to check
// SOPS-encrypted files without their key.
type FileFilter func(name string, data []byte) ([]byte, Problems)

// source is one manifest file read for Load.
type source struct {
	name  string // as Problems and Manifests show it
	data  []byte
	isCUE bool
}

// fileOut is what Load found in one file.
type fileOut struct {
	items    []loaded
	objects  []int // the line of every object, valid or not
	problems Problems
}

// load is Load with the names shown in Problems and Manifests computed by
// show from the names within fsys.
func (v *Validator) load(fsys fs.FS, paths []string, show func(string) string, filter FileFilter) ([]Manifest, Problems) {
	if len(paths) == 0 {
		paths = []string{"."}
	}
	files, ps := manifestFiles(fsys, paths)
	for i := range ps {
		ps[i].File = show(ps[i].File)
	}
	srcs, rps := v.readAll(fsys, files, show, filter)
	ps = append(ps, rps...)

	outs := make([]fileOut, len(srcs))
	var wg sync.WaitGroup
	wg.Go(func() { v.loadCUEFiles(srcs, outs) })
	v.loadDataFiles(srcs, outs)
	wg.Wait()

	var all []loaded
	objects := 0
	for i, s := range srcs {
		o := outs[i]
		all = append(all, o.items...)
		ps = append(ps, o.problems...)
		if objects <= v.limits.MaxObjects && objects+len(o.objects) > v.limits.MaxObjects {
			line := o.objects[v.limits.MaxObjects-objects]
			ps = append(ps, limitProblem(s.name, line, 1, LimitObjects,
				fmt.Sprintf("too many objects: the commit has more than %d, and this is the first beyond", v.limits.MaxObjects), v.limits.MaxObjects))
		}
		objects += len(o.objects)
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

// readAll reads the files, within MaxFileBytes each and MaxCommitBytes in
// all: past the latter no file is read.
func (v *Validator) readAll(fsys fs.FS, files []string, show func(string) string, filter FileFilter) ([]source, Problems) {
	var srcs []source
	var ps Problems
	var total int64
	for _, name := range files {
		shown := show(name)
		data, err := readLimited(fsys, name, v.limits.MaxFileBytes)
		if errors.Is(err, errFileTooLarge) {
			ps = append(ps, limitProblem(shown, 0, 0, LimitFileBytes, fmt.Sprintf("file is larger than %s", formatBytes(v.limits.MaxFileBytes)), v.limits.MaxFileBytes))
			continue
		}
		if err != nil {
			ps = append(ps, Problem{File: shown, Reason: err.Error()})
			continue
		}
		if filter != nil && path.Ext(name) != ".cue" {
			var fps Problems
			data, fps = filter(name, data)
			for _, p := range fps {
				p.File = shown
				ps = append(ps, p)
			}
			if data == nil {
				continue
			}
		}
		total += int64(len(data))
		if total > v.limits.MaxCommitBytes {
			ps = append(ps, limitProblem(shown, 0, 0, LimitCommitBytes,
				fmt.Sprintf("the manifests of the commit are larger than %s in all; this file and those after it were not read", formatBytes(v.limits.MaxCommitBytes)), v.limits.MaxCommitBytes))
			break
		}
		srcs = append(srcs, source{name: shown, data: data, isCUE: path.Ext(name) == ".cue"})
	}
	return srcs, ps
}

// loadDataFiles validates the YAML and JSON files: this goroutine decodes
// the documents in file order (and stops past MaxObjects); one worker per
// CUE context validates them.
func (v *Validator) loadDataFiles(srcs []source, outs []fileOut) {
	type slot struct {
		file    int
		items   []loaded
		objects []int
		ps      Problems
	}
	type job struct {
		slot *slot
		doc  pendingDoc
	}
	n := v.parallelism()
	jobs := make(chan job, 4*n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for j := range jobs {
				// An evaluator per document, not per Load: a ValidateObject
				// of the API waits for one document, not for a whole commit.
				e, err := v.get()
				if err != nil {
					j.slot.objects = []int{j.doc.line}
					j.slot.ps = Problems{{File: srcs[j.slot.file].name, Line: j.doc.line, Reason: fmt.Sprintf("internal error: %v", err)}}
					continue
				}
				j.slot.items, j.slot.objects, j.slot.ps = v.loadDocument(e, srcs[j.slot.file].name, j.doc)
				v.put(e)
			}
		})
	}
	var slots []*slot
	budget := v.limits.MaxObjects + 1
	for i, s := range srcs {
		if s.isCUE {
			continue
		}
		if budget <= 0 {
			break
		}
		outs[i].problems = append(outs[i].problems, v.decodeData(s.name, s.data, func(d pendingDoc) bool {
			sl := &slot{file: i}
			slots = append(slots, sl)
			jobs <- job{slot: sl, doc: d}
			budget--
			return budget > 0
		})...)
	}
	close(jobs)
	wg.Wait()
	for _, sl := range slots {
		o := &outs[sl.file]
		o.items = append(o.items, sl.items...)
		o.objects = append(o.objects, sl.objects...)
		o.problems = append(o.problems, sl.ps...)
	}
}

// loadCUEFiles evaluates the .cue files, in the sandbox process unless the
// Validator evaluates them in process (tests).
func (v *Validator) loadCUEFiles(srcs []source, outs []fileOut) {
	var files []cueFile
	index := map[string]int{}
	for i, s := range srcs {
		if s.isCUE {
			files = append(files, cueFile{Name: s.name, Data: s.data})
			index[s.name] = i
		}
	}
	if len(files) == 0 {
		return
	}
	results, ps := v.evalCUE(files)
	for _, r := range results {
		i, ok := index[r.File]
		if !ok {
			continue
		}
		o := &outs[i]
		o.objects = append(o.objects, r.Objects...)
		o.problems = append(o.problems, r.Problems...)
		for _, d := range r.Docs {
			l, p := decodeOut(r.File, d)
			if p != nil {
				o.problems = append(o.problems, *p)
				continue
			}
			o.items = append(o.items, l)
		}
	}
	for _, p := range ps {
		if i, ok := index[p.File]; ok {
			outs[i].problems = append(outs[i].problems, p)
		}
	}
}

// evalCUE evaluates .cue files: in the sandbox (MaybeRunSandbox), or in
// this process for tests.
func (v *Validator) evalCUE(files []cueFile) ([]cueResult, Problems) {
	if !v.cueInProcess {
		return v.evalInSandbox(files)
	}
	var results []cueResult
	err := v.evalCUEFiles(files, v.limits.MaxObjects, func(string, int) {}, func(r cueResult) { results = append(results, r) })
	if err != nil {
		return nil, Problems{{File: files[0].Name, Reason: fmt.Sprintf("internal error: %v", err)}}
	}
	return results, nil
}

// decodeOut turns a valid object's JSON into its typed object.
func decodeOut(file string, d docOut) (loaded, *Problem) {
	obj, err := DecodeAny(d.JSON)
	if err != nil {
		return loaded{}, &Problem{File: file, Line: d.Line, Column: 1, Reason: err.Error()}
	}
	return loaded{Manifest: Manifest{Object: obj, File: file, Line: d.Line}, pos: d.Pos}, nil
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

var errFileTooLarge = errors.New("file too large")

func readLimited(fsys fs.FS, name string, limit int64) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, fmt.Errorf("cannot open: %w", unwrapPathError(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", unwrapPathError(err))
	}
	if int64(len(data)) > limit {
		return nil, errFileTooLarge
	}
	return data, nil
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
			line, col := l.at("metadata.name")
			firstLine, _ := f.at("metadata.name")
			ps = append(ps, Problem{File: l.File, Line: line, Column: col, Field: "metadata.name",
				Reason: fmt.Sprintf("duplicate %s %q: already defined at %s:%d", k.Kind, id, f.File, firstLine)})
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
			line, col := l.at("spec.clusterIP")
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
			line, col := l.at(field)
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
