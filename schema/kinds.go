// Package schema is Flotilla's object model: the Kubernetes API types that
// manifests decode into, the registry of supported kinds, the decoders for
// YAML, JSON and CUE manifests, and the CUE definitions (schema/*.cue) that
// both `flotilla vet` and a plain `cue vet` use to validate them.
package schema

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Object is what the store, the API server and the controllers pass around:
// any Kubernetes API object (it has ObjectMeta and TypeMeta).
type Object interface {
	metav1.Object
	runtime.Object
}

// Kind describes one supported kind of object.
type Kind struct {
	Kind       string   // "Deployment"
	Group      string   // "apps"; "" for the core group
	Version    string   // "v1"
	Resource   string   // "deployments": the plural used in API paths and store keys
	Namespaced bool     // false for Node, Namespace, PersistentVolume, StorageClass, ClusterRole, ClusterRoleBinding, SyncStatus
	ShortNames []string // "deploy": what `flotilla get` also accepts
	// FromGit is true for kinds a user may put in a Git repository.
	FromGit bool
	typ     reflect.Type
}

// APIVersion is "group/version", or "version" for the core group.
func (k Kind) APIVersion() string {
	if k.Group == "" {
		return k.Version
	}
	return k.Group + "/" + k.Version
}

// New returns a new empty object of this kind with its TypeMeta set.
func (k Kind) New() Object {
	obj := reflect.New(k.typ).Interface().(Object)
	SetTypeMeta(obj, k)
	return obj
}

// NewList returns an empty slice-holding list value is not provided: the API
// server builds lists itself. Kinds are identified by Resource in store keys.

