package node

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	"k8s.io/apimachinery/pkg/util/remotecommand"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// streamIdleTimeout ends a stream no side has used for this long, as the
// kubelet's default.
const streamIdleTimeout = 4 * time.Hour

// serveWebSocketV5 serves exec and attach on the WebSocket channel protocol
// v5 (v5.channel.k8s.io), the one kubectl 1.30+ tries first: Kubernetes'
// wsstream does the framing and the close signal (stdin's end); here the
// channels are wired to the runtime, and the result written as a Status
// on the error channel, as the kubelet's v4 protocol does.
// path is /exec/{namespace}/{pod}/{container} or /attach/….
func (a *Agent) serveWebSocketV5(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) != 4 || (parts[0] != "exec" && parts[0] != "attach") {
		http.Error(w, "WebSocket streams: /exec/{namespace}/{pod}/{container} or /attach/…", http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	tty := q.Get("tty") == "1"
	in, out, errOut := q.Get("input") == "1", q.Get("output") == "1", q.Get("error") == "1" && !tty
	ch := func(on bool, t wsstream.ChannelType) wsstream.ChannelType {
		if on {
			return t
		}
		return wsstream.IgnoreChannel
	}
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
		remotecommand.StreamProtocolV5Name: {Binary: true, Channels: []wsstream.ChannelType{
			ch(in, wsstream.ReadChannel), ch(out, wsstream.WriteChannel), ch(errOut, wsstream.WriteChannel),
			wsstream.WriteChannel, ch(tty, wsstream.ReadChannel),
		}},
	})
	conn.SetIdleTimeout(streamIdleTimeout)
	_, streams, err := conn.Open(w, r)
	if err != nil {
		return // Open has answered
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	sio := runtimeapi.StreamIO{TTY: tty}
	if in {
		sio.Stdin = streams[remotecommand.StreamStdIn]
	}
	if out {
		sio.Stdout = streams[remotecommand.StreamStdOut]
	}
	if errOut {
		sio.Stderr = streams[remotecommand.StreamStdErr]
	}
	if tty {
		sizes := make(chan runtimeapi.TerminalSize, 1)
		go func() {
			defer close(sizes)
			dec := json.NewDecoder(streams[remotecommand.StreamResize])
			for {
				var s runtimeapi.TerminalSize
				if dec.Decode(&s) != nil {
					return
				}
				select {
				case sizes <- s:
				case <-ctx.Done():
					return
				}
			}
		}()
		sio.Resize = sizes
	}
	err = a.runStream(ctx, parts[0], parts[1], parts[2], parts[3], q["command"], sio)
	writeStreamStatus(streams[remotecommand.StreamErr], err)
}

// runStream runs an exec or attach session on the runtime.
func (a *Agent) runStream(ctx context.Context, kind, namespace, pod, container string, cmd []string, sio runtimeapi.StreamIO) error {
	s, err := a.streamer()
	if err != nil {
		return err
	}
	id, err := a.streamTarget(namespace, pod, container)
	if err != nil {
		return err
	}
	if kind == "attach" {
		return s.AttachStream(ctx, id, sio)
	}
	return s.ExecStream(ctx, id, cmd, sio)
}

// writeStreamStatus writes the session's result as the kubelet does: a
// Success Status, a NonZeroExitCode one with the code as its cause, or an
// InternalError.
func writeStreamStatus(w io.Writer, err error) {
	st := metav1.Status{Status: metav1.StatusSuccess}
	var code runtimeapi.ExitCodeError
	switch {
	case err == nil:
	case errors.As(err, &code):
		st = metav1.Status{Status: metav1.StatusFailure, Reason: remotecommand.NonZeroExitCodeReason,
			Message: err.Error(),
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: remotecommand.ExitCodeCauseType, Message: strconv.Itoa(code.Code)}}}}
	default:
		st = metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonInternalError, Code: http.StatusInternalServerError,
			Message: "error executing command in container: " + err.Error()}
	}
	b, _ := json.Marshal(st)
	_, _ = w.Write(b)
}
