package apiserver

// SnapshotSavePath is where `flotilla snapshot save` asks the server for a
// snapshot of the cluster (POST, a SnapshotRequest as the body; the answer
// is the snapshot, cluster/snapshot's format, as application/x-tar). It is a
// resource path (resource "snapshots", name "cluster", subresource "save",
// verb create in group flotilla.dev), so RBAC grants it to cluster-admin
// (system:masters) only: a snapshot carries the cluster CA's key, sealed
// under the passphrase.
const SnapshotSavePath = "/apis/flotilla.dev/v1alpha1/snapshots/cluster/save"

// SnapshotRequest is the body of a POST to SnapshotSavePath.
type SnapshotRequest struct {
	// Passphrase encrypts the snapshot's keys (the CA's, the Secrets').
	Passphrase string `json:"passphrase"`
}
