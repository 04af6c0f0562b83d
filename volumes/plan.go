package volumes

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Kind is what a volume is on the node; it names the directory that holds
// the volumes of that kind under a pod's dir.
type Kind string

// Volume kinds.
const (
	KindEmptyDir    Kind = "empty-dir"
	KindHostPath    Kind = "host-path"
	KindConfigMap   Kind = "configmap"
	KindSecret      Kind = "secret"
	KindDownwardAPI Kind = "downward-api"
	KindProjected   Kind = "projected"
	KindClaim       Kind = "claim"
)

// owned reports whether the node owns the volume's directory (it lives
// under the pod's dir and goes with the pod).
func (k Kind) owned() bool {
	return k != KindHostPath && k != KindClaim
}

// api reports whether the volume's files come from API objects.
func (k Kind) api() bool {
	return k == KindConfigMap || k == KindSecret || k == KindDownwardAPI || k == KindProjected
}

// ConfigError is a volume the pod cannot have as written (a missing
// ConfigMap, Secret or key, a hostPath of the wrong type, a bad subPath, an
// unsupported volume type). The agent shows it as the container waiting
// reason CreateContainerConfigError and retries: the cause may be fixed by
// a later commit.
type ConfigError struct {
	Volume string // the volume's name
	Msg    string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("volume %q: %s", e.Volume, e.Msg) }

func configErr(volume, format string, args ...any) *ConfigError {
	return &ConfigError{Volume: volume, Msg: fmt.Sprintf(format, args...)}
}

// WaitError is a volume waiting for the rest of the cluster (a claim to be
// bound, its PersistentVolume to appear). The agent shows it as
// ContainerCreating with this message and retries.
type WaitError struct {
	Volume string
	Msg    string
}

func (e *WaitError) Error() string { return e.Msg }

// Volume is one volume of a pod, planned.
type Volume struct {
	Name string
	Kind Kind
	// Dir is the volume on the host: under the pod's dir for the kinds the
	// node owns, the path of a hostPath, "" for a claim (Setup resolves it).
	Dir string
	// Tmpfs: Setup mounts a tmpfs on Dir (emptyDir medium Memory, secret,
	// projected).
	Tmpfs bool
	// SizeLimit in bytes (0: none): the tmpfs size, or for an emptyDir on
	// disk the usage over which the pod is evicted.
	SizeLimit int64
	// ReadOnly forces every mount of the volume read-only (API volumes, a
	// claim with readOnly).
	ReadOnly bool
	// Source is the volume as the pod spec has it (shared; do not modify).
	Source *corev1.Volume
}

// Plan is the volumes of one pod.
type Plan struct {
	// Dir is the pod's directory, <root>/<uid>.
	Dir     string
	Volumes []Volume
}

// Volume returns the named volume, or nil.
func (p *Plan) Volume(name string) *Volume {
	for i := range p.Volumes {
		if p.Volumes[i].Name == name {
			return &p.Volumes[i]
		}
	}
	return nil
}

// needsPodDir reports whether any volume lives under the pod's dir.
func (p *Plan) needsPodDir() bool {
	for _, v := range p.Volumes {
		if v.Kind.owned() {
			return true
		}
	}
	return false
}

// SubPathsDir, in a pod's dir, holds the bind mounts of its subPaths
// (<volume>/<container>/<index>): files of the volumes, or of hostPaths,
// mounted again. Whatever measures or walks a pod's dir skips it.
const SubPathsDir = "volume-subpaths"

// PodDir is where a pod's data lives under root.
func PodDir(root, uid string) string { return filepath.Join(root, uid) }

