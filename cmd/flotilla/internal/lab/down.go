package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flotilla-dev/flotilla/internal/mounts"
)

// Down removes the lab: it stops every process (SIGTERM, up to 5 s, then
// SIGKILL, including the nodes' Podman services, conmons and containers),
// unmounts everything mounted under Dir and the run roots, deletes the
// namespaces and links, and removes Dir. It works from the state file plus
// a sweep of kernel objects named "<Name>-…", so it also cleans up after a
// crash, and a second Down does nothing.
func (l *Lab) Down(ctx context.Context) error {
	st, err := loadState(l.dir)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		st = l.st // already down, or Up failed before writing it: sweep by name
	default:
		l.log.Warn("lab state unreadable; cleaning up by name", "err", err)
		st = l.st
	}
	return teardown(ctx, l.log, l.dir, st)
}

// Cleanup removes whatever a lab called name left with no usable state
// file: processes in its namespaces, mounts under dir, namespaces and links
// named "<name>-…", and the lab's files in dir. dir may be empty.
func Cleanup(ctx context.Context, dir, name string, log *slog.Logger) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: want 1-10 lowercase letters or digits", name)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dir != "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return fmt.Errorf("resolving lab dir %s: %w", dir, err)
		}
		dir = abs
	}
	return teardown(ctx, log, dir, &state{Name: name, Dir: dir})
}

func teardown(ctx context.Context, log *slog.Logger, dir string, st *state) error {
	var errs []error
	names := st.netnsNames()
	for _, n := range leftoverNetNS(st.Name) {
		if !contains(names, n) {
			names = append(names, n)
		}
	}
	var paths []string
	for _, n := range names {
		if n != "" {
			paths = append(paths, filepath.Join(netnsDir, n))
		}
	}
	if err := newSelector(paths, st.Procs).kill(ctx, 5*time.Second, 10*time.Second); err != nil {
		errs = append(errs, fmt.Errorf("stopping the lab's processes: %w", err))
	}
	roots := []string{st.runDir()}
	if dir != "" {
		roots = append(roots, dir)
	}
	if err := unmountUnder(roots...); err != nil {
		errs = append(errs, err)
	}
	removeRuntimeState(log, roots)
	for _, n := range names {
		if n == "" {
			continue
		}
		if err := deleteNetNS(n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteRootLinks(st.Name); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(st.runDir()); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", st.runDir(), err))
	}
	os.Remove(runBase) // only if empty: other labs may use it
	if dir != "" && len(mountsUnder(dir)) == 0 {
		if err := removeLabFiles(dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab down %s: %w", st.Name, err)
	}
	log.Info("lab down", "name", st.Name, "dir", dir)
	return nil
}

// removeRuntimeState removes the OCI runtimes' records (/run/runc/<id>,
// /run/crun/<id>) of the nodes' containers, whose processes are gone: a
// container's state names its root filesystem, under a node's storage.
func removeRuntimeState(log *slog.Logger, roots []string) {
	for _, base := range []string{"/run/runc", "/run/crun"} {
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			dir := filepath.Join(base, e.Name())
			b, err := os.ReadFile(filepath.Join(dir, "state.json"))
			if err != nil {
				b, err = os.ReadFile(filepath.Join(dir, "status"))
			}
			if err != nil {
				continue
			}
			for _, r := range roots {
				if r != "" && bytes.Contains(b, []byte(`"`+r+"/")) {
					log.Debug("removing container runtime state", "dir", dir)
					os.RemoveAll(dir)
					break
				}
			}
		}
	}
}

// removeLabFiles removes what a lab puts in dir, then dir if that leaves
// it empty: never anything else that someone put there.
func removeLabFiles(dir string) error {
	var errs []error
	for _, e := range []string{stateFile, stateFile + ".tmp", "logs", "nodes", "images", ServerDir, ServersDir, RepoDir, ServerTokenFile, KubeconfigFile, lockFile} {
		if err := os.RemoveAll(filepath.Join(dir, e)); err != nil {
			errs = append(errs, fmt.Errorf("removing lab files: %w", err))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing lab dir: %w", err))
	}
	return errors.Join(errs...)
}

// mountsUnder lists the mount points at or below any of roots, deepest first.
func mountsUnder(roots ...string) []string { return mounts.Under(roots...) }

// unmountUnder lazily unmounts everything at or below roots (container
// overlays and shm of the nodes' Podman storage), deepest first.
func unmountUnder(roots ...string) error {
	if err := mounts.UnmountUnder(roots...); err != nil {
		return fmt.Errorf("unmounting lab mounts: %w", err)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// tail is the end of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return fmt.Sprintf("log %s ends:\n%s", path, strings.Join(lines, "\n"))
}
