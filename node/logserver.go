package node

import (
	"errors"
	"net/http"
	"strings"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// LogsPort is where an agent serves its pods' logs to the server, as the
// kubelet does on its port.
const LogsPort = 10250

// LogHandler serves GET /containerLogs/{namespace}/{pod}/{container}
// (?follow=true&tailLines=N) to the server: requests must come over TLS
// with a client certificate the listener verified (against the cluster
// CA) whose common name is user. A follow streams until the client goes
// away.
func (a *Agent) LogHandler(user string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 ||
			user == "" || r.TLS.VerifiedChains[0][0].Subject.CommonName != user {
			http.Error(w, "forbidden: only the API server reads logs here", http.StatusForbidden)
			return
		}
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/containerLogs/"), "/")
		if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/containerLogs/") || len(parts) != 3 || parts[0] == "" || parts[1] == "" {
			http.Error(w, "GET /containerLogs/{namespace}/{pod}/{container}", http.StatusNotFound)
			return
		}
		opts, err := apiserver.ParseLogQuery(r.URL.Query())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		opts.Container = parts[2]
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		err = a.PodLogs(r.Context(), parts[0], parts[1], opts, flushWriter{w})
		switch {
		case err == nil || r.Context().Err() != nil:
		case errors.Is(err, store.ErrNotFound), errors.Is(err, runtimeapi.ErrNotFound):
			http.Error(w, err.Error(), http.StatusNotFound)
		default:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
}

// flushWriter flushes after every write, so a follow streams.
type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}
