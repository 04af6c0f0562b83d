package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// deadlineRuntime is the Runtime the agent calls: every call of the
// configured runtime bounded by a deadline, so that a hung runtime fails a
// pod worker's step (which then backs off or retries) instead of hanging it.
// A call cut short by its deadline returns an error that names the
// operation and wraps ErrTimeout.
type deadlineRuntime struct {
	rt   runtimeapi.Runtime
	call time.Duration // ordinary calls
	pull time.Duration // PullImage
	// obs times every call by its operation type; nil: not timed.
	obs *runtimeMetrics
}

var _ runtimeapi.Runtime = deadlineRuntime{}

// do runs fn with a deadline of d from now; kind is the operation's type
// for the metrics ("run_pod"), op what it did for errors.
func (r deadlineRuntime) do(ctx context.Context, d time.Duration, kind, op string, fn func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	err := fn(cctx)
	r.obs.observe(kind, time.Since(start), err)
	if err != nil && ctx.Err() == nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s: no answer within %s: %w (%w)", op, d, runtimeapi.ErrTimeout, err)
	}
	return err
}

func (r deadlineRuntime) RunPod(ctx context.Context, spec runtimeapi.PodSandbox) (id string, err error) {
	err = r.do(ctx, r.call, "run_pod", "run pod "+spec.Namespace+"/"+spec.Name, func(ctx context.Context) error {
		id, err = r.rt.RunPod(ctx, spec)
		return err
	})
	return id, err
}

func (r deadlineRuntime) CreateContainer(ctx context.Context, podID string, sb runtimeapi.PodSandbox, c runtimeapi.ContainerSpec) (id string, err error) {
	err = r.do(ctx, r.call, "create_container", "create container "+c.Name+" of pod "+sb.Namespace+"/"+sb.Name, func(ctx context.Context) error {
		id, err = r.rt.CreateContainer(ctx, podID, sb, c)
		return err
	})
	return id, err
}

func (r deadlineRuntime) ListPods(ctx context.Context) (pods []runtimeapi.PodSummary, err error) {
	err = r.do(ctx, r.call, "list_pods", "list runtime pods", func(ctx context.Context) error {
		pods, err = r.rt.ListPods(ctx)
		return err
	})
	return pods, err
}

func (r deadlineRuntime) PodStatus(ctx context.Context, podID string) (st runtimeapi.PodStatus, err error) {
	err = r.do(ctx, r.call, "pod_status", "read the status of runtime pod "+podID, func(ctx context.Context) error {
		st, err = r.rt.PodStatus(ctx, podID)
		return err
	})
	return st, err
}

func (r deadlineRuntime) StartContainer(ctx context.Context, containerID string) error {
	return r.do(ctx, r.call, "start_container", "start container "+containerID, func(ctx context.Context) error {
		return r.rt.StartContainer(ctx, containerID)
	})
}

func (r deadlineRuntime) RestartContainer(ctx context.Context, containerID string, grace time.Duration) error {
	return r.do(ctx, grace+r.call, "restart_container", "restart container "+containerID, func(ctx context.Context) error {
		return r.rt.RestartContainer(ctx, containerID, grace)
	})
}

func (r deadlineRuntime) StopPod(ctx context.Context, podID string, grace time.Duration) error {
	return r.do(ctx, grace+r.call, "stop_pod", "stop runtime pod "+podID, func(ctx context.Context) error {
		return r.rt.StopPod(ctx, podID, grace)
	})
}

func (r deadlineRuntime) RemovePod(ctx context.Context, podID string) error {
	return r.do(ctx, r.call, "remove_pod", "remove runtime pod "+podID, func(ctx context.Context) error {
		return r.rt.RemovePod(ctx, podID)
	})
}

// ContainerLogs bounds only a read of the logs as they are; a follow lasts
// as long as its caller (the client of `flotilla logs -f`) wants.
func (r deadlineRuntime) ContainerLogs(ctx context.Context, containerID string, req runtimeapi.LogRequest, w io.Writer) error {
	if req.Follow {
		return r.rt.ContainerLogs(ctx, containerID, req, w)
	}
	return r.do(ctx, r.call, "container_logs", "read the logs of container "+containerID, func(ctx context.Context) error {
		return r.rt.ContainerLogs(ctx, containerID, req, w)
	})
}

func (r deadlineRuntime) ImageExists(ctx context.Context, image string) (ok bool, err error) {
	err = r.do(ctx, r.call, "image_exists", "look for image "+image, func(ctx context.Context) error {
		ok, err = r.rt.ImageExists(ctx, image)
		return err
	})
	return ok, err
}

func (r deadlineRuntime) PullImage(ctx context.Context, image string) error {
	return r.do(ctx, r.pull, "pull_image", "pull image "+image, func(ctx context.Context) error {
		return r.rt.PullImage(ctx, image)
	})
}

// ImageUser is the runtime's ImageUserReader with a deadline;
// errImageUserUnsupported when the runtime has none.
func (r deadlineRuntime) ImageUser(ctx context.Context, image string) (user string, err error) {
	ur, ok := r.rt.(runtimeapi.ImageUserReader)
	if !ok {
		return "", errImageUserUnsupported
	}
	err = r.do(ctx, r.call, "image_user", "read the user of image "+image, func(ctx context.Context) error {
		user, err = ur.ImageUser(ctx, image)
		return err
	})
	return user, err
}
