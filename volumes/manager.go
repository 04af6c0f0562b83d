package volumes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// Config configures a Manager. Zero values mean the documented default.
type Config struct {
	// Dir holds the pods' data: <Dir>/<pod uid>/volumes/<kind>/<name>
	// (required). Give every agent on a machine its own.
	Dir string
	// Owner names the agent (its node) in <Dir>/<uid>/owner, so that Pods
	// lists only its own pods' dirs (required).
	Owner string
	// Objects reads the ConfigMaps and Secrets of API volumes (required).
	Objects Objects
	// Claims resolves persistentVolumeClaim volumes. Default:
	// StoreClaims(Objects).
	Claims Claims
	// Mounter mounts the tmpfs of memory-backed volumes. Default:
	// DefaultMounter() (the kernel: the agent must be root).
	Mounter Mounter
}

// Manager sets up and tears down the volumes of the pods of one node. Its
// methods are safe for concurrent use for different pods; the agent calls
// them for one pod from that pod's worker only.
type Manager struct {
	cfg Config
}

// New validates cfg and returns a Manager.
func New(cfg Config) (*Manager, error) {
	switch {
	case cfg.Dir == "":
		return nil, errors.New("volumes: Dir is required")
	case cfg.Owner == "":
		return nil, errors.New("volumes: Owner is required")
	case cfg.Objects == nil:
		return nil, errors.New("volumes: Objects is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("volumes: Dir: %w", err)
	}
	cfg.Dir = dir
	if cfg.Claims == nil {
		cfg.Claims = StoreClaims(cfg.Objects)
	}
	if cfg.Mounter == nil {
		cfg.Mounter = DefaultMounter()
	}
	return &Manager{cfg: cfg}, nil
}

// Dir is the directory that holds the pods' data.
func (m *Manager) Dir() string { return m.cfg.Dir }

// Plan plans pod's volumes (no I/O).
func (m *Manager) Plan(pod *corev1.Pod) (*Plan, error) { return PlanPod(m.cfg.Dir, pod) }

// Pod is a pod's volumes once set up: where each is on the host.
type Pod struct {
	m    *Manager
	plan *Plan
	dirs map[string]string // volume name → host directory
}

// Mount is one bind mount of a container, ready for the runtime.
type Mount struct {
	// Source is the host file or directory.
	Source string
	// Destination is the absolute path in the container.
	Destination string
	ReadOnly    bool
}

// Setup makes pod's volumes ready to mount. It is idempotent and never
// destructive, so the agent calls it when it creates the pod and again on
// every resync: emptyDirs are created (their tmpfs mounted) when missing
// and otherwise left alone; hostPaths are checked; API volumes are
// rewritten only when their content changed, which is how a change of a
// ConfigMap or Secret reaches running containers; claims are resolved.
//
// A volume that fails does not stop the others from being set up; the
// first error is returned (a *ConfigError, a *WaitError, or an I/O error)
// together with a Pod that mounts only what is ready.
func (m *Manager) Setup(ctx context.Context, pod *corev1.Pod) (*Pod, error) {
	plan, err := m.Plan(pod)
	if err != nil {
		return nil, err
	}
	p := &Pod{m: m, plan: plan, dirs: map[string]string{}}
	if len(plan.Volumes) == 0 {
		return p, nil
	}
	if plan.needsPodDir() {
		if err := m.ensurePodDir(plan.Dir); err != nil {
			return nil, err
		}
	}
	objs := &storeObjects{ctx: ctx, objs: m.cfg.Objects, namespace: pod.Namespace,
		configMaps: map[string]*keyed{}, secrets: map[string]*keyed{}}
	var first error
	for i := range plan.Volumes {
		v := &plan.Volumes[i]
		dir, err := m.setupVolume(ctx, pod, v, objs)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		p.dirs[v.Name] = dir
	}
	return p, first
}

func (m *Manager) ensurePodDir(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "volumes"), 0o750); err != nil {
		return fmt.Errorf("create pod dir: %w", err)
	}
	owner := filepath.Join(dir, "owner")
	if b, err := os.ReadFile(owner); err == nil && string(b) == m.cfg.Owner {
		return nil
	}
	if err := os.WriteFile(owner, []byte(m.cfg.Owner), 0o644); err != nil {
		return fmt.Errorf("create pod dir: %w", err)
	}
	return nil
}

