package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

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

// TestContainerLifecycleEvents: the kubelet's Events of a container's
// life — Created and Started, Unhealthy for every failed readiness and
// liveness probe (the repeats aggregated into one Event with a count),
// Killing when liveness restarts it.
func TestContainerLifecycleEvents(t *testing.T) {
	healthy, port := healthServer(t)
	get := corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(int32(port))}}
	s := newSyncHarness(t, newPod("probed", corev1.Container{Name: "main", Image: testImage,
		ReadinessProbe: &corev1.Probe{ProbeHandler: get, PeriodSeconds: 2},
		LivenessProbe:  &corev1.Probe{ProbeHandler: get, PeriodSeconds: 2, FailureThreshold: 3}}))
	s.net.IP = net.IPv4(127, 0, 0, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := events.New(ctx, events.Config{Store: s.st, Host: "n1", Logger: testkit.Logger(t)})
	defer b.Shutdown()
	s.a.events = b.Recorder("kubelet")
	s.sync(t)
	healthy.Store(false)
	for range 3 {
		s.clk.Step(2 * time.Second)
		s.sync(t)
	}
	if s.rt.CountCalls("RestartContainer") != 1 {
		t.Fatalf("liveness failures did not restart: %v", s.rt.Calls())
	}
	testkit.EventuallyWhy(t, "the container's events", time.Minute, func() string {
		objs, _, err := s.st.List(context.Background(), "events", store.ListOptions{})
		if err != nil {
			return err.Error()
		}
		counts := map[string]int32{}
		var lines []string
		for _, o := range objs {
			ev := o.(*corev1.Event)
			if ev.InvolvedObject.FieldPath != "spec.containers{main}" {
				return fmt.Sprintf("wrong reference %+v", ev.InvolvedObject)
			}
			l := ev.Type + " " + ev.Reason + ": " + ev.Message
			lines = append(lines, l)
			counts[l] = ev.Count
		}
		for l, n := range map[string]int32{
			"Normal Created: Created container main":                                            1,
			"Normal Started: Started container main":                                            1,
			"Warning Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 500": 3,
			"Warning Unhealthy: Liveness probe failed: HTTP probe failed with statuscode: 500":  3,
			"Normal Killing: Container main failed liveness probe, will be restarted":           1,
		} {
			if counts[l] != n {
				return fmt.Sprintf("%q: count %d, want %d; have %q", l, counts[l], n, lines)
			}
		}
		return ""
	})
}
