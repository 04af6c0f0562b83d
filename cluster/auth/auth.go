// Package auth decides who is asking and whether they may: the identities
// the cluster CA issues (client certificates: the common name is the user,
// the organizations its groups, as in Kubernetes) and authorization with
// Kubernetes' RBAC semantics (Role, ClusterRole, RoleBinding,
// ClusterRoleBinding, the built-in roles cluster-admin, admin, edit and
// view), decided from a cached snapshot of the RBAC objects in the store.
package auth

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
)

// The groups Kubernetes gives meaning to.
const (
	// GroupMasters may do anything: the built-in binding of cluster-admin.
	GroupMasters = "system:masters"
	// GroupAuthenticated is added to every authenticated user.
	GroupAuthenticated = "system:authenticated"
	// GroupNodes is the group of every node's certificate.
	GroupNodes = "system:nodes"
	// NodeUserPrefix starts the user name of a node's certificate:
	// system:node:NAME.
	NodeUserPrefix = "system:node:"
	// APIServerUser is the server's own identity towards the agents' log
	// endpoints (Kubernetes' kube-apiserver-kubelet-client).
	APIServerUser = "system:flotilla:apiserver"
	// GroupServers is the group of the servers' own certificates: the
	// only clients the Raft peer endpoint answers.
	GroupServers = "system:flotilla:servers"
	// ServerUserPrefix starts a server certificate's user name:
	// system:flotilla:server:NAME.
	ServerUserPrefix = "system:flotilla:server:"
	// GroupServerJoiners is the extra group of a server join token
	// (`flotilla token create --server`): it may create servers/join, and
	// so obtain the cluster's keys. Agents' tokens are not in it.
	GroupServerJoiners = "system:bootstrappers:flotilla:servers"
)

// IsServer reports whether u is one of the cluster's servers (a
// certificate of the cluster CA in GroupServers).
func IsServer(u *User) bool {
	return u != nil && strings.HasPrefix(u.Username, ServerUserPrefix) && slices.Contains(u.Groups, GroupServers)
}

// NodeUser is the identity of node name's certificate.
func NodeUser(name string) *User { return NewUser(NodeUserPrefix+name, GroupNodes) }

// NodeName is the node u speaks for, if u is a node: a user named
// system:node:NAME in system:nodes.
func NodeName(u *User) (string, bool) {
	name, ok := strings.CutPrefix(u.Username, NodeUserPrefix)
	if !ok || name == "" || !slices.Contains(u.Groups, GroupNodes) {
		return "", false
	}
	return name, true
}

// User is an authenticated identity, in the Kubernetes API's own type (what
// `kubectl auth whoami` shows).
type User = authenticationv1.UserInfo

// UserFromCert is the identity of a verified client certificate: the common
// name is the user name, each organization a group, and every user is in
// system:authenticated.
func UserFromCert(cert *x509.Certificate) *User {
	return withAuthenticated(&User{Username: cert.Subject.CommonName, Groups: slices.Clone(cert.Subject.Organization)})
}

// NewUser is a user with name and groups, in system:authenticated.
func NewUser(name string, groups ...string) *User {
	return withAuthenticated(&User{Username: name, Groups: slices.Clone(groups)})
}

func withAuthenticated(u *User) *User {
	if !slices.Contains(u.Groups, GroupAuthenticated) {
		u.Groups = append(u.Groups, GroupAuthenticated)
	}
	return u
}

type userKey struct{}

// WithUser returns ctx carrying u.
func WithUser(ctx context.Context, u *User) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// UserFrom returns the user ctx carries, or nil.
func UserFrom(ctx context.Context) *User {
	u, _ := ctx.Value(userKey{}).(*User)
	return u
}

// Attributes describe a request as Kubernetes' authorizer sees it.
type Attributes struct {
	// Verb is get, list, watch, create, update, patch, delete or
	// deletecollection for a resource request; the lower-case HTTP method
	// for a non-resource one.
	Verb string
	// ResourceRequest is true for /api/… and /apis/… requests that name a
	// resource; the fields below then describe it.
	ResourceRequest bool
	APIGroup        string
	Resource        string
	Subresource     string
	Namespace       string
	Name            string
	// FieldSelector is the list or watch's field selector, as sent.
	FieldSelector string
	// Path is the URL path of a non-resource request.
	Path string
}

// resourceString is "pods" or "pods/log", as RBAC rules name it.
func (a Attributes) resourceString() string {
	if a.Subresource != "" {
		return a.Resource + "/" + a.Subresource
	}
	return a.Resource
}

// Authorizer decides requests.
type Authorizer interface {
	// Authorize says whether u may do a, and why not when it may not.
	Authorize(u *User, a Attributes) (allowed bool, reason string)
}
