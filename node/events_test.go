package node

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/events"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// TestImagePullFailureEvents: a pod whose image cannot be pulled gets the
// kubelet's Events on its container — Pulling, Failed (the pull error,
// then "Error: ErrImagePull", later "Error: ImagePullBackOff") and BackOff
// — and the repeats aggregate into one Event each with a count.
func TestImagePullFailureEvents(t *testing.T) {
	s := newSyncHarness(t, newPod("pull", corev1.Container{Name: "main", Image: "registry.example/absent:1"}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := events.New(ctx, events.Config{Store: s.st, Host: "n1", Logger: testkit.Logger(t)})
	defer b.Shutdown()
	s.a.events = b.Recorder("kubelet")
	s.rt.SetPullError(errors.New("no registry"))
	s.sync(t)
	for range 3 {
		s.clk.Step(5 * time.Minute)
		s.sync(t)
	}
	testkit.EventuallyWhy(t, "the pull failure's events", time.Minute, func() string {
		objs, _, err := s.st.List(context.Background(), "events", store.ListOptions{})
		if err != nil {
			return err.Error()
		}
		var lines []string
		counts := map[string]int32{}
		for _, o := range objs {
			ev := o.(*corev1.Event)
			if ev.InvolvedObject.Name != "pull" || ev.InvolvedObject.FieldPath != "spec.containers{main}" || ev.Source.Component != "kubelet" {
				return fmt.Sprintf("wrong reference %+v", ev.InvolvedObject)
			}
			l := ev.Type + " " + ev.Reason + ": " + ev.Message
			lines = append(lines, l)
			counts[l] = ev.Count
		}
		sort.Strings(lines)
		for _, want := range []string{
			`Normal Pulling: Pulling image "registry.example/absent:1"`,
			`Warning Failed: Failed to pull image "registry.example/absent:1"`,
			`Warning Failed: Error: ErrImagePull`,
			`Warning Failed: Error: ImagePullBackOff`,
			`Normal BackOff: Back-off pulling image "registry.example/absent:1"`,
		} {
			found := false
			for _, l := range lines {
				found = found || strings.HasPrefix(l, want)
			}
			if !found {
				return fmt.Sprintf("no %q in %q", want, lines)
			}
		}
		if c := counts[`Normal Pulling: Pulling image "registry.example/absent:1"`]; c != 4 {
			return fmt.Sprintf("Pulling count %d, want 4 (one Event for the 4 pulls): %q", c, lines)
		}
		return ""
	})
}
