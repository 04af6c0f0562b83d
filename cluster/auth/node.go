package auth

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// AnnotationNodeKey on a Node is the SHA-256 of the public key (PKIX DER,
// hex) its client certificates are issued for: the first certificate binds
// the name to the machine that holds the key.
const AnnotationNodeKey = "flotilla.dev/node-key-sha256"

// NodeLeaseNamespace holds the nodes' heartbeat Leases, one per node, named
// after it (Kubernetes' kube-node-lease).
const NodeLeaseNamespace = "kube-node-lease"

// TLSSecretsSelector is the only field selector a node may list or watch
// Secrets by: every node serves the cluster's ingresses, so it reads their
// certificates, and no other Secret in bulk.
const TLSSecretsSelector = "type=" + string(corev1.SecretTypeTLS)

// NodeAuthorizer is Kubernetes' Node authorizer: a node (system:node:NAME in
// system:nodes) may read what it needs to run the pods bound to it and to
// proxy Services, and write only its own Node, its own Lease and the status
// of its own pods. Secrets, ConfigMaps and claims it may read one by one,
// and only those its pods use. It cannot create pods, nor touch another
// node. Whatever it does not allow, and every other user, goes to Next
// (RBAC), where an operator may grant nodes more.
type NodeAuthorizer struct {
	Store store.Interface
	Next  Authorizer
	// Shared are Secrets and ConfigMaps every node reads, as
	// "resource/namespace/name" ("secrets/kube-system/flotilla-gossip": the
	// gossip key; the join ConfigMap, with the load balancer pool).
	Shared map[string]bool
}

var _ Authorizer = NodeAuthorizer{}

// nodeReadable are resources any node reads whole: its pods and those of
// the other nodes (endpoints of Services), Nodes, and what Services and
// ingresses are made of; PersistentVolumes carry no secret.
var nodeReadable = map[[2]string]bool{
	{"", "pods"}: true, {"", "nodes"}: true, {"", "services"}: true, {"", "endpoints"}: true,
	{"", "namespaces"}: true, {"", "persistentvolumes"}: true,
	{"discovery.k8s.io", "endpointslices"}: true, {"networking.k8s.io", "ingresses"}: true,
}

// Authorize implements Authorizer.
func (n NodeAuthorizer) Authorize(u *User, at Attributes) (bool, string) {
	node, ok := NodeName(u)
	if ok {
		if allowed, reason := n.decide(node, at); allowed {
			return true, reason
		}
	}
	if n.Next == nil {
		return false, ""
	}
	return n.Next.Authorize(u, at)
}

func (n NodeAuthorizer) decide(node string, at Attributes) (bool, string) {
	if !at.ResourceRequest {
		return false, ""
	}
	read := at.Verb == "get" || at.Verb == "list" || at.Verb == "watch"
	write := at.Verb == "create" || at.Verb == "update" || at.Verb == "patch"
	res := [2]string{at.APIGroup, at.Resource}
	switch {
	case at.Subresource == "" && read && nodeReadable[res]:
		return true, "a node reads " + at.Resource
	case res == [2]string{"", "nodes"} && write && at.Name == node && (at.Subresource == "" || at.Subresource == "status"),
		res == [2]string{"", "nodes"} && at.Verb == "create" && at.Name == "" && at.Subresource == "":
		// A create names the Node in its body: NodeRestriction admission
		// checks it is the node's own.
		return true, "a node writes its own Node"
	case res == [2]string{"coordination.k8s.io", "leases"} && at.Subresource == "" && (read || write) &&
		at.Namespace == NodeLeaseNamespace && (at.Name == node || (at.Name == "" && at.Verb == "create")):
		return true, "a node keeps its own Lease"
	case res == [2]string{"", "pods"} && at.Subresource == "status" && (at.Verb == "update" || at.Verb == "patch" || at.Verb == "get"):
		if n.podOnNode(at.Namespace, at.Name, node) {
			return true, "the pod is bound to the node"
		}
		return false, fmt.Sprintf("no relationship found between node %q and this object", node)
	case res == [2]string{"", "events"} && write:
		return true, "a node reports events"
	case res == [2]string{"certificates.k8s.io", "certificatesigningrequests"} && at.Verb == "create":
		return true, "a node renews its certificates"
	case res == [2]string{"", "secrets"} && (at.Verb == "list" || at.Verb == "watch") && at.Subresource == "":
		if sel, err := fields.ParseSelector(at.FieldSelector); err == nil && sel.String() == TLSSecretsSelector {
			return true, "a node serves the ingresses' certificates"
		}
		return false, "a node may list Secrets only by " + TLSSecretsSelector
	case at.Verb == "get" && at.Subresource == "" && at.Name != "" &&
		(res == [2]string{"", "secrets"} || res == [2]string{"", "configmaps"} || res == [2]string{"", "persistentvolumeclaims"}):
		if n.Shared[res[1]+"/"+at.Namespace+"/"+at.Name] {
			return true, "every node reads it"
		}
		if n.usedOnNode(res[1], at.Namespace, at.Name, node) {
			return true, "a pod bound to the node uses it"
		}
		return false, fmt.Sprintf("no relationship found between node %q and this object", node)
	}
	return false, ""
}

