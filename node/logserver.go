package node

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// LogsPort is where an agent serves its pods' logs to the server, as the
// kubelet does on its port.
const LogsPort = 10250

// LogHandler serves GET /containerLogs/{namespace}/{pod}/{container}
// (?follow=true&tailLines=N) to requests that carry token as a bearer
// token: the server proxies `flotilla logs` of this node's pods here. A
// follow streams until the client goes away.
func (a *Agent) LogHandler(token string) http.Handler {
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if len(want) == 0 || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/containerLogs/"), "/")
		if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/containerLogs/") || len(parts) != 3 || parts[0] == "" || parts[1] == "" {
			http.Error(w, "GET /containerLogs/{namespace}/{pod}/{container}", http.StatusNotFound)
			return
		}
		q := r.URL.Query()
		opts := LogOptions{Container: parts[2], Follow: q.Get("follow") == "true"}
		if s := q.Get("tailLines"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 {
				http.Error(w, "tailLines must be a number >= 0", http.StatusBadRequest)
				return
			}
			opts.TailLines = &n
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		err := a.PodLogs(r.Context(), parts[0], parts[1], opts, flushWriter{w})
		switch {
		case err == nil || r.Context().Err() != nil:
		case errors.Is(err, store.ErrNotFound), errors.Is(err, ErrNotFound):
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
