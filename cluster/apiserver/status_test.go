package apiserver

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/raftlog"
	"github.com/flotilla-dev/flotilla/cluster/store"
)

// The errors of a replicated store are retryable Statuses with a
// Retry-After, not internal errors: a write that lost to concurrent
// writers (429), a server with no leader (503, with the cause that lets a
// client send the request on to another server).
func TestReplicationErrorsAreRetryable(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	for _, c := range []struct {
		err      error
		code     int
		noLeader bool
	}{
		{fmt.Errorf("write: %w", store.ErrStale), http.StatusTooManyRequests, false},
		{fmt.Errorf("propose: %w", raftlog.ErrNoLeader), http.StatusServiceUnavailable, true},
		{raftlog.ErrProposalDropped, http.StatusServiceUnavailable, true},
		{fmt.Errorf("propose: %w", raftlog.ErrUnknownOutcome), http.StatusGatewayTimeout, false},
	} {
		rec := httptest.NewRecorder()
		s.writeError(rec, httptest.NewRequest(http.MethodPost, "/api/v1/namespaces/default/configmaps", nil), c.err, target{resource: "configmaps", name: "x"})
		if rec.Code != c.code || rec.Header().Get("Retry-After") != "1" {
			t.Errorf("%v: %d, Retry-After %q; want %d with Retry-After 1\n%s", c.err, rec.Code, rec.Header().Get("Retry-After"), c.code, rec.Body)
		}
		var st metav1.Status
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
			t.Fatal(err)
		}
		noLeader := st.Details != nil && len(st.Details.Causes) == 1 && st.Details.Causes[0].Type == CauseNoLeader
		if noLeader != c.noLeader {
			t.Errorf("%v: cause %s is %v, want %v\n%s", c.err, CauseNoLeader, noLeader, c.noLeader, rec.Body)
		}
	}
}