// setupVolume readies one volume and returns its host directory.
func (m *Manager) setupVolume(ctx context.Context, pod *corev1.Pod, v *Volume, objs *storeObjects) (string, error) {
	switch v.Kind {
	case KindHostPath:
		t := corev1.HostPathUnset
		if v.Source.HostPath.Type != nil {
			t = *v.Source.HostPath.Type
		}
		return v.Dir, checkHostPath(v.Name, v.Dir, t)
	case KindClaim:
		claim := v.Source.PersistentVolumeClaim.ClaimName
		cv, err := m.cfg.Claims.Resolve(ctx, pod.Namespace, claim)
		var we *WaitError
		var ce *ConfigError
		switch {
		case errors.As(err, &we):
			we.Volume = v.Name
			return "", err
		case errors.As(err, &ce):
			ce.Volume = v.Name
			return "", err
		case err != nil:
			return "", fmt.Errorf("volume %q: %w", v.Name, err)
		}
		if !path.IsAbs(cv.Path) {
			return "", configErr(v.Name, "persistentvolume %s of claim %s has path %q, not an absolute path", cv.PersistentVolume, claim, cv.Path)
		}
		p := filepath.Clean(cv.Path)
		return p, checkHostPath(v.Name, p, cv.Type)
	case KindEmptyDir:
		return v.Dir, m.ensureVolumeDir(v, 0o777)
	}
	// API volumes: compute the files first, so that a missing ConfigMap
	// leaves an existing volume as it is.
	files, err := payload(v, pod, objs)
	if err != nil {
		return "", err
	}
	if err := m.ensureVolumeDir(v, 0o755); err != nil {
		return "", err
	}
	if _, err := writeAtomic(v.Dir, files, time.Now()); err != nil {
		return "", fmt.Errorf("volume %q: %w", v.Name, err)
	}
	return v.Dir, nil
}

// ensureVolumeDir creates an owned volume's directory (and mounts its
// tmpfs) unless it is there.
func (m *Manager) ensureVolumeDir(v *Volume, mode os.FileMode) error {
	_, err := os.Stat(v.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(v.Dir, 0o750); err != nil {
			return fmt.Errorf("volume %q: create %s: %w", v.Name, v.Dir, err)
		}
		err = os.Chmod(v.Dir, mode)
	}
	if err != nil {
		return fmt.Errorf("volume %q: %w", v.Name, err)
	}
	if !v.Tmpfs {
		return nil
	}
	mounted, err := m.cfg.Mounter.IsMountPoint(v.Dir)
	if err != nil {
		return fmt.Errorf("volume %q: %w", v.Name, err)
	}
	if mounted {
		return nil
	}
	if err := m.cfg.Mounter.MountTmpfs(v.Dir, v.SizeLimit); err != nil {
		return fmt.Errorf("volume %q: %w", v.Name, err)
	}
	if err := os.Chmod(v.Dir, mode); err != nil {
		return fmt.Errorf("volume %q: %w", v.Name, err)
	}
	return nil
}

