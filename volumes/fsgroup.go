package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	corev1 "k8s.io/api/core/v1"
)

// ApplyFSGroup gives the pod's fsGroup its volumes, as the kubelet does
// (pkg/volume.SetVolumeOwnership): every file and directory of an
// emptyDir, a claim and the API volumes (configMap, secret, downwardAPI,
// projected) gets the group fsGroup, group read-write (read-only for API
// volumes and read-only claims), and directories get setgid, so what
// containers create later is the group's too. hostPath volumes are never
// changed. With fsGroupChangePolicy OnRootMismatch a volume whose root
// already has the group and the modes is left alone. withData false
// skips emptyDirs and claims (their data is walked once, when the pod
// starts; API volumes are rewritten by every refresh and walked again).
// Symbolic links are never followed.
func (p *Pod) ApplyFSGroup(pod *corev1.Pod, withData bool) error {
	sc := pod.Spec.SecurityContext
	if sc == nil || sc.FSGroup == nil || p == nil || p.plan == nil {
		return nil
	}
	gid := int(*sc.FSGroup)
	onMismatch := sc.FSGroupChangePolicy != nil && *sc.FSGroupChangePolicy == corev1.FSGroupChangeOnRootMismatch
	var errs []error
	for _, v := range p.plan.Volumes {
		dir, ok := p.dirs[v.Name]
		if !ok {
			continue
		}
		switch v.Kind {
		case KindEmptyDir, KindClaim:
			if !withData {
				continue
			}
		case KindConfigMap, KindSecret, KindDownwardAPI, KindProjected:
		default:
			continue // hostPath: the host's files are not the pod's
		}
		readOnly := v.ReadOnly
		if onMismatch && rootMatches(dir, gid, readOnly) {
			continue
		}
		if err := setOwnership(dir, gid, readOnly); err != nil {
			errs = append(errs, fmt.Errorf("volume %q: fsGroup %d: %w", v.Name, gid, err))
		}
	}
	return errors.Join(errs...)
}

const (
	rwMask   fs.FileMode = 0o660
	roMask   fs.FileMode = 0o440
	execMask fs.FileMode = 0o110
)

func fsGroupMask(isDir, readOnly bool) fs.FileMode {
	mask := rwMask
	if readOnly {
		mask = roMask
	}
	if isDir {
		mask |= os.ModeSetgid | execMask
	}
	return mask
}

// rootMatches reports whether a volume's root already has the group and
// the modes (fsGroupChangePolicy OnRootMismatch).
func rootMatches(dir string, gid int, readOnly bool) bool {
	fi, err := os.Lstat(dir)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	mask := fsGroupMask(fi.IsDir(), readOnly)
	return ok && int(st.Gid) == gid && fi.Mode()&mask == mask
}

func setOwnership(dir string, gid int, readOnly bool) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(path, -1, gid); err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil // its target is walked where it lies in the volume
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		// Chown cleared setgid on directories: add it with the group's bits.
		return os.Chmod(path, fi.Mode()|fsGroupMask(d.IsDir(), readOnly))
	})
}
