// Package node is Flotilla's node agent (its kubelet): it registers the node,
// watches the pods bound to it, runs them on a container Runtime (Podman in
// node/podman, FakeRuntime in tests) inside networks from a Network
// (netfabric) with their volumes (volumes.Manager), runs their init
// containers in order, restarts and probes their containers, writes their
// status back to the store, adopts its pods after its own restart, and
// serves their logs.
package node
