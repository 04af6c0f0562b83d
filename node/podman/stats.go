package podman

import (
	"context"
	"fmt"

	"github.com/containers/podman/v4/pkg/bindings/containers"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

var _ runtimeapi.StatsReader = (*Runtime)(nil)

// ContainerStats implements runtimeapi.StatsReader with two calls whatever the
// number of pods: one list of the running containers with Flotilla's
// labels, and one non-streaming stats report of every running container
// (libpod's /containers/stats with stream=false and no names: all of
// them, so a container that stops in between is no error). Memory is Podman's usage (the cgroup's, page cache included on
// cgroup v1); network bytes are the container's network namespace's.
func (r *Runtime) ContainerStats(ctx context.Context) ([]runtimeapi.ContainerStats, error) {
	c, cancel := r.with(ctx)
	defer cancel()
	list, err := containers.List(c, &containers.ListOptions{Filters: map[string][]string{"label": {runtimeapi.LabelPodUID}, "status": {"running"}}})
	if err != nil {
		return nil, fmt.Errorf("list running containers: %w", err)
	}
	if len(list) == 0 {
		return nil, nil
	}
	byID := make(map[string]runtimeapi.ContainerStats, len(list))
	for _, ct := range list {
		l := ct.Labels
		if l[runtimeapi.LabelContainer] == "" { // the pod's infra container, if any
			continue
		}
		byID[ct.ID] = runtimeapi.ContainerStats{ContainerID: ct.ID, PodUID: l[runtimeapi.LabelPodUID], Namespace: l[runtimeapi.LabelPodNamespace],
			Pod: l[runtimeapi.LabelPodName], Container: l[runtimeapi.LabelContainer]}
	}
	if len(byID) == 0 {
		return nil, nil
	}
	reports, err := containers.Stats(c, nil, new(containers.StatsOptions).WithStream(false))
	if err != nil {
		return nil, fmt.Errorf("read container stats: %w", err)
	}
	var out []runtimeapi.ContainerStats
	var first error
	for rep := range reports {
		if rep.Error != nil && first == nil {
			first = rep.Error
		}
		for _, st := range rep.Stats {
			cs, ok := byID[st.ContainerID]
			if !ok {
				continue
			}
			cs.CPUNanos, cs.MemoryWorkingSetBytes, cs.RxBytes, cs.TxBytes = st.CPUNano, st.MemUsage, st.NetInput, st.NetOutput
			out = append(out, cs)
		}
	}
	if len(out) == 0 && first != nil {
		return nil, fmt.Errorf("read container stats: %w", first)
	}
	return out, nil
}
