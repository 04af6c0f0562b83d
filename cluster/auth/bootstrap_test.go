package auth_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/store"
)

// A server join token authenticates in its extra group as well; a node's
// does not; a group outside system:bootstrappers: is refused at creation.
func TestBootstrapTokenGroups(t *testing.T) {
	st := store.MemoryFor(t)
	ctx := context.Background()
	tokens := auth.BootstrapTokens{Store: st}
	mint := func(groups ...string) string {
		t.Helper()
		tok, secret, err := auth.NewBootstrapTokenFor(time.Now(), time.Hour, "test", groups...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Create(ctx, secret); err != nil {
			t.Fatal(err)
		}
		return tok
	}
	node, err := tokens.Authenticate(ctx, mint())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(node.Groups, auth.GroupBootstrappers) || slices.Contains(node.Groups, auth.GroupServerJoiners) {
		t.Errorf("a node's join token authenticates in %v", node.Groups)
	}
	server, err := tokens.Authenticate(ctx, mint(auth.GroupServerJoiners))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(server.Groups, auth.GroupBootstrappers) || !slices.Contains(server.Groups, auth.GroupServerJoiners) {
		t.Errorf("a server's join token authenticates in %v", server.Groups)
	}
	if _, _, err := auth.NewBootstrapTokenFor(time.Now(), time.Hour, "", auth.GroupMasters); err == nil {
		t.Error("a bootstrap token in system:masters was made")
	}
	// A Secret edited to claim system:masters is refused whole.
	tok, secret, err := auth.NewBootstrapTokenFor(time.Now(), time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	secret.Data["auth-extra-groups"] = []byte(auth.GroupMasters)
	if _, err := st.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if u, err := tokens.Authenticate(ctx, tok); !errors.Is(err, auth.ErrBadToken) {
		t.Errorf("a token claiming system:masters authenticated as %v (%v)", u, err)
	}
}
