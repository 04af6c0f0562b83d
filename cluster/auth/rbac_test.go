package auth_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// rbacEnv is an RBAC authorizer running over a real (in-memory) store.
type rbacEnv struct {
	t     *testing.T
	store *store.Badger
	rbac  *auth.RBAC
}

func newRBACEnv(t *testing.T) *rbacEnv {
	st := store.MemoryFor(t)
	ctx, cancel := context.WithCancel(context.Background())
	a, err := auth.NewRBAC(ctx, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &rbacEnv{t: t, store: st, rbac: a}
}

// settle waits until the authorizer has read revision rv.
func (e *rbacEnv) settle(rv string) {
	e.t.Helper()
	rev, err := strconv.ParseInt(rv, 10, 64)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.rbac.WaitRevision(ctx, rev); err != nil {
		e.t.Fatalf("revision %d not read: %v", rev, err)
	}
}

func (e *rbacEnv) put(obj schema.Object) {
	e.t.Helper()
	k, err := schema.KindOf(obj)
	if err != nil {
		e.t.Fatal(err)
	}
	schema.SetTypeMeta(obj, k)
	out, err := e.store.Create(context.Background(), obj)
	if err != nil {
		e.t.Fatal(err)
	}
	e.settle(out.GetResourceVersion())
}

func (e *rbacEnv) remove(resource, ns, name string) {
	e.t.Helper()
	if _, err := e.store.Delete(context.Background(), resource, ns, name, store.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.settle(strconv.FormatInt(e.store.Revision(), 10))
}

// check asserts each decision.
func (e *rbacEnv) check(u *auth.User, cases map[auth.Attributes]bool) {
	e.t.Helper()
	for at, want := range cases {
		if got, _ := e.rbac.Authorize(u, at); got != want {
			e.t.Errorf("%s %+v: allowed = %v, want %v", u.Username, at, got, want)
		}
	}
}

func res(verb, group, resource, ns, name string) auth.Attributes {
	a := auth.Attributes{ResourceRequest: true, Verb: verb, APIGroup: group, Resource: resource, Namespace: ns, Name: name}
	if i := indexByte(resource, '/'); i >= 0 {
		a.Resource, a.Subresource = resource[:i], resource[i+1:]
	}
	return a
}

func indexByte(s string, c byte) int {
	for i := range len(s) {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func binding(ns, name, kind, role string, subjects ...rbacv1.Subject) schema.Object {
	ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: role}
	if ns == "" {
		return &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, RoleRef: ref, Subjects: subjects}
	}
	return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, RoleRef: ref, Subjects: subjects}
}

func TestBuiltinRoles(t *testing.T) {
	e := newRBACEnv(t)
	e.put(binding("", "viewers", "ClusterRole", "view", rbacv1.Subject{Kind: "Group", Name: "viewers"}))
	e.put(binding("shop", "ed", "ClusterRole", "edit", rbacv1.Subject{Kind: "User", Name: "ed"}))
	e.put(binding("shop", "ada", "ClusterRole", "admin", rbacv1.Subject{Kind: "User", Name: "ada"}))

	e.check(auth.NewUser("root", auth.GroupMasters), map[auth.Attributes]bool{
		res("delete", "", "nodes", "", "n1"):                               true,
		{Verb: "post", Path: "/anything"}:                                  true,
		res("create", "rbac.authorization.k8s.io", "clusterroles", "", ""): true,
	})
	e.check(auth.NewUser("vera", "viewers"), map[auth.Attributes]bool{
		res("list", "", "pods", "", ""):                                           true,
		res("watch", "", "pods", "shop", ""):                                      true,
		res("get", "", "pods/log", "shop", "web"):                                 true,
		res("get", "apps", "deployments", "x", "d"):                               true,
		res("get", "", "secrets", "shop", "db"):                                   false,
		res("delete", "", "pods", "shop", "web"):                                  false,
		res("get", "", "nodes", "", "n1"):                                         false,
		{Verb: "get", Path: "/apis/apps/v1"}:                                      true, // system:discovery
		{Verb: "get", Path: "/metrics"}:                                           false,
		res("create", "authorization.k8s.io", "selfsubjectaccessreviews", "", ""): true, // system:basic-user
		res("list", "metrics.k8s.io", "pods", "shop", ""):                         true, // system:aggregated-metrics-reader
		res("get", "metrics.k8s.io", "nodes", "", "n1"):                           true,
		res("get", "", "nodes/metrics", "", "n1"):                                 false, // the agent's own /metrics
		res("list", "flotilla.dev", "servers", "", ""):                            true,  // get servers
		res("create", "flotilla.dev", "snapshots/save", "", "cluster"):            false, // a snapshot holds the CA's key
	})
	// Prometheus' identity: /metrics and health, nothing else.
	e.check(auth.NewUser("prometheus", auth.GroupMonitoring), map[auth.Attributes]bool{
		{Verb: "get", Path: "/metrics"}:   true,
		{Verb: "get", Path: "/readyz"}:    true,
		{Verb: "post", Path: "/metrics"}:  false,
		res("list", "", "pods", "", ""):   false,
		res("get", "", "secrets", "", ""): false,
	})
	e.check(auth.NewUser("ed"), map[auth.Attributes]bool{
		res("delete", "", "pods", "shop", "web"):                               true,
		res("get", "", "secrets", "shop", "db"):                                true,
		res("delete", "", "pods", "default", "web"):                            false,
		res("create", "rbac.authorization.k8s.io", "rolebindings", "shop", ""): false,
		res("create", "flotilla.dev", "syncstatuses/sync", "", "default"):      false, // only in its namespace
	})
	e.check(auth.NewUser("ada"), map[auth.Attributes]bool{
		res("create", "rbac.authorization.k8s.io", "rolebindings", "shop", ""): true,
		res("delete", "", "pods", "shop", "web"):                               true,
		res("create", "rbac.authorization.k8s.io", "clusterroles", "", ""):     false,
		res("create", "flotilla.dev", "snapshots/save", "", "cluster"):         false,
	})
	e.check(auth.NewUser("root", auth.GroupMasters), map[auth.Attributes]bool{
		res("create", "flotilla.dev", "snapshots/save", "", "cluster"): true,
	})
	// A node's join token may not join a server; a server's may, nothing
	// more; a server's certificate has no API rights of its own.
	e.check(auth.NewUser("system:bootstrap:abcdef", auth.GroupBootstrappers), map[auth.Attributes]bool{
		res("create", "flotilla.dev", "servers/join", "", "s4"):    false,
		res("create", "flotilla.dev", "servers/promote", "", "s4"): false,
	})
	e.check(auth.NewUser("system:bootstrap:abcdef", auth.GroupBootstrappers, auth.GroupServerJoiners), map[auth.Attributes]bool{
		res("create", "flotilla.dev", "servers/join", "", "s4"):    true,
		res("create", "flotilla.dev", "servers/promote", "", "s4"): false,
		res("list", "", "secrets", "", ""):                         false,
	})
	e.check(auth.NewUser(auth.ServerUserPrefix+"s2", auth.GroupServers), map[auth.Attributes]bool{
		res("create", "flotilla.dev", "servers/promote", "", "s4"): false,
		res("create", "flotilla.dev", "servers/join", "", "s4"):    false,
		res("list", "", "secrets", "", ""):                         false,
	})
}

// TestRuleSemantics: resource names, subresources, service accounts, roles
// in their namespace, non-resource wildcards, aggregation and a Git role
// replacing a built-in one.
func TestRuleSemantics(t *testing.T) {
	e := newRBACEnv(t)
	e.put(&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "one-config"}, Rules: []rbacv1.PolicyRule{
		{Verbs: []string{"get", "update"}, APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"app"}},
		{Verbs: []string{"update"}, APIGroups: []string{"apps"}, Resources: []string{"*/status"}},
	}})
	e.put(binding("shop", "sa", "Role", "one-config", rbacv1.Subject{Kind: "ServiceAccount", Name: "deployer"}))
	sa := auth.NewUser("system:serviceaccount:shop:deployer")
	e.check(sa, map[auth.Attributes]bool{
		res("get", "", "configmaps", "shop", "app"):                true,
		res("get", "", "configmaps", "shop", "other"):              false,
		res("list", "", "configmaps", "shop", ""):                  false, // names restrict to named requests
		res("update", "apps", "deployments/status", "shop", "web"): true,
		res("update", "apps", "deployments", "shop", "web"):        false,
		res("get", "", "configmaps", "other", "app"):               false,
	})
	e.check(auth.NewUser("system:serviceaccount:other:deployer"), map[auth.Attributes]bool{
		res("get", "", "configmaps", "shop", "app"): false,
	})

	e.put(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "probe"}, Rules: []rbacv1.PolicyRule{
		{Verbs: []string{"get"}, NonResourceURLs: []string{"/healthz/*"}},
	}})
	e.put(binding("", "probe", "ClusterRole", "probe", rbacv1.Subject{Kind: "User", Name: "mon"}))
	e.check(auth.NewUser("mon"), map[auth.Attributes]bool{
		{Verb: "get", Path: "/healthz/ping"}:  true,
		{Verb: "post", Path: "/healthz/ping"}: false,
		{Verb: "get", Path: "/metrics"}:       false,
	})

	// Aggregation: a ClusterRole labelled aggregate-to-view extends view.
	vera := auth.NewUser("vera")
	e.put(binding("", "vera", "ClusterRole", "view", rbacv1.Subject{Kind: "User", Name: "vera"}))
	widgets := res("list", "example.com", "widgets", "shop", "")
	e.check(vera, map[auth.Attributes]bool{widgets: false})
	e.put(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "widget-viewer", Labels: map[string]string{auth.AggregateToView: "true"}},
		Rules: []rbacv1.PolicyRule{{Verbs: []string{"list"}, APIGroups: []string{"example.com"}, Resources: []string{"widgets"}}}})
	e.check(vera, map[auth.Attributes]bool{widgets: true})

	// A ClusterRole named view in Git replaces the built-in one.
	e.put(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "view"}, Rules: []rbacv1.PolicyRule{
		{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"services"}}}})
	e.check(vera, map[auth.Attributes]bool{
		res("get", "", "services", "shop", "web"): true,
		res("list", "", "pods", "shop", ""):       false,
	})
}

// TestDecisionsFollowChanges: a cached decision does not outlive the
// binding it came from.
func TestDecisionsFollowChanges(t *testing.T) {
	e := newRBACEnv(t)
	u := auth.NewUser("ann")
	del := res("delete", "", "pods", "shop", "web")
	e.check(u, map[auth.Attributes]bool{del: false})
	e.put(binding("shop", "ann", "ClusterRole", "edit", rbacv1.Subject{Kind: "User", Name: "ann"}))
	e.check(u, map[auth.Attributes]bool{del: true})
	e.check(u, map[auth.Attributes]bool{del: true}) // from the cache
	e.remove("rolebindings", "shop", "ann")
	e.check(u, map[auth.Attributes]bool{del: false})
}