var kinds = []Kind{
	{Kind: "Namespace", Version: "v1", Resource: "namespaces", ShortNames: []string{"ns"}, FromGit: true, typ: reflect.TypeOf(corev1.Namespace{})},
	{Kind: "Node", Version: "v1", Resource: "nodes", ShortNames: []string{"no"}, typ: reflect.TypeOf(corev1.Node{})},
	{Kind: "Pod", Version: "v1", Resource: "pods", Namespaced: true, ShortNames: []string{"po"}, FromGit: true, typ: reflect.TypeOf(corev1.Pod{})},
	{Kind: "Service", Version: "v1", Resource: "services", Namespaced: true, ShortNames: []string{"svc"}, FromGit: true, typ: reflect.TypeOf(corev1.Service{})},
	{Kind: "Endpoints", Version: "v1", Resource: "endpoints", Namespaced: true, ShortNames: []string{"ep"}, typ: reflect.TypeOf(corev1.Endpoints{})},
	{Kind: "EndpointSlice", Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices", Namespaced: true, typ: reflect.TypeOf(discoveryv1.EndpointSlice{})},
	{Kind: "ConfigMap", Version: "v1", Resource: "configmaps", Namespaced: true, ShortNames: []string{"cm"}, FromGit: true, typ: reflect.TypeOf(corev1.ConfigMap{})},
	{Kind: "Secret", Version: "v1", Resource: "secrets", Namespaced: true, FromGit: true, typ: reflect.TypeOf(corev1.Secret{})},
	{Kind: "PersistentVolume", Version: "v1", Resource: "persistentvolumes", ShortNames: []string{"pv"}, FromGit: true, typ: reflect.TypeOf(corev1.PersistentVolume{})},
	{Kind: "PersistentVolumeClaim", Version: "v1", Resource: "persistentvolumeclaims", Namespaced: true, ShortNames: []string{"pvc"}, FromGit: true, typ: reflect.TypeOf(corev1.PersistentVolumeClaim{})},
	{Kind: "StorageClass", Group: "storage.k8s.io", Version: "v1", Resource: "storageclasses", ShortNames: []string{"sc"}, FromGit: true, typ: reflect.TypeOf(storagev1.StorageClass{})},
	{Kind: "Event", Version: "v1", Resource: "events", Namespaced: true, ShortNames: []string{"ev"}, typ: reflect.TypeOf(corev1.Event{})},
	{Kind: "Lease", Group: "coordination.k8s.io", Version: "v1", Resource: "leases", Namespaced: true, typ: reflect.TypeOf(coordinationv1.Lease{})},
	{Kind: "Deployment", Group: "apps", Version: "v1", Resource: "deployments", Namespaced: true, ShortNames: []string{"deploy"}, FromGit: true, typ: reflect.TypeOf(appsv1.Deployment{})},
	{Kind: "ReplicaSet", Group: "apps", Version: "v1", Resource: "replicasets", Namespaced: true, ShortNames: []string{"rs"}, FromGit: true, typ: reflect.TypeOf(appsv1.ReplicaSet{})},
	{Kind: "StatefulSet", Group: "apps", Version: "v1", Resource: "statefulsets", Namespaced: true, ShortNames: []string{"sts"}, FromGit: true, typ: reflect.TypeOf(appsv1.StatefulSet{})},
	{Kind: "Ingress", Group: "networking.k8s.io", Version: "v1", Resource: "ingresses", Namespaced: true, ShortNames: []string{"ing"}, FromGit: true, typ: reflect.TypeOf(networkingv1.Ingress{})},
	{Kind: "Role", Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles", Namespaced: true, FromGit: true, typ: reflect.TypeOf(rbacv1.Role{})},
	{Kind: "ClusterRole", Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles", FromGit: true, typ: reflect.TypeOf(rbacv1.ClusterRole{})},
	{Kind: "RoleBinding", Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings", Namespaced: true, FromGit: true, typ: reflect.TypeOf(rbacv1.RoleBinding{})},
	{Kind: "ClusterRoleBinding", Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings", FromGit: true, typ: reflect.TypeOf(rbacv1.ClusterRoleBinding{})},
	{Kind: "SyncStatus", Group: FlotillaGroup, Version: "v1alpha1", Resource: "syncstatuses", typ: reflect.TypeOf(SyncStatus{})},
}

var (
	byKind     = map[string]Kind{}
	byResource = map[string]Kind{}
	byType     = map[reflect.Type]Kind{}
)

func init() {
	for _, k := range kinds {
		byKind[k.Kind] = k
		byResource[k.Resource] = k
		byType[k.typ] = k
	}
}

// Kinds returns every kind Flotilla knows, in a stable order.
func Kinds() []Kind { return append([]Kind(nil), kinds...) }

// GitKinds returns the names of the kinds a repository may contain, sorted.
func GitKinds() []string {
	var names []string
	for _, k := range kinds {
		if k.FromGit {
			names = append(names, k.Kind)
		}
	}
	sort.Strings(names)
	return names
}

// KindByName finds a kind by its Kind name ("Deployment").
func KindByName(kind string) (Kind, bool) { k, ok := byKind[kind]; return k, ok }

// KindByResource finds a kind by its plural resource name ("deployments").
func KindByResource(resource string) (Kind, bool) { k, ok := byResource[resource]; return k, ok }

// KindByAPIVersion finds a kind by apiVersion and kind, as written in a manifest.
func KindByAPIVersion(apiVersion, kind string) (Kind, bool) {
	k, ok := byKind[kind]
	if !ok || k.APIVersion() != apiVersion {
		return Kind{}, false
	}
	return k, true
}

// LookupKind resolves what a user types after `get`: a resource ("pods"),
// its singular ("pod"), a short name ("po") or the Kind ("Pod"), any case.
func LookupKind(name string) (Kind, bool) {
	n := strings.ToLower(name)
	for _, k := range kinds {
		if n == k.Resource || n == strings.ToLower(k.Kind) {
			return k, true
		}
		for _, s := range k.ShortNames {
			if n == s {
				return k, true
			}
		}
	}
	return Kind{}, false
}

// KindOf returns the kind of a Go object (by its type, not its TypeMeta).
func KindOf(obj Object) (Kind, error) {
	t := reflect.TypeOf(obj)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	k, ok := byType[t]
	if !ok {
		return Kind{}, fmt.Errorf("schema: %T is not a supported kind", obj)
	}
	return k, nil
}

// SetTypeMeta fills in apiVersion and kind, as the wire format wants them.
func SetTypeMeta(obj Object, k Kind) {
	obj.GetObjectKind().SetGroupVersionKind(schemaGVK(k))
}
