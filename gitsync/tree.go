package gitsync

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"testing/fstest"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flotilla-dev/flotilla/schema"
)

// manifestExts are the files read from a commit; anything else in the
// repository (READMEs, images) is neither read nor counted.
var manifestExts = map[string]bool{".yaml": true, ".yml": true, ".json": true, ".cue": true}

func isManifestFile(name string) bool {
	return manifestExts[strings.ToLower(path.Ext(name))]
}

// commitFS reads the manifest files under dir ("." for the root) of commit
// straight from its tree — no checkout — into an in-memory fs.FS whose names
// are repository paths, so that problems name files as the user sees them.
// Limits and unsafe entries become Problems (refusing the commit; limit
// reports whether a size limit was among them); an error means the clone
// could not be read.
func commitFS(c *object.Commit, dir string, maxFile, maxTotal int64) (fsys fstest.MapFS, probs schema.Problems, limit bool, err error) {
	root, err := c.Tree()
	if err != nil {
		return nil, nil, false, fmt.Errorf("read tree of commit %s: %w", c.Hash, err)
	}
	fsys = fstest.MapFS{}
	sub := root
	if dir != "." {
		sub, err = root.Tree(dir)
		if errors.Is(err, object.ErrDirectoryNotFound) {
			return fsys, schema.Problems{{File: dir, Reason: "the configured path is not a directory in this commit"}}, false, nil
		}
		if err != nil {
			return nil, nil, false, fmt.Errorf("read %s in commit %s: %w", dir, c.Hash, err)
		}
	}
	var total int64
	err = sub.Files().ForEach(func(f *object.File) error {
		name := path.Join(dir, f.Name)
		if !isManifestFile(name) {
			return nil
		}
		if !fs.ValidPath(name) || strings.Contains(name, "\\") {
			probs = append(probs, schema.Problem{File: name, Reason: "unsafe file name in the repository"})
			return nil
		}
		switch {
		case f.Mode == filemode.Symlink:
			probs = append(probs, schema.Problem{File: name, Warning: true, Reason: "symbolic link ignored: manifests must be regular files"})
			return nil
		case !f.Mode.IsFile():
			return nil
		case f.Size > maxFile:
			probs = append(probs, schema.Problem{File: name, Reason: fmt.Sprintf("file is %d bytes, over the limit of %d (MaxFileSize)", f.Size, maxFile)})
			limit = true
			return nil
		}
		total += f.Size
		if total > maxTotal {
			probs = append(probs, schema.Problem{File: name, Reason: fmt.Sprintf("the manifests exceed the limit of %d bytes in total (MaxTotalSize)", maxTotal)})
			limit = true
			return errStop
		}
		data, err := readBlob(f, maxFile)
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		fsys[name] = &fstest.MapFile{Data: data, Mode: 0o444}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, nil, false, fmt.Errorf("read files of commit %s: %w", c.Hash, err)
	}
	return fsys, probs, limit, nil
}

var errStop = errors.New("stop")

func readBlob(f *object.File, limit int64) ([]byte, error) {
	r, err := f.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("blob larger than its recorded size")
	}
	return data, nil
}
