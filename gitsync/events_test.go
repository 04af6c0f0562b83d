package gitsync

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
)

// TestSyncEvents: an applied commit is a Normal Synced Event and a refused
// one a Warning SyncRefused Event with the first problem, both about the
// SyncStatus object.
func TestSyncEvents(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	rec.IncludeObject = true
	h := newHarness(t, func(c *Config) { c.Events = rec })
	good := h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	got := <-rec.Events
	for _, want := range []string{"Normal Synced Applied commit " + good[:7], "1 objects", "involvedObject{kind=SyncStatus"} {
		if !strings.Contains(got, want) {
			t.Errorf("event %q lacks %q", got, want)
		}
	}
	bad := h.remote.commit("bad", map[string]string{"a.yaml": "kind: [unclosed"})
	if _, err := h.sync(); !errors.Is(err, ErrRefused) {
		t.Fatalf("sync of a broken commit: %v", err)
	}
	got = <-rec.Events
	if !strings.HasPrefix(got, corev1.EventTypeWarning+" SyncRefused Refused commit "+bad[:7]) {
		t.Errorf("event %q, want a SyncRefused Warning", got)
	}
	if _, err := h.sync(); !errors.Is(err, ErrRefused) {
		t.Fatal(err)
	}
	select {
	case ev := <-rec.Events:
		t.Errorf("the same refused commit recorded again: %q", ev)
	default:
	}
}
