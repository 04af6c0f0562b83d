package node

import (
	"context"
	"time"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

var _ runtimeapi.StatsReader = (*FakeRuntime)(nil)

// fakeUsage is what SetUsage set for a pod.
type fakeUsage struct {
	millicores int64
	memory     uint64
}

// SetUsage makes every running container of pod namespace/name use
// millicores of CPU (its CPU time grows with the clock from its start)
// and memory bytes; network bytes grow at 1 KiB per second of clock.
func (f *FakeRuntime) SetUsage(namespace, name string, millicores int64, memory uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.usage == nil {
		f.usage = map[[2]string]fakeUsage{}
	}
	f.usage[[2]string{namespace, name}] = fakeUsage{millicores, memory}
}

// ContainerStats implements StatsReader: every running container, with
// the usage SetUsage gave its pod (none: zero).
func (f *FakeRuntime) ContainerStats(ctx context.Context) ([]runtimeapi.ContainerStats, error) {
	if err := f.available(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("ContainerStats")
	now := f.Clock.Now()
	var out []runtimeapi.ContainerStats
	for _, p := range f.pods {
		u := f.usage[[2]string{p.sum.Namespace, p.sum.Name}]
		for _, c := range p.containers {
			if c.status.State != runtimeapi.ContainerRunning {
				continue
			}
			up := max(now.Sub(c.status.StartedAt), 0)
			out = append(out, runtimeapi.ContainerStats{
				ContainerID: c.status.ID, PodUID: p.sum.UID, Namespace: p.sum.Namespace, Pod: p.sum.Name, Container: c.spec.Name,
				CPUNanos:              uint64(u.millicores) * uint64(up/time.Millisecond) * 1000,
				MemoryWorkingSetBytes: u.memory,
				RxBytes:               uint64(up/time.Second) * 1024, TxBytes: uint64(up/time.Second) * 512,
			})
		}
	}
	return out, nil
}
