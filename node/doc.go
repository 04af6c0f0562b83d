// Package node is Flotilla's node agent (its kubelet): it registers the node,
// watches the pods bound to it, runs them on a container Runtime (Podman in
// node/podman, FakeRuntime in tests) inside networks from a Network
// (netfabric) with their volumes (volumes.Manager), runs their init
// containers in order, restarts and probes their containers, writes their
// status back to the store, adopts its pods after its own restart, and
// serves their logs. It reacts to the runtime's events rather than polling
// it, bounds every runtime call with a deadline, reports the node NotReady
// while the runtime is down, and recovers a pod sync that panics. The pod
// lifecycle diagram opens agent.go; the runtime's, runtimehealth.go; the
// Runtime contract is runtime.go.
package node