// validUID rejects a UID that is not one path element.
func validUID(uid string) error {
	if uid == "" || uid == "." || uid == ".." || strings.ContainsAny(uid, `/\`) {
		return fmt.Errorf("pod uid %q cannot name a directory", uid)
	}
	return nil
}

// PlanPod plans the volumes of pod, whose data lives under root. It does no
// I/O. A volume it cannot plan is a *ConfigError.
func PlanPod(root string, pod *corev1.Pod) (*Plan, error) {
	if err := validUID(string(pod.UID)); err != nil {
		return nil, err
	}
	p := &Plan{Dir: PodDir(root, string(pod.UID))}
	seen := map[string]bool{}
	for i := range pod.Spec.Volumes {
		src := &pod.Spec.Volumes[i]
		if seen[src.Name] {
			return nil, configErr(src.Name, "two volumes have this name")
		}
		seen[src.Name] = true
		if src.Name == "" || strings.ContainsAny(src.Name, `/\`) || src.Name == "." || src.Name == ".." {
			return nil, configErr(src.Name, "the name cannot name a directory")
		}
		v := Volume{Name: src.Name, Source: src}
		vs := &src.VolumeSource
		switch {
		case vs.EmptyDir != nil:
			v.Kind = KindEmptyDir
			switch vs.EmptyDir.Medium {
			case corev1.StorageMediumDefault:
			case corev1.StorageMediumMemory:
				v.Tmpfs = true
			default:
				return nil, configErr(src.Name, "emptyDir medium %q is not supported (only \"\" and Memory)", vs.EmptyDir.Medium)
			}
			if q := vs.EmptyDir.SizeLimit; q != nil {
				if q.Sign() <= 0 {
					return nil, configErr(src.Name, "emptyDir sizeLimit %s is not positive", q.String())
				}
				v.SizeLimit = q.Value()
			}
		case vs.HostPath != nil:
			v.Kind = KindHostPath
			if !path.IsAbs(vs.HostPath.Path) {
				return nil, configErr(src.Name, "hostPath %q is not an absolute path", vs.HostPath.Path)
			}
			v.Dir = filepath.Clean(vs.HostPath.Path)
		case vs.ConfigMap != nil:
			v.Kind = KindConfigMap
		case vs.Secret != nil:
			v.Kind, v.Tmpfs = KindSecret, true
		case vs.DownwardAPI != nil:
			v.Kind = KindDownwardAPI
		case vs.Projected != nil:
			v.Kind, v.Tmpfs = KindProjected, true
		case vs.PersistentVolumeClaim != nil:
			v.Kind = KindClaim
			if vs.PersistentVolumeClaim.ClaimName == "" {
				return nil, configErr(src.Name, "persistentVolumeClaim has no claimName")
			}
			v.ReadOnly = vs.PersistentVolumeClaim.ReadOnly
		default:
			return nil, configErr(src.Name, "volume type %s is not supported by Flotilla (emptyDir, hostPath, configMap, secret, downwardAPI, projected and persistentVolumeClaim are)", sourceType(vs))
		}
		if v.Kind.owned() {
			v.Dir = filepath.Join(p.Dir, "volumes", string(v.Kind), v.Name)
		}
		if v.Kind.api() {
			v.ReadOnly = true
		}
		p.Volumes = append(p.Volumes, v)
	}
	return p, nil
}

// sourceType names the (unsupported) type of a volume source.
func sourceType(vs *corev1.VolumeSource) string {
	for name, set := range map[string]bool{
		"nfs": vs.NFS != nil, "iscsi": vs.ISCSI != nil, "glusterfs": vs.Glusterfs != nil, "rbd": vs.RBD != nil,
		"cephfs": vs.CephFS != nil, "csi": vs.CSI != nil, "ephemeral": vs.Ephemeral != nil, "image": vs.Image != nil,
		"gitRepo": vs.GitRepo != nil, "fc": vs.FC != nil, "flexVolume": vs.FlexVolume != nil, "cinder": vs.Cinder != nil,
		"awsElasticBlockStore": vs.AWSElasticBlockStore != nil, "gcePersistentDisk": vs.GCEPersistentDisk != nil,
		"azureDisk": vs.AzureDisk != nil, "azureFile": vs.AzureFile != nil, "vsphereVolume": vs.VsphereVolume != nil,
		"portworxVolume": vs.PortworxVolume != nil, "quobyte": vs.Quobyte != nil, "scaleIO": vs.ScaleIO != nil,
		"storageos": vs.StorageOS != nil, "flocker": vs.Flocker != nil, "photonPersistentDisk": vs.PhotonPersistentDisk != nil,
	} {
		if set {
			return name
		}
	}
	return "(none)"
}

// MountPlan is one volumeMount of a container, checked against the plan.
type MountPlan struct {
	Volume string
	// SubPath is the cleaned relative path inside the volume; "" mounts it
	// whole.
	SubPath     string
	Destination string
	ReadOnly    bool
}

// Mounts plans the volumeMounts of container c. expand expands the $(VAR)
// references of a subPathExpr with the container's env (nil: none). It does
// no I/O; a bad mount is a *ConfigError.
func (p *Plan) Mounts(c *corev1.Container, expand func(string) string) ([]MountPlan, error) {
	var out []MountPlan
	dests := map[string]bool{}
	for _, vm := range c.VolumeMounts {
		v := p.Volume(vm.Name)
		if v == nil {
			return nil, configErr(vm.Name, "container %s mounts it but the pod has no volume of that name", c.Name)
		}
		if !path.IsAbs(vm.MountPath) {
			return nil, configErr(vm.Name, "mountPath %q of container %s is not absolute", vm.MountPath, c.Name)
		}
		dest := path.Clean(vm.MountPath)
		if dests[dest] {
			return nil, configErr(vm.Name, "container %s mounts two volumes at %s", c.Name, dest)
		}
		dests[dest] = true
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			if vm.SubPath != "" {
				return nil, configErr(vm.Name, "container %s sets both subPath and subPathExpr", c.Name)
			}
			sub = vm.SubPathExpr
			if expand != nil {
				sub = expand(sub)
			}
		}
		if sub != "" {
			clean, err := cleanSubPath(sub)
			if err != nil {
				return nil, configErr(vm.Name, "subPath of container %s: %v", c.Name, err)
			}
			sub = clean
		}
		out = append(out, MountPlan{Volume: v.Name, SubPath: sub, Destination: dest, ReadOnly: vm.ReadOnly || v.ReadOnly})
	}
	return out, nil
}

// cleanSubPath checks a subPath: relative and never climbing out.
func cleanSubPath(sub string) (string, error) {
	if path.IsAbs(sub) {
		return "", fmt.Errorf("%q must be a relative path", sub)
	}
	for _, el := range strings.Split(sub, "/") {
		if el == ".." {
			return "", fmt.Errorf("%q must not contain '..'", sub)
		}
	}
	clean := path.Clean(sub)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}
