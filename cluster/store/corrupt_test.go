package store

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	corev1 "k8s.io/api/core/v1"
)

// TestCorruptContent: values that are not what the store writes (a
// corrupted or hostile store) fail only their own key, with an error that
// names it; nothing panics; the rest works, Open too; Delete clears them.
func TestCorruptContent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, pod("web", "a", nil, "n1")) // 1
	mustCreate(t, s, pod("web", "b", nil, "n1")) // 2
	mustCreate(t, s, configMap("web", "c", nil)) // 3
	raw := map[string]string{
		"/registry/pods/web/bad":     "{not json",
		"/registry/pods/web/binary":  "\x00\xff\xfe",
		"/registry/pods/web/typed":   `{"spec":5,"metadata":{"name":7}}`,
		"/registry/pods/web/empty":   "",
		"/registry/pods/web/huge":    `{"metadata":{"name":"huge","namespace":"web"},"spec":{"containers":[{"resources":{"limits":{"cpu":"1e999999999"}}}]}}`,
		"/registry/configmaps/x/y":   "[]",
		string(eventKey(2)) + "junk": "A/registry/pods/web/a\x00{",                        // a malformed event key amid the log
		string(eventKey(1000)):       "not an event",                                      // a stray event past the revision
		"/flotilla/unknown":          "whatever",                                          // a key the store does not know
		"/registry/widgets/a/b":      "{}",                                                // an unknown resource
		"/registry/pods/web":         "{}",                                                // a key with no name part
		"/registry/pods/web/a/extra": `{"metadata":{"name":"a/extra","namespace":"web"}}`, // a name with '/'
	}
	err = s.db.Update(func(btx *badger.Txn) error {
		for k, v := range raw {
			if err := btx.Set([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(Config{Dir: dir, Logger: testkit.Logger(t)}); err != nil {
		t.Fatalf("open a store with corrupt values: %v", err)
	}
	defer s.Close()

	for _, name := range []string{"bad", "binary", "typed", "empty"} {
		_, err := s.Get(ctx, "pods", "web", name)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "/registry/pods/web/"+name) {
			t.Errorf("get %s: %v, want ErrCorrupt naming its key", name, err)
		}
	}
	if _, err := s.Get(ctx, "pods", "web", "a"); err != nil {
		t.Errorf("get a sound object: %v", err)
	}
	if _, _, err := s.List(ctx, "pods", ListOptions{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "/registry/pods/web/") {
		t.Errorf("list pods: %v, want ErrCorrupt naming a key", err)
	}
	if _, _, err := s.List(ctx, "configmaps", ListOptions{Namespace: "web"}); err != nil {
		t.Errorf("list configmaps of another namespace: %v", err)
	}
	if _, err := s.Update(ctx, pod("web", "bad", nil, "")); !errors.Is(err, ErrCorrupt) {
		t.Errorf("update a corrupt object: %v, want ErrCorrupt", err)
	}
	if _, err := s.Delete(ctx, "pods", "web", "bad", DeleteOptions{UID: "x"}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("delete with a precondition: %v, want ErrCorrupt", err)
	}

	// The watch history has a malformed key after revision 2: a replay
	// across it ends (the receiver relists), a live watch works.
	w, err := s.Watch(ctx, "pods", ListOptions{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	closed(t, w)
	live, err := s.Watch(ctx, "pods", ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}

	// Writes go on, and Delete clears every corrupt object.
	mustCreate(t, s, pod("web", "d", nil, ""))
	if ev := next(t, live); ev.Object.GetName() != "d" || ev.Revision != 4 {
		t.Errorf("live event %s at %d, want d at 4", ev.Object.GetName(), ev.Revision)
	}
	for _, name := range []string{"bad", "binary", "typed", "empty", "huge"} {
		got, err := s.Delete(ctx, "pods", "web", name, DeleteOptions{})
		if err != nil {
			t.Fatalf("delete %s: %v", name, err)
		}
		ev := next(t, live)
		if ev.Type != Deleted || ev.Object.GetName() != name || got.GetName() != name || rv(t, got) != ev.Revision {
			t.Errorf("deleted %s: event %s %s at %d, returned rv %s", name, ev.Type, ev.Object.GetName(), ev.Revision, got.GetResourceVersion())
		}
	}
	objs, _, err := s.List(ctx, "pods", ListOptions{Namespace: "web"})
	if err != nil {
		t.Fatalf("list after the deletes: %v", err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.GetName())
	}
	// "a/extra" decodes: its name says what it is, though no key can hold it.
	if got := strings.Join(names, " "); got != "a a/extra b d" {
		t.Errorf("pods after the deletes: %s", got)
	}
	if _, ok := objs[0].(*corev1.Pod); !ok {
		t.Errorf("list returned %T", objs[0])
	}
}

// TestRecoverUnreadableJournal: a sealed journal with an unreadable record
// (a corrupted disk) is finished without it: the store opens, with the
// rest of the commit.
func TestRecoverUnreadableJournal(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	good, err := encodeObject(nil, pod("web", "a", nil, ""))
	if err != nil {
		t.Fatal(err)
	}
	err = s.db.Update(func(btx *badger.Txn) error {
		for k, v := range map[string][]byte{
			string(eventKey(1)):    encodeEvent(Added, "/registry/pods/web/a", good),
			string(eventKey(2)):    []byte("garbage"),
			string(eventKey(3)):    []byte("Xgarbage\x00{}"),
			string(metaPendingKey): encodeInt(4), // revision 4 is missing
		} {
			if err := btx.Set([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(Config{Dir: dir, Logger: testkit.Logger(t)}); err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	if _, err := s.Get(context.Background(), "pods", "web", "a"); err != nil || s.Revision() != 4 {
		t.Errorf("after recovery: revision %d, get: %v", s.Revision(), err)
	}
}
