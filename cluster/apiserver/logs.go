package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// LogSource reads pod logs; the server is given one (a node agent proxy in
// a cluster, StaticLogs in tests).
type LogSource interface {
	// PodLogs writes the logs of one pod's container to w. With Follow it
	// blocks, writing as lines arrive, until ctx ends; else it returns after
	// the current logs. store.ErrNotFound means no such pod or container.
	// It is called on the request's goroutine; w is flushed after each Write.
	PodLogs(ctx context.Context, namespace, pod string, opts corev1.PodLogOptions, w io.Writer) error
}

// StaticLogs is a LogSource with fixed text per pod, keyed
// "namespace/pod/container" or, for any container, "namespace/pod"; for
// tests and demos. Follow returns once the text is written.
type StaticLogs map[string]string

var _ LogSource = StaticLogs(nil)

// PodLogs implements LogSource.
func (l StaticLogs) PodLogs(ctx context.Context, namespace, pod string, opts corev1.PodLogOptions, w io.Writer) error {
	text, ok := l[namespace+"/"+pod+"/"+opts.Container]
	if !ok {
		text, ok = l[namespace+"/"+pod]
	}
	if !ok {
		return fmt.Errorf("no logs for container %q of pod %s/%s: %w", opts.Container, namespace, pod, store.ErrNotFound)
	}
	if opts.TailLines != nil {
		lines := strings.SplitAfter(text, "\n")
		if lines[len(lines)-1] == "" {
			lines = lines[:len(lines)-1]
		}
		if n := int(*opts.TailLines); n >= 0 && n < len(lines) {
			lines = lines[len(lines)-n:]
		}
		text = strings.Join(lines, "")
	}
	_, err := io.WriteString(w, text)
	return err
}

// flushWriter flushes after each write and remembers whether anything was
// written (after which errors can no longer become a Status).
type flushWriter struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	flusher http.Flusher
	wrote   bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.wrote {
		f.w.Header().Set("Content-Type", "text/plain")
		f.w.WriteHeader(http.StatusOK)
		f.wrote = true
	}
	n, err := f.w.Write(p)
	if f.flusher != nil {
		f.flusher.Flush()
	}
	return n, err
}

// podLogs serves GET …/pods/<name>/log?container=&follow=&tailLines=.
func (s *Server) podLogs(w http.ResponseWriter, r *http.Request, req request) {
	if s.cfg.Logs == nil {
		s.writeError(w, r, newError(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			"pod logs are not available on this server"), req.target())
		return
	}
	opts, err := ParseLogQuery(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	obj, err := s.cfg.Store.Get(r.Context(), "pods", req.namespace, req.name)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	if pod, ok := obj.(*corev1.Pod); ok {
		if err := logsAvailable(pod, &opts); err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	if opts.Follow {
		s.auditStarted(r)
	}
	fw := &flushWriter{w: w}
	fw.flusher, _ = w.(http.Flusher)
	var out io.Writer = fw
	if opts.LimitBytes != nil {
		out = &limitWriter{w: fw, left: *opts.LimitBytes, done: cancel}
	}
	err = s.cfg.Logs.PodLogs(ctx, req.namespace, req.name, opts, out)
	if errors.Is(err, errLimitReached) {
		err = nil
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	switch {
	case err != nil && !fw.wrote && ctx.Err() == nil:
		if errors.Is(err, store.ErrNotFound) {
			err = notFound("%v", err) // say which container, not just the pod
		}
		s.writeError(w, r, err, req.target())
	case err != nil && ctx.Err() == nil:
		s.log.Warn("pod log stream ended", "namespace", req.namespace, "pod", req.name, "err", err)
	case !fw.wrote:
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusOK)
	}
}

// logsAvailable is kube-apiserver's and the kubelet's check before a log
// is read, with their wording (400 Bad Request): the container must be
// one of the pod's, and must have started. opts.Container is set to the
// pod's first container when empty.
func logsAvailable(pod *corev1.Pod, opts *corev1.PodLogOptions) error {
	name := opts.Container
	if name == "" {
		if len(pod.Spec.Containers) == 0 {
			return badRequest("pod %s has no containers", pod.Name)
		}
		name = pod.Spec.Containers[0].Name
	}
	found := false
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			found = found || c.Name == name
		}
	}
	if !found {
		return badRequest("container %s is not valid for pod %s", name, pod.Name)
	}
	opts.Container = name
	if opts.Previous {
		for _, st := range append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
			if st.Name == name && st.LastTerminationState.Terminated != nil {
				return nil
			}
		}
		return badRequest("previous terminated container %q in pod %q not found", name, pod.Name)
	}
	for _, st := range append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if st.Name != name {
			continue
		}
		if st.State.Waiting != nil && st.LastTerminationState.Terminated == nil && st.RestartCount == 0 {
			return badRequest("container %q in pod %q is waiting to start: %s", name, pod.Name, waitingReason(st.State.Waiting.Reason))
		}
		return nil
	}
	return badRequest("container %q in pod %q is not available", name, pod.Name)
}

// waitingReason is the kubelet's phrase for a waiting container's reason.
func waitingReason(reason string) string {
	switch reason {
	case "ErrImagePull", "ImagePullBackOff":
		return "trying and failing to pull image"
	case "ErrImageNeverPull", "InvalidImageName":
		return "image can't be pulled"
	case "":
		return "ContainerCreating"
	}
	return reason
}

// errLimitReached ends a log read at its limitBytes.
var errLimitReached = errors.New("limitBytes reached")

// limitWriter passes on at most left bytes, then cancels the read.
type limitWriter struct {
	w    io.Writer
	left int64
	done context.CancelFunc
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.left <= 0 {
		l.done()
		return 0, errLimitReached
	}
	cut := false
	if int64(len(p)) > l.left {
		p, cut = p[:l.left], true
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	if err == nil && cut {
		l.done()
		err = errLimitReached
	}
	return n, err
}
