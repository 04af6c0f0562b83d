package main

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/schema"
)

func TestDescribeEvents(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ev := func(reason, msg string, count int32, first, last time.Duration) *corev1.Event {
		return &corev1.Event{Type: corev1.EventTypeWarning, Reason: reason, Message: msg, Count: count,
			Source: corev1.EventSource{Component: "kubelet"}, FirstTimestamp: metav1.NewTime(now.Add(-first)), LastTimestamp: metav1.NewTime(now.Add(-last))}
	}
	var b strings.Builder
	describeEvents(&b, []schema.Object{ev("BackOff", "Back-off pulling image", 5, 2*time.Minute, 10*time.Second), ev("Failed", "Error: ErrImagePull", 1, time.Minute, time.Minute)}, now)
	out := b.String()
	for _, want := range []string{"Events:", "Type", "Reason", "BackOff", "10s (x5 over 2m)", "kubelet", "Error: ErrImagePull"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "Failed") > strings.Index(out, "BackOff") {
		t.Errorf("not oldest first:\n%s", out)
	}
	b.Reset()
	describeEvents(&b, nil, now)
	if !strings.Contains(b.String(), "<none>") {
		t.Errorf("no events: %q", b.String())
	}
}