// Mounts returns the bind mounts of container c (its volumeMounts, with
// sources on the host). expand expands a subPathExpr with the container's
// env. Call it right before creating (or re-creating) the container: an
// init container may create what a later container's subPath names.
//
// A subPath into a volume containers can write (emptyDir, hostPath, claim)
// is opened component by component from the volume's root, never through
// a symlink (a missing one is created as a directory, as the kubelet
// does), and the opened file is bind-mounted on
// <pod dir>/volume-subpaths/<volume>/<container>/<index>, which is the
// mount's Source: what the runtime binds is the file checked, whatever a
// container does to the volume meanwhile. A subPath through a symlink,
// and a volume that Setup could not ready, is a *ConfigError naming the
// volume and the subPath. Teardown unmounts these targets.
//
// In API volumes (configMap, secret, downwardAPI, projected), which only
// the agent writes (containers mount them read-only), the Source of a
// subPath is the key's path: a file mounted by subPath is not updated in a
// running container (as with the kubelet), but a restarted container sees
// the current one.
func (p *Pod) Mounts(c *corev1.Container, expand func(string) string) ([]Mount, error) {
	plans, err := p.plan.Mounts(c, expand)
	if err != nil {
		return nil, err
	}
	out := make([]Mount, 0, len(plans))
	for i, mp := range plans {
		base, ok := p.dirs[mp.Volume]
		if !ok {
			return nil, configErr(mp.Volume, "not set up")
		}
		src := base
		switch {
		case mp.SubPath == "":
		case p.plan.Volume(mp.Volume).Kind.api():
			if _, err := resolveSubPath(mp.Volume, base, mp.SubPath); err != nil {
				return nil, err
			}
			// The runtime resolves the key's symlink at every start, so a
			// container restarted after the ConfigMap changed gets the new
			// file (the resolved one is gone).
			src = filepath.Join(base, filepath.FromSlash(mp.SubPath))
		default:
			if err := validUID(c.Name); err != nil {
				return nil, configErr(mp.Volume, "container name %q cannot name a directory", c.Name)
			}
			if err := p.m.ensurePodDir(p.plan.Dir); err != nil {
				return nil, err
			}
			src = subPathTarget(p.plan.Dir, mp.Volume, c.Name, i)
			if err := bindSubPath(mp.Volume, base, mp.SubPath, src); err != nil {
				return nil, err
			}
		}
		out = append(out, Mount{Source: src, Destination: mp.Destination, ReadOnly: mp.ReadOnly})
	}
	return out, nil
}

// resolveSubPath returns the real path of sub inside base, an API volume
// (only the agent writes it), creating it as a directory when missing.
func resolveSubPath(volume, base, sub string) (string, error) {
	full := filepath.Join(base, filepath.FromSlash(sub))
	if _, err := os.Lstat(full); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(full, 0o755); err != nil {
			return "", fmt.Errorf("volume %q: create subPath %s: %w", volume, sub, err)
		}
	}
	realBase, err := filepath.EvalSymlinks(base)
	if err != nil {
		return "", fmt.Errorf("volume %q: %w", volume, err)
	}
	real, err := filepath.EvalSymlinks(full)
	if errors.Is(err, fs.ErrNotExist) {
		return "", configErr(volume, "subPath %s is a dangling symlink", sub)
	}
	if err != nil {
		return "", fmt.Errorf("volume %q: subPath %s: %w", volume, sub, err)
	}
	if real != realBase && !strings.HasPrefix(real, realBase+string(filepath.Separator)) {
		return "", configErr(volume, "subPath %s resolves to %s, outside the volume", sub, real)
	}
	return real, nil
}

