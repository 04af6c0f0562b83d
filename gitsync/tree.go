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
// Limits (maxFile: MaxFileBytes, maxTotal: MaxCommitBytes, as schema's
// Load applies them, but before a blob is read) and unsafe entries become
// Problems, refusing the commit; an error means the clone could not be
// read.
func commitFS(c *object.Commit, dir string, maxFile, maxTotal int64) (fsys fstest.MapFS, probs schema.Problems, err error) {
	root, err := c.Tree()
	if err != nil {
		return nil, nil, fmt.Errorf("read tree of commit %s: %w", c.Hash, err)
	}
	fsys = fstest.MapFS{}
	sub := root
	if dir != "." {
		sub, err = root.Tree(dir)
		if errors.Is(err, object.ErrDirectoryNotFound) {
			return fsys, schema.Problems{{File: dir, Reason: "the configured path is not a directory in this commit"}}, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read %s in commit %s: %w", dir, c.Hash, err)
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
			probs = append(probs, limitProblem(name, 0, schema.LimitFileBytes,
				fmt.Sprintf("file is %s, larger than %s", formatBytes(f.Size), formatBytes(maxFile)), maxFile))
			return nil
		}
		total += f.Size
		if total > maxTotal {
			probs = append(probs, limitProblem(name, 0, schema.LimitCommitBytes,
				fmt.Sprintf("the manifests of the commit are larger than %s in all; this file and those after it were not read", formatBytes(maxTotal)), maxTotal))
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
		return nil, nil, fmt.Errorf("read files of commit %s: %w", c.Hash, err)
	}
	return fsys, probs, nil
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
