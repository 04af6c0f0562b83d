package host

import (
	"testing"

	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/node"
)

// TestEndpointMetricsAuthorizer: the API server always reads metrics and
// stats; others only when the endpoint's Authorizer allows them.
func TestEndpointMetricsAuthorizer(t *testing.T) {
	apiServer := &auth.User{Username: auth.APIServerUser}
	admin := &auth.User{Username: "alice", Groups: []string{auth.GroupMasters}}
	other := &auth.User{Username: "bob", Groups: []string{"dev"}}
	at := auth.Attributes{Verb: "get", ResourceRequest: true, Resource: "nodes", Subresource: "metrics", Name: "n1"}
	for _, tc := range []struct {
		name  string
		e     Endpoint
		allow map[*auth.User]bool
	}{
		{"API server only", Endpoint{}, map[*auth.User]bool{apiServer: true, admin: false, other: false}},
		{"and masters", Endpoint{Authorizer: node.OnlyGroup(auth.GroupMasters)}, map[*auth.User]bool{apiServer: true, admin: true, other: false}},
	} {
		authz := tc.e.metricsAuthorizer()
		for u, want := range tc.allow {
			if got, _ := authz.Authorize(u, at); got != want {
				t.Errorf("%s: %s allowed %v, want %v", tc.name, u.Username, got, want)
			}
		}
	}
}