// Teardown unmounts and removes a pod's data dir (its emptyDirs, API
// volumes and subPath mounts; never hostPath or claim data, which live
// elsewhere). Removing a pod without a dir is not an error. It refuses to
// delete anything while something is still mounted below the dir.
func (m *Manager) Teardown(uid string) error {
	if err := validUID(uid); err != nil {
		return err
	}
	dir := PodDir(m.cfg.Dir, uid)
	kinds, err := os.ReadDir(filepath.Join(dir, "volumes"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tear down volumes of pod %s: %w", uid, err)
	}
	var errs []error
	if err := cleanSubPaths(dir); err != nil { // before the volumes they are in
		errs = append(errs, err)
	}
	for _, k := range kinds {
		if !k.IsDir() {
			continue
		}
		vols, err := os.ReadDir(filepath.Join(dir, "volumes", k.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, v := range vols {
			vd := filepath.Join(dir, "volumes", k.Name(), v.Name())
			if mounted, err := m.cfg.Mounter.IsMountPoint(vd); err != nil {
				errs = append(errs, err)
			} else if mounted {
				if err := m.cfg.Mounter.Unmount(vd); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if left, err := mountsBelow(dir); err != nil {
		errs = append(errs, err)
	} else if len(left) > 0 {
		errs = append(errs, fmt.Errorf("refusing to remove %s: still mounted there: %s", dir, strings.Join(left, ", ")))
	} else if err := removeAllOneFilesystem(dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down volumes of pod %s: %w", uid, err)
	}
	return nil
}

// Pods lists the UIDs of the pods that have a data dir of this Owner, so
// that the agent can tear down those of pods that are gone.
func (m *Manager) Pods() ([]string, error) {
	entries, err := os.ReadDir(m.cfg.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list pod dirs: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() || validUID(e.Name()) != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(m.cfg.Dir, e.Name(), "owner")); err == nil && string(b) == m.cfg.Owner {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// HasSizeLimits reports whether pod has an emptyDir on disk with a
// sizeLimit (which Exceeded measures).
func HasSizeLimits(pod *corev1.Pod) bool {
	for _, v := range pod.Spec.Volumes {
		if e := v.EmptyDir; e != nil && e.Medium != corev1.StorageMediumMemory && e.SizeLimit != nil {
			return true
		}
	}
	return false
}

// Exceeded measures the disk emptyDirs of pod that have a sizeLimit and
// returns, for the first one over it, the kubelet's eviction message; ""
// when none is. (A Memory emptyDir's limit is its tmpfs size: the kernel
// enforces it.)
func (m *Manager) Exceeded(pod *corev1.Pod) (string, error) {
	plan, err := m.Plan(pod)
	if err != nil {
		return "", err
	}
	for _, v := range plan.Volumes {
		if v.Kind != KindEmptyDir || v.Tmpfs || v.SizeLimit == 0 {
			continue
		}
		used, err := diskUsage(v.Dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("volume %q: measure usage: %w", v.Name, err)
		}
		if used > v.SizeLimit {
			return fmt.Sprintf("Usage of EmptyDir volume %q exceeds the limit %q.", v.Name, v.Source.EmptyDir.SizeLimit.String()), nil
		}
	}
	return "", nil
}

// storeObjects reads the ConfigMaps and Secrets of one namespace, each once
// per Setup.
type storeObjects struct {
	ctx        context.Context
	objs       Objects
	namespace  string
	configMaps map[string]*keyed
	secrets    map[string]*keyed
}

func (s *storeObjects) configMap(name string) (*keyed, error) {
	if k, ok := s.configMaps[name]; ok {
		return k, nil
	}
	obj, err := s.objs.Get(s.ctx, "configmaps", s.namespace, name)
	if errors.Is(err, store.ErrNotFound) {
		s.configMaps[name] = nil
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read configmap %s/%s: %w", s.namespace, name, err)
	}
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return nil, fmt.Errorf("read configmap %s/%s: got %T", s.namespace, name, obj)
	}
	k := configMapData(cm)
	s.configMaps[name] = &k
	return &k, nil
}

func (s *storeObjects) secret(name string) (*keyed, error) {
	if k, ok := s.secrets[name]; ok {
		return k, nil
	}
	obj, err := s.objs.Get(s.ctx, "secrets", s.namespace, name)
	if errors.Is(err, store.ErrNotFound) {
		s.secrets[name] = nil
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read secret %s/%s: %w", s.namespace, name, err)
	}
	sec, ok := obj.(*corev1.Secret)
	if !ok {
		return nil, fmt.Errorf("read secret %s/%s: got %T", s.namespace, name, obj)
	}
	k := secretData(sec)
	s.secrets[name] = &k
	return &k, nil
}
