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
//     missing path as a directory, as containerd and CRI-O do). A mismatch
//     is a *ConfigError.
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
// as a directory, and one that resolves outside its volume is refused.
//
// Errors: *ConfigError means the pod cannot start as written until something
// changes (the agent shows CreateContainerConfigError and retries); *WaitError
// means it waits for the cluster (a claim binding; shown as
// ContainerCreating). Other errors are I/O failures.
package volumes
