package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// watchProgress prints what `flotilla up` is doing as it changes: each sync
// result, and each pod's status, until ctx ends. It only reads the store,
// and only when its revision moved: a node at rest costs nothing here.
func watchProgress(ctx context.Context, st store.Interface, out io.Writer) {
	p := &progress{out: out, pods: map[string]string{}}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := int64(-1)
	for {
		if rev := st.Revision(); rev != last { // read first: a change during the step shows next time
			p.step(ctx, st)
			last = rev
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

type progress struct {
	out        io.Writer
	sync       string            // the last sync line printed
	pods       map[string]string // namespace/name → the last line printed
	allRunning bool
}

func (p *progress) step(ctx context.Context, st store.Interface) {
	if obj, err := st.Get(ctx, "syncstatuses", "", schema.SyncStatusName); err == nil {
		s := obj.(*schema.SyncStatus).Status
		line := fmt.Sprintf("sync: %s commit %s", s.Result, shortCommit(s.LastAttemptedCommit))
		if s.Result == schema.SyncApplied || s.Result == schema.SyncUnchanged {
			line = fmt.Sprintf("sync: commit %s %q is live (%d objects)", shortCommit(s.LastAppliedCommit), s.LastAppliedMessage, s.Objects)
		} else if s.Message != "" {
			line += ": " + s.Message
		}
		if line != p.sync {
			fmt.Fprintf(p.out, "flotilla: %s\n", line)
			for _, pr := range s.Problems {
				fmt.Fprintf(p.out, "  %s\n", pr.String())
			}
			p.sync = line
		}
	}
	objs, _, err := st.List(ctx, "pods", store.ListOptions{})
	if err != nil {
		return
	}
	now := map[string]bool{}
	running := 0
	for _, o := range objs {
		pod := o.(*corev1.Pod)
		key := pod.Namespace + "/" + pod.Name
		now[key] = true
		ready := 0
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.Ready {
				ready++
			}
		}
		if pod.Status.Phase == corev1.PodRunning && ready == len(pod.Spec.Containers) {
			running++
		}
		line := fmt.Sprintf("%-8s %d/%d  %s", podStatus(pod), ready, len(pod.Spec.Containers), orDefault(pod.Status.PodIP, "-"))
		if p.pods[key] != line {
			fmt.Fprintf(p.out, "flotilla: pod %s  %s\n", key, line)
			p.pods[key] = line
		}
	}
	var gone []string
	for key := range p.pods {
		if !now[key] {
			gone = append(gone, key)
		}
	}
	sort.Strings(gone)
	for _, key := range gone {
		fmt.Fprintf(p.out, "flotilla: pod %s  deleted\n", key)
		delete(p.pods, key)
	}
	all := len(objs) > 0 && running == len(objs)
	if all && !p.allRunning {
		fmt.Fprintf(p.out, "flotilla: %d/%d pods Running and ready. Try: flotilla get pods -o wide\n", running, len(objs))
	}
	p.allRunning = all
}
