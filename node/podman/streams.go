package podman

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"github.com/containers/podman/v4/pkg/api/handlers"
	"github.com/containers/podman/v4/pkg/bindings"
	"github.com/containers/podman/v4/pkg/bindings/containers"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

var _ runtimeapi.Streamer = (*Runtime)(nil)

// ownConn is a bindings connection of its own for one streaming call: the
// bindings' ExecStartAndAttach and Attach replace the connection's HTTP
// transport to catch the socket they dial, which on the shared connection
// races with every other call. The returned func closes its connections.
func (r *Runtime) ownConn(ctx context.Context) (context.Context, func(), error) {
	c, err := bindings.NewConnection(ctx, r.uri)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to podman at %s: %w", r.uri, err)
	}
	closeIdle := func() {}
	if conn, err := bindings.GetClient(c); err == nil {
		orig := conn.Client.Transport
		closeIdle = func() {
			conn.Client.CloseIdleConnections()
			if t, ok := orig.(interface{ CloseIdleConnections() }); ok {
				t.CloseIdleConnections()
			}
		}
	}
	return c, closeIdle, nil
}

// ExecStream implements runtimeapi.Streamer with a Podman exec session: stdin,
// stdout and stderr as asked, a terminal with its size changes, and the
// command's exit code (runtimeapi.ExitCodeError when not 0).
func (r *Runtime) ExecStream(ctx context.Context, containerID string, cmd []string, sio runtimeapi.StreamIO) error {
	c, done, err := r.ownConn(ctx)
	if err != nil {
		return err
	}
	defer done()
	cfg := new(handlers.ExecCreateConfig)
	cfg.Cmd = cmd
	cfg.Tty = sio.TTY
	cfg.AttachStdin = sio.Stdin != nil
	cfg.AttachStdout = sio.Stdout != nil
	cfg.AttachStderr = sio.Stderr != nil
	sid, err := containers.ExecCreate(c, containerID, cfg)
	if err != nil {
		return fmt.Errorf("exec in container %s: %w", containerID, notFound(err))
	}
	defer func() { _ = containers.ExecRemove(c, sid, nil) }()
	opts := new(containers.ExecStartAndAttachOptions).
		WithAttachInput(sio.Stdin != nil).WithAttachOutput(sio.Stdout != nil).WithAttachError(sio.Stderr != nil)
	if sio.Stdin != nil {
		opts.WithInputStream(*bufio.NewReader(sio.Stdin))
	}
	if sio.Stdout != nil {
		opts.WithOutputStream(sio.Stdout)
	}
	if sio.Stderr != nil {
		opts.WithErrorStream(sio.Stderr)
	}
	if sio.TTY && sio.Resize != nil {
		go func() {
			for size := range sio.Resize {
				// Before the session starts a resize fails; the next one
				// (kubectl sends one at once and on every change) lands.
				_ = containers.ResizeExecTTY(c, sid, new(containers.ResizeExecTTYOptions).
					WithWidth(int(size.Width)).WithHeight(int(size.Height)))
			}
		}()
	}
	if err := containers.ExecStartAndAttach(c, sid, opts); err != nil {
		return fmt.Errorf("exec in container %s: %w", containerID, notFound(err))
	}
	in, err := containers.ExecInspect(c, sid, nil)
	if err != nil {
		return fmt.Errorf("inspect exec in container %s: %w", containerID, err)
	}
	if in.ExitCode != 0 {
		return runtimeapi.ExitCodeError{Code: in.ExitCode}
	}
	return nil
}

// AttachStream implements runtimeapi.Streamer with Podman's attach.
func (r *Runtime) AttachStream(ctx context.Context, containerID string, sio runtimeapi.StreamIO) error {
	c, done, err := r.ownConn(ctx)
	if err != nil {
		return err
	}
	defer done()
	var stdin io.Reader
	if sio.Stdin != nil {
		stdin = sio.Stdin
	}
	stdout, stderr := sio.Stdout, sio.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	if sio.TTY && sio.Resize != nil {
		go func() {
			for size := range sio.Resize {
				_ = containers.ResizeContainerTTY(c, containerID, new(containers.ResizeTTYOptions).
					WithWidth(int(size.Width)).WithHeight(int(size.Height)))
			}
		}()
	}
	if err := containers.Attach(c, containerID, stdin, stdout, stderr, nil, new(containers.AttachOptions).WithStream(true)); err != nil {
		return fmt.Errorf("attach to container %s: %w", containerID, notFound(err))
	}
	return nil
}
