package volumes

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// The names the atomic writer keeps in an API volume's directory. Every name
// it owns starts with "..", which no payload path may.
const (
	dataLink    = "..data"     // symlink to the current timestamped dir
	dataLinkTmp = "..data_tmp" // the next ..data, renamed over it
	tsPrefix    = "..20"       // the timestamped dirs ("..2026_01_02_15_04_05.123")
)

// checkPayloadPath rejects a path that could escape the volume or clash
// with the writer's own names.
func checkPayloadPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case path.IsAbs(p):
		return fmt.Errorf("path %q must be relative", p)
	case strings.HasPrefix(p, ".."):
		return fmt.Errorf("path %q must not start with '..'", p)
	case path.Clean(p) != p:
		return fmt.Errorf("path %q is not clean", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return fmt.Errorf("path %q must not contain '..'", p)
		}
	}
	return nil
}

// writeAtomic makes dir hold exactly payload, as the kubelet's AtomicWriter
// does: the files go into a new hidden timestamped directory, the ..data
// symlink is swapped to it with one rename, and each top-level name of the
// payload is a symlink through ..data. A reader sees the old set or the new
// one, never a mix, and an open file keeps its old content. A payload equal
// to what dir holds writes nothing. It reports whether it wrote.
//
// dir must exist. Only names starting with ".." and symlinks into ..data
// are touched; anything else in dir is left as it is.
func writeAtomic(dir string, payload map[string]File, now time.Time) (bool, error) {
	tops := map[string]bool{}
	for p := range payload {
		if err := checkPayloadPath(p); err != nil {
			return false, err
		}
		tops[strings.SplitN(p, "/", 2)[0]] = true
	}
	old, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("read %s: %w", filepath.Join(dir, dataLink), err)
	}
	wrote := false
	if old == "" || !sameContent(filepath.Join(dir, old), payload) {
		ts, err := os.MkdirTemp(dir, now.UTC().Format("..2006_01_02_15_04_05."))
		if err != nil {
			return false, fmt.Errorf("create data dir in %s: %w", dir, err)
		}
		if err := writePayload(ts, payload); err != nil {
			_ = os.RemoveAll(ts)
			return false, err
		}
		tmp := filepath.Join(dir, dataLinkTmp)
		_ = os.Remove(tmp)
		if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
			_ = os.RemoveAll(ts)
			return false, fmt.Errorf("link new data in %s: %w", dir, err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
			_ = os.RemoveAll(ts)
			return false, fmt.Errorf("swap data in %s: %w", dir, err)
		}
		old, wrote = filepath.Base(ts), true
	}
	if err := linkTops(dir, tops); err != nil {
		return wrote, err
	}
	// remove the data dirs no longer linked (the previous one, and any left
	// by a writer that stopped half-way)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return wrote, fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tsPrefix) && e.Name() != old {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return wrote, fmt.Errorf("remove old data %s: %w", e.Name(), err)
			}
		}
	}
	return wrote, nil
}

func writePayload(ts string, payload map[string]File) error {
	if err := os.Chmod(ts, 0o755); err != nil {
		return fmt.Errorf("chmod %s: %w", ts, err)
	}
	for p, f := range payload {
		full := filepath.Join(ts, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		if err := os.WriteFile(full, f.Data, f.Mode); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		if err := os.Chmod(full, f.Mode); err != nil { // the umask narrowed it
			return fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	return nil
}

// linkTops makes each top-level name a symlink through ..data and removes
// the symlinks of names the payload no longer has.
func linkTops(dir string, tops map[string]bool) error {
	for top := range tops {
		link := filepath.Join(dir, top)
		want := filepath.Join(dataLink, top)
		if cur, err := os.Readlink(link); err == nil && cur == want {
			continue
		}
		if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("replace %s: %w", link, err)
		}
		if err := os.Symlink(want, link); err != nil {
			return fmt.Errorf("link %s: %w", link, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") || tops[e.Name()] || e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		if cur, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(cur, dataLink+"/") {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("remove stale %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// sameContent reports whether ts holds exactly payload (names, bytes and
// permission bits). Any read error counts as different.
func sameContent(ts string, payload map[string]File) bool {
	n := 0
	err := filepath.WalkDir(ts, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(ts, p)
		if err != nil {
			return err
		}
		f, ok := payload[filepath.ToSlash(rel)]
		if !ok || !d.Type().IsRegular() {
			return fs.ErrInvalid
		}
		info, err := d.Info()
		if err != nil || info.Mode().Perm() != f.Mode.Perm() || info.Size() != int64(len(f.Data)) {
			return fs.ErrInvalid
		}
		data, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(data, f.Data) {
			return fs.ErrInvalid
		}
		n++
		return nil
	})
	return err == nil && n == len(payload)
}
