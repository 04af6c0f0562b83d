package schema

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Vet is `flotilla vet PATH...`: it loads the manifests at paths (files or
// directories on disk), writes one line per problem to w
// (FILE:LINE:COL: FIELD: REASON, warnings marked "warning:"), and returns
// the exit code: 0 when there is no error (warnings alone are fine), 1 when
// there is one, 2 when the schema itself cannot be loaded.
func Vet(w io.Writer, paths []string) int {
	v, err := NewValidator()
	if err != nil {
		fmt.Fprintf(w, "flotilla vet: %v\n", err)
		return 2
	}
	return v.Vet(w, paths)
}

// Vet is the package-level Vet with an existing Validator.
func (v *Validator) Vet(w io.Writer, paths []string) int {
	_, ps := v.LoadPaths(paths...)
	for _, p := range ps {
		fmt.Fprintln(w, p.String())
	}
	if len(ps.Errors()) > 0 {
		return 1
	}
	return 0
}

// LoadPaths is Load for files and directories on disk, named as on a
// command line (relative to the working directory, or absolute). File
// names in the result start with the path as given. No paths means ".".
func (v *Validator) LoadPaths(paths ...string) ([]Manifest, Problems) {
	return v.LoadPathsFiltered(nil, paths...)
}

// LoadPathsFiltered is LoadPaths with every YAML and JSON file passed
// through filter (when not nil) before it is validated.
func (v *Validator) LoadPathsFiltered(filter FileFilter, paths ...string) ([]Manifest, Problems) {
	if len(paths) == 0 {
		paths = []string{"."}
	}
	type arg struct{ given, rel string }
	var args []arg
	var rels []string
	var ps Problems
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			ps = append(ps, Problem{File: p, Reason: fmt.Sprintf("cannot resolve path: %v", err)})
			continue
		}
		rel := strings.TrimPrefix(filepath.ToSlash(abs), "/")
		if rel == "" {
			rel = "."
		}
		args = append(args, arg{given: p, rel: rel})
		rels = append(rels, rel)
	}
	if len(rels) == 0 {
		return nil, ps
	}
	// Map a file name within "/" back to the argument it came from.
	given := func(name string) string {
		best := -1
		for i, a := range args {
			if (name == a.rel || a.rel == "." || strings.HasPrefix(name, a.rel+"/")) &&
				(best < 0 || len(a.rel) > len(args[best].rel)) {
				best = i
			}
		}
		if best < 0 {
			return name
		}
		a := args[best]
		if name == a.rel {
			return a.given
		}
		rest := name
		if a.rel != "." {
			rest = name[len(a.rel)+1:]
		}
		return filepath.Join(a.given, filepath.FromSlash(rest))
	}
	ms, lps := v.load(os.DirFS("/"), rels, given, filter)
	return ms, append(ps, lps...)
}
