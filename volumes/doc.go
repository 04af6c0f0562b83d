// Package volumes sets up the volumes of the pods on a node, for the node
// agent: from a pod spec it plans where each volume lives on the host and
// what each container mounts (PlanPod, Plan.Mounts: pure), then makes it so
// (Manager.Setup) and removes it with the pod (Manager.Teardown).
//
// What each volume source becomes:
//
//   - emptyDir: a directory <Dir>/<pod uid>/volumes/empty-dir/<name>, shared
//     by the pod's containers, removed with the pod. medium: Memory mounts a
//     tmpfs there, of sizeLimit bytes when set (the kernel enforces it).
//     sizeLimit on disk is enforced as the kubelet does it, by eviction: the
//     agent measures the directory (Manager.Exceeded) every resync and fails
//     the pod with reason "Evicted" when it is over the limit.
//   - hostPath: the host path itself, after the check its type asks for
//     (DirectoryOrCreate and FileOrCreate create; Directory, File, Socket,
//     CharDevice and BlockDevice must exist and be one; no type creates a
//     missing path as a directory, as containerd and CRI-O do; what is
//     created is made one component at a time with mkdirat on the opened
//     parent and never followed if a symlink appears there). A mismatch is
//     a *ConfigError.
//   - configMap, secret, downwardAPI, projected: files written as the
//     kubelet's AtomicWriter does (a hidden timestamped directory, a "..data"
//     symlink swapped to it with one rename, and one symlink per top-level
//     key through "..data"), so that Setup, called again after the source
//     changed, updates the files in place in running containers; an
//     unchanged payload writes nothing. Secrets and projected volumes live
//     on a tmpfs, never on disk. These volumes are always mounted read-only.
//   - persistentVolumeClaim: the host path of the PersistentVolume bound to
//     the claim, found through the Claims seam (StoreClaims reads the
//     claim's spec.volumeName and the volume's hostPath or local path). A
//     claim that is not bound yet is a *WaitError.
//
// A volumeMount's subPath (or subPathExpr, expanded with the container's
// env) mounts one file or directory of the volume; a missing one is created
// as a directory. In a volume containers can write (emptyDir, hostPath,
// claim) it is never handed to the runtime as a path, which a container
// sharing the volume could turn into a symlink to the host's / before runc
// binds it (CVE-2017-1002101, CVE-2021-25741): as the kubelet does, it is
// opened one component at a time from the volume's root, refusing symlinks
// (a missing directory is made with mkdirat on the opened parent), and the
// opened file is bind-mounted through /proc/self/fd onto
// <pod dir>/volume-subpaths/<volume>/<container>/<index>, out of every
// container's reach; the runtime binds that. Teardown unmounts them. In API
// volumes, which only the agent writes, a subPath that resolves outside
// the volume is refused.
//
// Errors: *ConfigError means the pod cannot start as written until something
// changes (the agent shows CreateContainerConfigError and retries); *WaitError
// means it waits for the cluster (a claim binding; shown as
// ContainerCreating). Other errors are I/O failures.
package volumes
