package apiserver

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flotilla-dev/flotilla/cluster/raftlog"
	"github.com/flotilla-dev/flotilla/cluster/store"
)

// The errors of a replicated store are retryable Statuses with a
// Retry-After, not internal errors: a write that lost to concurrent
// writers (429), a server with no leader (503).
func TestReplicationErrorsAreRetryable(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	for _, c := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("write: %w", store.ErrStale), http.StatusTooManyRequests},
		{fmt.Errorf("propose: %w", raftlog.ErrNoLeader), http.StatusServiceUnavailable},
		{raftlog.ErrProposalDropped, http.StatusServiceUnavailable},
	} {
		rec := httptest.NewRecorder()
		s.writeError(rec, httptest.NewRequest(http.MethodPost, "/api/v1/namespaces/default/configmaps", nil), c.err, target{resource: "configmaps", name: "x"})
		if rec.Code != c.code || rec.Header().Get("Retry-After") != "1" {
			t.Errorf("%v: %d, Retry-After %q; want %d with Retry-After 1\n%s", c.err, rec.Code, rec.Header().Get("Retry-After"), c.code, rec.Body)
		}
	}
}
