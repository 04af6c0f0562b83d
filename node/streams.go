package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gorilla/mux"
	vkapi "github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/node/podnet"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// StreamHandler serves the kubelet's streaming endpoints to the server:
// /exec/{namespace}/{pod}/{container}?command=…&input=1&output=1&tty=1,
// /attach/{namespace}/{pod}/{container} and /portForward/{namespace}/{pod},
// on the streaming protocols kubectl speaks: SPDY (and the channel
// WebSocket protocols up to v4) with the kubelet's own stream server
// (virtual-kubelet's packaging of it), and exec and attach on WebSocket v5
// (serveWebSocketV5). The server has authorized the user;
// here only the server may ask (user is its client certificate's name;
// "" in process, where the server calls the handler directly).
func (a *Agent) StreamHandler(user string) http.Handler {
	r := mux.NewRouter()
	r.HandleFunc("/exec/{namespace}/{pod}/{container}", vkapi.HandleContainerExec(a.execHandler)).Methods(http.MethodGet, http.MethodPost)
	r.HandleFunc("/attach/{namespace}/{pod}/{container}", vkapi.HandleContainerAttach(a.attachHandler)).Methods(http.MethodGet, http.MethodPost)
	r.HandleFunc("/portForward/{namespace}/{pod}", vkapi.HandlePortForward(a.portForwardHandler)).Methods(http.MethodGet, http.MethodPost)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if wsstream.IsWebSocketRequestWithStreamCloseProtocol(req) {
			a.serveWebSocketV5(w, req)
			return
		}
		r.ServeHTTP(w, req)
	})
	if user == "" {
		return h
	}
	return onlyUser(user, h, "only the API server opens streams here")
}

// onlyUser lets through requests over TLS whose verified client
// certificate names user.
func onlyUser(user string, h http.Handler, refusal string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 ||
			r.TLS.VerifiedChains[0][0].Subject.CommonName != user {
			http.Error(w, "forbidden: "+refusal, http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// streamTarget finds the running container of a pod of this node.
func (a *Agent) streamTarget(namespace, pod, container string) (string, error) {
	found, worker := a.podWorker(namespace, pod)
	if found == nil {
		return "", fmt.Errorf("pod %s/%s on node %s: %w", namespace, pod, a.cfg.NodeName, store.ErrNotFound)
	}
	for _, st := range found.Status.ContainerStatuses {
		if st.Name == container && st.State.Running == nil {
			return "", fmt.Errorf("container %q of pod %s/%s is not running", container, namespace, pod)
		}
	}
	id := ""
	if worker != nil {
		id = worker.containerID(container)
	}
	if id == "" {
		return "", fmt.Errorf("container %q of pod %s/%s: %w", container, namespace, pod, runtimeapi.ErrNotFound)
	}
	return id, nil
}

// podWorker is the pod namespace/name of this node and its worker.
func (a *Agent) podWorker(namespace, pod string) (*corev1.Pod, *podWorker) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for uid, p := range a.pods {
		if p.Namespace == namespace && p.Name == pod {
			return p, a.workers[uid]
		}
	}
	return nil, nil
}

func (a *Agent) streamer() (runtimeapi.Streamer, error) {
	// The configured runtime itself: a session lasts as long as the user
	// keeps it, past any call deadline.
	s, ok := a.cfg.Runtime.(runtimeapi.Streamer)
	if !ok {
		return nil, errors.New("this node's container runtime cannot exec or attach")
	}
	return s, nil
}

func (a *Agent) execHandler(ctx context.Context, namespace, pod, container string, cmd []string, attach vkapi.AttachIO) error {
	return a.runStream(ctx, "exec", namespace, pod, container, cmd, streamIO(ctx, attach))
}

func (a *Agent) attachHandler(ctx context.Context, namespace, pod, container string, attach vkapi.AttachIO) error {
	return a.runStream(ctx, "attach", namespace, pod, container, nil, streamIO(ctx, attach))
}

// streamIO is the runtime's view of the stream server's streams.
func streamIO(ctx context.Context, attach vkapi.AttachIO) runtimeapi.StreamIO {
	sio := runtimeapi.StreamIO{TTY: attach.TTY()}
	if in := attach.Stdin(); in != nil {
		sio.Stdin = in
	}
	if out := attach.Stdout(); out != nil {
		sio.Stdout = out
	}
	if e := attach.Stderr(); e != nil && !sio.TTY {
		sio.Stderr = e
	}
	if sizes := attach.Resize(); sizes != nil {
		ch := make(chan runtimeapi.TerminalSize, 1)
		go func() {
			defer close(ch)
			for {
				select {
				case s, ok := <-sizes:
					if !ok {
						return
					}
					select {
					case ch <- runtimeapi.TerminalSize{Width: s.Width, Height: s.Height}:
					case <-ctx.Done():
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
		sio.Resize = ch
	}
	return sio
}

func (a *Agent) portForwardHandler(ctx context.Context, namespace, pod string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	d, ok := a.cfg.Network.(podnet.PodDialer)
	if !ok {
		return errors.New("this node's network cannot forward ports")
	}
	found, worker := a.podWorker(namespace, pod)
	if found == nil {
		return fmt.Errorf("pod %s/%s on node %s: %w", namespace, pod, a.cfg.NodeName, store.ErrNotFound)
	}
	ns := ""
	if worker != nil {
		ns = worker.netNS()
	}
	if ns == "" {
		return fmt.Errorf("pod %s/%s has no network yet", namespace, pod)
	}
	conn, err := d.DialPod(ctx, ns, port)
	if err != nil {
		return fmt.Errorf("forward to port %d of pod %s/%s: %w", port, namespace, pod, err)
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(conn, stream)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(stream, conn)
		done <- struct{}{}
	}()
	// Both ways: the client's end of input half-closes the pod's side,
	// and the pod's answer still flows back until it closes.
	for range 2 {
		select {
		case <-done:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}
