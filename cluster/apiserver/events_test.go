package apiserver_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/events"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// TestEventsWithKubectl: Events recorded about a pod are what the real
// kubectl shows in `describe pod` (core/v1 with involvedObject field
// selectors), `get events` and `events --for`, with the repeats counted,
// and events.k8s.io/v1 serves them too, with its own field labels.
func TestEventsWithKubectl(t *testing.T) {
	st := store.MemoryFor(t)
	e := newEnvOn(t, st, nil)
	k := newKubectl(t, e)
	p := mustCreate(t, st, pod("default", "web", "n1", nil)).(*corev1.Pod)
	other := mustCreate(t, st, pod("default", "other", "n1", nil)).(*corev1.Pod)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := events.New(ctx, events.Config{Store: st, Host: "n1"})
	defer b.Shutdown()
	rec := b.Recorder("kubelet")
	for range 3 {
		rec.Eventf(p, corev1.EventTypeWarning, "BackOff", "Back-off pulling image %q", "nope:1")
	}
	rec.Eventf(p, corev1.EventTypeWarning, "Failed", "Error: ErrImagePull")
	rec.Eventf(other, corev1.EventTypeNormal, "Started", "Started container other")
	testkit.EventuallyTrue(t, "the events stored", time.Minute, func() bool {
		objs, _, _ := st.List(context.Background(), "events", store.ListOptions{})
		n := 0
		for _, o := range objs {
			if ev := o.(*corev1.Event); ev.Reason != "BackOff" || ev.Count == 3 {
				n++
			}
		}
		return n == 3
	})
	// kubectl get events -w: the list, then each new Event and each
	// repeat (the aggregated Event's count going up) as it is written.
	var watched testkit.Buffer
	w := exec.Command(k.bin, "--kubeconfig", k.kc, "get", "events", "-w")
	w.Env = append(os.Environ(), "HOME="+k.home, "KUBECONFIG=")
	w.Stdout, w.Stderr = &watched, &watched
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Process.Kill(); _ = w.Wait() }()
	testkit.EventuallyTrue(t, "kubectl get events -w lists the events", time.Minute, func() bool {
		return strings.Contains(watched.String(), "Started container other")
	})
	rec.Eventf(other, corev1.EventTypeNormal, "Killing", "Stopping container other")
	rec.Eventf(p, corev1.EventTypeWarning, "BackOff", "Back-off pulling image %q", "nope:1")
	testkit.EventuallyWhy(t, "kubectl get events -w shows the new Event and the repeat", time.Minute, func() string {
		out := watched.String()
		if !strings.Contains(out, "Stopping container other") || strings.Count(out, `Back-off pulling image "nope:1"`) < 2 {
			return out
		}
		return ""
	})

	out := k.run(false, "describe", "pod", "web")
	expect(t, out, "Events:", "BackOff", "(x4 over", `Back-off pulling image "nope:1"`, "Failed", "Error: ErrImagePull", "kubelet")
	if strings.Contains(out, "Started container other") {
		t.Errorf("describe pod web shows another pod's event:\n%s", out)
	}
	expect(t, k.run(false, "get", "events"), "BackOff", "pod/web", "Started", "pod/other")
	out = k.run(false, "events", "--for", "pod/web")
	expect(t, out, "BackOff", "Failed")
	if strings.Contains(out, "Started container other") {
		t.Errorf("kubectl events --for pod/web shows another pod's event:\n%s", out)
	}
	expect(t, k.run(false, "get", "events.v1.events.k8s.io", "-o", "yaml"), "apiVersion: events.k8s.io/v1", "note: Started container other", "regarding:")
	resp, body := e.do(t, http.MethodGet, "/apis/events.k8s.io/v1/namespaces/default/events?fieldSelector=regarding.name%3Dother", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"note":"Started container other"`) || strings.Contains(body, "BackOff") {
		t.Errorf("events.k8s.io list by regarding.name: %d %s", resp.StatusCode, body)
	}
	if resp, _ := e.do(t, http.MethodGet, "/apis/events.k8s.io/v1/events?fieldSelector=spec.bogus%3Dx", ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown field label: %d, want 400", resp.StatusCode)
	}
}
