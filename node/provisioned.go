package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/volumes/pvbinding"
)

// The node's share of reclaim policy Delete. The binder deletes a
// provisioned PersistentVolume once no pod uses its claim; the directory
// (<root>/<node>/pvc-<uid>, created by the first pod that mounted it) is on
// this node, so this agent removes it: at every resync, a provisioned
// volume directory of this node that no PersistentVolume names any more is
// deleted. The roots seen are remembered in a file beside PodDir, so a
// directory is found even after the last PersistentVolume under it is
// gone. Volumes that were not provisioned (hostPath, local PVs from Git)
// are never touched.

// provisionedRootsFile is beside PodDir: the local-volume roots seen.
func (a *Agent) provisionedRootsFile() string {
	return filepath.Join(filepath.Dir(a.cfg.PodDir), "provisioned-roots.json")
}

// sweepProvisioned removes this node's provisioned volume directories whose
// PersistentVolume is gone.
func (a *Agent) sweepProvisioned(ctx context.Context) error {
	objs, _, err := a.cfg.Store.List(ctx, "persistentvolumes", store.ListOptions{})
	if err != nil {
		return fmt.Errorf("list persistent volumes: %w", err)
	}
	roots := a.loadRoots()
	changed := false
	live := map[string]bool{}
	for _, o := range objs {
		pv, ok := o.(*corev1.PersistentVolume)
		if !ok {
			continue
		}
		dir := pv.Annotations[pvbinding.AnnProvisionedDir]
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		dir = filepath.Clean(dir)
		live[dir] = true
		if root := filepath.Dir(dir); filepath.Base(root) == a.cfg.NodeName && !roots[root] {
			roots[root] = true
			changed = true
		}
	}
	if changed {
		if err := a.saveRoots(roots); err != nil {
			return err
		}
	}
	var errs []error
	for root := range roots {
		ents, err := os.ReadDir(root)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		for _, e := range ents {
			dir := filepath.Join(root, e.Name())
			if !e.IsDir() || !strings.HasPrefix(e.Name(), "pvc-") || live[dir] {
				continue
			}
			// A volume made after the list above has a fresh directory:
			// leave anything younger than a minute for the next sweep.
			if info, err := e.Info(); err != nil || time.Since(info.ModTime()) < time.Minute {
				continue
			}
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, fmt.Errorf("remove the volume %s: %w", dir, err))
				continue
			}
			a.log.Info("removed the directory of a deleted provisioned volume", "dir", dir)
		}
	}
	return errors.Join(errs...)
}

func (a *Agent) loadRoots() map[string]bool {
	roots := map[string]bool{}
	data, err := os.ReadFile(a.provisionedRootsFile())
	if err != nil {
		return roots
	}
	var list []string
	if json.Unmarshal(data, &list) == nil {
		for _, r := range list {
			if filepath.IsAbs(r) && filepath.Base(r) == a.cfg.NodeName {
				roots[filepath.Clean(r)] = true
			}
		}
	}
	return roots
}

func (a *Agent) saveRoots(roots map[string]bool) error {
	list := make([]string, 0, len(roots))
	for r := range roots {
		list = append(list, r)
	}
	sort.Strings(list)
	data, _ := json.Marshal(list)
	path := a.provisionedRootsFile()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("record volume roots: %w", err)
	}
	return nil
}
