package auth

import (
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The labels Kubernetes' built-in admin, edit and view roles aggregate
// from: a ClusterRole committed with one of them extends that role.
const (
	AggregateToAdmin = "rbac.authorization.k8s.io/aggregate-to-admin"
	AggregateToEdit  = "rbac.authorization.k8s.io/aggregate-to-edit"
	AggregateToView  = "rbac.authorization.k8s.io/aggregate-to-view"
)

var (
	readVerbs  = []string{"get", "list", "watch"}
	writeVerbs = []string{"create", "update", "patch", "delete", "deletecollection"}
)

// GroupMonitoring may scrape /metrics (Kubernetes' system:monitoring).
const GroupMonitoring = "system:monitoring"

// BuiltinClusterRoles are the roles every cluster has, as in Kubernetes:
// cluster-admin (everything), admin, edit and view (aggregated from the
// ClusterRoles labelled aggregate-to-…, these built-in parts included),
// system:basic-user (who am I, what may I do), system:discovery (the
// API's discovery documents, version and health), and the role of joining
// nodes (system:node-bootstrapper).
func BuiltinClusterRoles() []*rbacv1.ClusterRole {
	role := func(name string, lbl map[string]string, agg string, rules ...rbacv1.PolicyRule) *rbacv1.ClusterRole {
		cr := &rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{Kind: "ClusterRole", APIVersion: "rbac.authorization.k8s.io/v1"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"}},
			Rules:      rules,
		}
		for k, v := range lbl {
			cr.Labels[k] = v
		}
		if agg != "" {
			cr.AggregationRule = &rbacv1.AggregationRule{ClusterRoleSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{agg: "true"}}}}
		}
		return cr
	}
	r := func(verbs []string, group string, resources ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{Verbs: verbs, APIGroups: []string{group}, Resources: resources}
	}
	toAll := func(key ...string) map[string]string {
		m := map[string]string{}
		for _, k := range key {
			m[k] = "true"
		}
		return m
	}
	return []*rbacv1.ClusterRole{
		role("cluster-admin", nil, "",
			rbacv1.PolicyRule{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}},
			rbacv1.PolicyRule{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}),
		role("admin", nil, AggregateToAdmin),
		role("edit", toAll(AggregateToAdmin), AggregateToEdit),
		role("view", toAll(AggregateToAdmin, AggregateToEdit), AggregateToView),
		// The parts of admin, edit and view, as Kubernetes' system:aggregate-to-….
		role("system:aggregate-to-view", toAll(AggregateToView), "",
			r(readVerbs, "", "pods", "pods/log", "pods/status", "services", "services/status", "endpoints",
				"configmaps", "persistentvolumeclaims", "persistentvolumeclaims/status", "events", "namespaces", "namespaces/status"),
			r(readVerbs, "apps", "deployments", "deployments/status", "deployments/scale", "replicasets", "replicasets/status",
				"replicasets/scale", "statefulsets", "statefulsets/status", "statefulsets/scale"),
			r(readVerbs, "networking.k8s.io", "ingresses", "ingresses/status"),
			r(readVerbs, "discovery.k8s.io", "endpointslices"),
			r(readVerbs, "flotilla.dev", "syncstatuses", "servers")),
		role("system:aggregate-to-edit", toAll(AggregateToEdit), "",
			r(slices.Concat(readVerbs, writeVerbs), "", "pods", "services", "configmaps", "secrets", "persistentvolumeclaims"),
			// exec, attach and port-forward: running code in a pod is
			// editing it (Kubernetes' edit role has them too).
			r([]string{"create", "get"}, "", "pods/exec", "pods/attach", "pods/portforward"),
			r(slices.Concat(readVerbs, writeVerbs), "apps", "deployments", "replicasets", "statefulsets",
				"deployments/scale", "replicasets/scale", "statefulsets/scale"),
			r(slices.Concat(readVerbs, writeVerbs), "networking.k8s.io", "ingresses"),
			r([]string{"create"}, "flotilla.dev", "syncstatuses/sync")),
		role("system:aggregate-to-admin", toAll(AggregateToAdmin), "",
			r(slices.Concat(readVerbs, writeVerbs), "rbac.authorization.k8s.io", "roles", "rolebindings"),
			r([]string{"create"}, "authorization.k8s.io", "localsubjectaccessreviews")),
		role("system:basic-user", nil, "",
			r([]string{"create"}, "authorization.k8s.io", "selfsubjectaccessreviews", "selfsubjectrulesreviews"),
			r([]string{"create"}, "authentication.k8s.io", "selfsubjectreviews")),
		// A joining node's bootstrap token may only ask for its certificate.
		role("system:node-bootstrapper", nil, "",
			r([]string{"create"}, "certificates.k8s.io", "certificatesigningrequests")),
		// Reads the metrics API (metrics-server's role, in view, edit and
		// admin by aggregation): kubectl top.
		role("system:aggregated-metrics-reader", toAll(AggregateToView, AggregateToEdit, AggregateToAdmin), "",
			r(readVerbs, "metrics.k8s.io", "pods", "nodes")),
		// Scrapes /metrics and the health checks (Kubernetes' system:monitoring,
		// bound to the group of that name).
		role("system:monitoring", nil, "",
			rbacv1.PolicyRule{Verbs: []string{"get"}, NonResourceURLs: []string{"/metrics", "/metrics/slis",
				"/healthz", "/healthz/*", "/livez", "/livez/*", "/readyz", "/readyz/*"}}),
		// A server join token may ask to join the store's group (a server,
		// once a learner, promotes itself through the log).
		role("system:flotilla:server-joiner", nil, "",
			r([]string{"create"}, "flotilla.dev", "servers/join")),
		role("system:discovery", nil, "",
			rbacv1.PolicyRule{Verbs: []string{"get"}, NonResourceURLs: []string{"/api", "/api/*", "/apis", "/apis/*",
				"/healthz", "/livez", "/readyz", "/openapi", "/openapi/*", "/version", "/version/"}}),
	}
}

// BuiltinClusterRoleBindings bind cluster-admin to system:masters,
// system:basic-user and system:discovery to every authenticated user, and
// system:node-bootstrapper to bootstrap tokens. Nodes get their rights from
// NodeAuthorizer.
func BuiltinClusterRoleBindings() []*rbacv1.ClusterRoleBinding {
	bind := func(role, group string) *rbacv1.ClusterRoleBinding {
		return &rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{Kind: "ClusterRoleBinding", APIVersion: "rbac.authorization.k8s.io/v1"},
			ObjectMeta: metav1.ObjectMeta{Name: role, Labels: map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"}},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: group}},
		}
	}
	return []*rbacv1.ClusterRoleBinding{
		bind("cluster-admin", GroupMasters),
		bind("system:basic-user", GroupAuthenticated),
		bind("system:discovery", GroupAuthenticated),
		bind("system:node-bootstrapper", GroupBootstrappers),
		bind("system:monitoring", GroupMonitoring),
		bind("system:flotilla:server-joiner", GroupServerJoiners),
	}
}
