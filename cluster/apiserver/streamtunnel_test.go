package apiserver_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	vkapi "github.com/virtual-kubelet/virtual-kubelet/node/api"
	utilproxy "k8s.io/apimachinery/pkg/util/proxy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/store"
)

// greetingNode serves the kubelet's port-forward (SPDY) as an agent does:
// each forwarded connection is greeted with where it arrived, then echoed.
// proxied: the stream goes through apimachinery's upgrade-aware proxy to
// a separate server (a multi-node server); else the handler is called in
// process (flotilla up).
type greetingNode struct {
	handler http.Handler
	backend *url.URL // nil: in process
}

func newGreetingNode(t *testing.T, proxied bool) *greetingNode {
	r := mux.NewRouter()
	r.HandleFunc("/portForward/{namespace}/{pod}", vkapi.HandlePortForward(
		func(_ context.Context, namespace, pod string, port int32, stream io.ReadWriteCloser) error {
			defer stream.Close()
			fmt.Fprintf(stream, "%s/%s:%d says ", namespace, pod, port)
			_, err := io.Copy(stream, stream)
			return err
		})).Methods(http.MethodGet, http.MethodPost)
	n := &greetingNode{handler: r}
	if proxied {
		srv := httptest.NewServer(r)
		t.Cleanup(srv.Close)
		n.backend, _ = url.Parse(srv.URL)
	}
	return n
}

func (n *greetingNode) ServeStream(w http.ResponseWriter, r *http.Request, _ string) {
	if n.backend == nil {
		n.handler.ServeHTTP(w, r)
		return
	}
	loc := *n.backend
	loc.Path, loc.RawQuery = r.URL.Path, r.URL.RawQuery
	utilproxy.NewUpgradeAwareHandler(&loc, http.DefaultTransport, false, true, nil).ServeHTTP(w, r)
}

// TestPortForwardWebSocketTunnel: kubectl 1.31+'s port-forward, a SPDY
// session inside a WebSocket (client-go's tunneling dialer, with no
// fallback to SPDY here), reaches the pod's port on the node, both when
// the server proxies to an agent and when it serves the agent in process;
// a pod without a node is refused before any upgrade.
func TestPortForwardWebSocketTunnel(t *testing.T) {
	for _, proxied := range []bool{true, false} {
		t.Run(map[bool]string{true: "proxied", false: "in-process"}[proxied], func(t *testing.T) {
			st := store.MemoryFor(t)
			e := newEnvWith(t, st, func(cfg *apiserver.Config) { cfg.Streams = newGreetingNode(t, proxied) })
			mustCreate(t, st, pod("default", "web", "n1", nil))
			mustCreate(t, st, pod("default", "unbound", "", nil))
			cfg := &rest.Config{Host: e.url, BearerToken: testToken, TLSClientConfig: rest.TLSClientConfig{CAData: e.caPEM}}

			forward := func(name string) (*portforward.PortForwarder, chan struct{}, error) {
				u, _ := url.Parse(e.url + "/api/v1/namespaces/default/pods/" + name + "/portforward")
				dialer, err := portforward.NewSPDYOverWebsocketDialer(u, cfg)
				if err != nil {
					t.Fatal(err)
				}
				stop, ready := make(chan struct{}), make(chan struct{})
				fw, err := portforward.New(dialer, []string{"0:8080"}, stop, ready, io.Discard, io.Discard)
				if err != nil {
					t.Fatal(err)
				}
				errc := make(chan error, 1)
				go func() { errc <- fw.ForwardPorts() }()
				select {
				case <-ready:
					return fw, stop, nil
				case err := <-errc:
					return nil, nil, err
				case <-time.After(time.Minute):
					t.Fatal("port-forward not ready after a minute")
				}
				return nil, nil, nil
			}

			fw, stop, err := forward("web")
			if err != nil {
				t.Fatalf("port-forward over the WebSocket tunnel: %v", err)
			}
			defer close(stop)
			ports, err := fw.GetPorts()
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 { // two connections through one tunnel
				conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].Local))
				if err != nil {
					t.Fatal(err)
				}
				_ = conn.SetDeadline(time.Now().Add(time.Minute))
				msg := fmt.Sprintf("hello %d\n", i)
				if _, err := conn.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				line, err := bufio.NewReader(conn).ReadString('\n')
				if want := "default/web:8080 says " + msg; err != nil || line != want {
					t.Errorf("connection %d: %q, %v; want %q", i, line, err, want)
				}
				conn.Close()
			}

			if _, _, err := forward("unbound"); err == nil || !strings.Contains(err.Error(), "400") && !strings.Contains(err.Error(), "does not have a host assigned") {
				t.Errorf("port-forward to a pod without a node: %v, want the upgrade refused", err)
			}
		})
	}
}