// lookupTimeout bounds the store reads of one decision.
const lookupTimeout = 5 * time.Second

func (n NodeAuthorizer) podOnNode(namespace, name, node string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	obj, err := n.Store.Get(ctx, "pods", namespace, name)
	if err != nil {
		return false
	}
	p, ok := obj.(*corev1.Pod)
	return ok && p.Spec.NodeName == node
}

// usedOnNode reports whether a pod bound to node in namespace uses the
// Secret, ConfigMap or claim name (resource).
func (n NodeAuthorizer) usedOnNode(resource, namespace, name, node string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	pods, _, err := n.Store.List(ctx, "pods", store.ListOptions{Namespace: namespace, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return false
	}
	for _, obj := range pods {
		p, ok := obj.(*corev1.Pod)
		if ok && p.Spec.NodeName == node && podUses(p, resource, name) {
			return true
		}
	}
	return false
}

// podUses reports whether p refers to the Secret, ConfigMap or claim name:
// in a volume (projected ones too), an environment variable or envFrom of
// any container, or (Secrets) an image pull secret.
func podUses(p *corev1.Pod, resource, name string) bool {
	for _, v := range p.Spec.Volumes {
		switch {
		case resource == "secrets" && v.Secret != nil && v.Secret.SecretName == name,
			resource == "configmaps" && v.ConfigMap != nil && v.ConfigMap.Name == name,
			resource == "persistentvolumeclaims" && v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == name:
			return true
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if (resource == "secrets" && s.Secret != nil && s.Secret.Name == name) ||
					(resource == "configmaps" && s.ConfigMap != nil && s.ConfigMap.Name == name) {
					return true
				}
			}
		}
	}
	if resource == "secrets" {
		for _, r := range p.Spec.ImagePullSecrets {
			if r.Name == name {
				return true
			}
		}
	}
	if resource == "persistentvolumeclaims" {
		return false
	}
	uses := func(envFrom []corev1.EnvFromSource, env []corev1.EnvVar) bool {
		for _, e := range envFrom {
			if (resource == "secrets" && e.SecretRef != nil && e.SecretRef.Name == name) ||
				(resource == "configmaps" && e.ConfigMapRef != nil && e.ConfigMapRef.Name == name) {
				return true
			}
		}
		for _, e := range env {
			if e.ValueFrom == nil {
				continue
			}
			if (resource == "secrets" && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == name) ||
				(resource == "configmaps" && e.ValueFrom.ConfigMapKeyRef != nil && e.ValueFrom.ConfigMapKeyRef.Name == name) {
				return true
			}
		}
		return false
	}
	for _, c := range p.Spec.InitContainers {
		if uses(c.EnvFrom, c.Env) {
			return true
		}
	}
	for _, c := range p.Spec.Containers {
		if uses(c.EnvFrom, c.Env) {
			return true
		}
	}
	for _, c := range p.Spec.EphemeralContainers {
		if uses(c.EnvFrom, c.Env) {
			return true
		}
	}
	return false
}
