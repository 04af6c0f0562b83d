package gitsync

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// The tests of bounded input with the real parts: a Git repository,
// the CUE validator, a Badger store on disk.

// diskStore opens a Badger store on disk, with cfg's limits.
func diskStore(t testing.TB, cfg store.Config) *store.Badger {
	t.Helper()
	cfg.Dir = filepath.Join(t.TempDir(), "db")
	cfg.Logger = testLogger(t)
	st, err := store.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// countingStore counts the transactions of a store.
type countingStore struct {
	*store.Badger
	txns int
}

func (s *countingStore) Txn(ctx context.Context, fn func(tx store.Tx) error) (int64, error) {
	s.txns++
	return s.Badger.Txn(ctx, fn)
}

// TestTenThousandConfigMapsApplyWhole: issue 9's commit of 10,000
// ConfigMaps with 200-byte values applies whole, in one sync and one
// transaction: every object is in the store, and a watcher gets all of
// them — every event, or, dropped for lagging 10,000 events behind, a
// relist that has them all — never a part.
func TestTenThousandConfigMapsApplyWhole(t *testing.T) {
	const n = 10000 // about 4 s; 18 s under -race
	v, err := schema.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	dir := bigRepo(t, n)
	st := &countingStore{Badger: diskStore(t, store.Config{})}
	s, err := New(Config{URL: dir, WorkDir: filepath.Join(t.TempDir(), "clone"), Store: st, Loader: v, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	events, err := st.Watch(ctx, "configmaps", store.ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}

	body, err := s.SyncNow(t.Context())
	if err != nil || body.Result != schema.SyncApplied || body.Objects != n {
		t.Fatalf("sync = %s, %d objects, %v", body.Result, body.Objects, err)
	}
	if st.txns != 1 {
		t.Errorf("the commit took %d transactions, want 1", st.txns)
	}
	objs, _, err := st.List(t.Context(), "configmaps", store.ListOptions{})
	if err != nil || len(objs) != n {
		t.Fatalf("%d ConfigMaps in the store (%v), want %d", len(objs), err, n)
	}
	for i, o := range objs {
		cm := o.(*corev1.ConfigMap)
		if want := fmt.Sprintf("cm-%05d", i); cm.Name != want || len(cm.Data["key"]) != 200 || cm.Annotations[schema.AnnotationManagedBy] != schema.ManagedByGit {
			t.Fatalf("ConfigMap %d is %s with %d bytes, managed by %q", i, cm.Name, len(cm.Data["key"]), cm.Annotations[schema.AnnotationManagedBy])
		}
	}
	// The watcher was dropped (10,000 events are more than a watcher may
	// lag behind) or saw every event; dropped, it relists, as informers
	// do, and the list has all of them. Either way it never sees a part.
	seen := 0
	for ev := range events {
		if ev.Type != store.Added {
			t.Fatalf("event %s %s", ev.Type, ev.Object.GetName())
		}
		seen++
		if seen == n {
			break
		}
	}
	if seen != n {
		objs, _, err := st.List(t.Context(), "configmaps", store.ListOptions{})
		if err != nil || len(objs) != n {
			t.Fatalf("the watcher saw %d events, then relisted %d ConfigMaps (%v); want all %d", seen, len(objs), err, n)
		}
		t.Logf("the watcher saw %d events, was dropped, and relisted all %d ConfigMaps", seen, n)
	}
}

// limitedCounter is a countingLoader that keeps its Loader's limits.
type limitedCounter struct{ countingLoader }

func (l *limitedCounter) Limits() schema.Limits { return loaderLimits(l.Loader) }

// TestCommitsPastLimitsRefusedOnce: a commit past a limit — schema's, the
// commit's objects as JSON, the store's — is refused with LimitExceeded
// and a problem naming the limit, located where it can be; the last good
// commit stays applied, and polls and resyncs never evaluate it again.
func TestCommitsPastLimitsRefusedOnce(t *testing.T) {
	cms := func(prefix string, n, valueBytes int) string {
		docs := make([]string, n)
		for i := range docs {
			docs[i] = configMap(fmt.Sprintf("%s-%d", prefix, i), "", strings.Repeat("v", valueBytes))
		}
		return strings.Join(docs, "---\n")
	}
	tests := []struct {
		name   string
		limits schema.Limits
		store  store.Config
		files  map[string]string
		limit  string // Problem.Limit
		at     string // the problem's FILE:LINE, "" for the whole commit
		reason string // in the message
	}{
		{name: "objects", limits: schema.Limits{MaxObjects: 50},
			files: map[string]string{"a.yaml": cms("a", 30, 10), "b.yaml": cms("b", 21, 10)},
			limit: schema.LimitObjects, at: "b.yaml:141", reason: "too many objects: the commit has more than 50"},
		{name: "2 MiB object", files: map[string]string{"big.yaml": cms("big", 1, 2<<20)},
			limit: schema.LimitObjectBytes, at: "big.yaml:1", reason: "larger than 1.5 MiB (limit: MaxObjectBytes = 1.5 MiB)"},
		{name: "file", limits: schema.Limits{MaxFileBytes: 4 << 10},
			files: map[string]string{"big.yaml": cms("big", 1, 5<<10)},
			limit: schema.LimitFileBytes, at: "big.yaml:0", reason: "larger than 4 KiB (limit: MaxFileBytes = 4 KiB)"},
		// 300 small ConfigMaps: 27 KiB of YAML, 150 KiB as stored.
		{name: "objects as JSON", limits: schema.Limits{MaxCommitBytes: 64 << 10},
			files: map[string]string{"many.yaml": cms("m", 300, 1)},
			limit: schema.LimitCommitBytes, reason: "the objects of the commit are more than 64 KiB of JSON in all"},
		{name: "store transaction", store: store.Config{MaxTxnBytes: 256 << 10},
			files: map[string]string{"many.yaml": cms("m", 100, 4<<10)},
			limit: "MaxTxnBytes", at: "commit", reason: "more than the store takes in one transaction; split the change over several commits (limit: MaxTxnBytes = 256 KiB)"},
		{name: "store object", store: store.Config{MaxObjectBytes: 16 << 10},
			files: map[string]string{"big.yaml": cms("big", 1, 20<<10)},
			limit: "MaxObjectBytes", at: "big.yaml:1", reason: "larger than the store takes (limit: MaxObjectBytes = 16 KiB)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := schema.NewValidatorWithLimits(tt.limits)
			if err != nil {
				t.Fatal(err)
			}
			loader := &limitedCounter{countingLoader{Loader: v}}
			st := diskStore(t, tt.store)
			h := newHarness(t, func(c *Config) { c.Loader = loader; c.Store = st; c.Resync = time.Minute })
			h.store = st
			good := h.remote.commit("good", map[string]string{"good.yaml": configMap("good", "", "1")})
			if body, err := h.poll(); err != nil || body.LastAppliedCommit != good {
				t.Fatalf("good commit: %+v, %v", body, err)
			}

			bad := h.remote.commit("past a limit", tt.files)
			body, err := h.poll()
			if !errors.Is(err, ErrRefused) || body.LastAttemptedCommit != bad || body.LastAppliedCommit != good {
				t.Fatalf("poll = %s (%v): attempted %s, live %s", body.Result, err, short(body.LastAttemptedCommit), short(body.LastAppliedCommit))
			}
			st1 := h.status()
			if c := condition(st1, ConditionStalled); c == nil || c.Reason != ReasonLimitExceeded {
				t.Errorf("Stalled = %+v, want %s", c, ReasonLimitExceeded)
			}
			probs := schema.Problems(st1.Problems).Errors()
			if len(probs) != 1 || probs[0].Limit != tt.limit || !strings.Contains(probs[0].Reason, tt.reason) {
				t.Fatalf("problems = %v, want one naming %s: %q", probs, tt.limit, tt.reason)
			}
			if at := fmt.Sprintf("%s:%d", probs[0].File, probs[0].Line); tt.at != "" && !strings.HasPrefix(at, tt.at) {
				t.Errorf("the problem is at %s, want %s", at, tt.at)
			}
			if !strings.Contains(st1.Message, "(limit: "+tt.limit+" = ") && tt.limit != "" {
				t.Errorf("the message does not name the limit: %q", st1.Message)
			}
			// The live commit's objects are there; none of the refused one.
			h.get("configmaps", "default", "good")
			if objs, _, _ := st.List(t.Context(), "configmaps", store.ListOptions{}); len(objs) != 1 {
				t.Errorf("%d ConfigMaps after the refusal, want the good one", len(objs))
			}

			// Polls and resyncs do not evaluate it again, nor write.
			loads, rev := loader.n.Load(), st.Revision()
			for range 3 {
				h.clock.Step(time.Hour)
				if _, err := h.poll(); !errors.Is(err, ErrRefused) {
					t.Fatalf("poll = %v", err)
				}
			}
			if loader.n.Load() != loads || st.Revision() != rev {
				t.Errorf("the refused commit was evaluated again: %d loads (then %d), revision %d (then %d)", loads, loader.n.Load(), rev, st.Revision())
			}
		})
	}
}

// TestStoreLimitsAboveSchemaLimits holds the store's default limits above
// schema's, so that a commit within schema's limits always fits in the
// store's transaction: its objects (at most MaxCommitBytes of JSON with
// Flotilla's annotations, each at most MaxObjectBytes) and a namespace for
// each, replacing another such commit, with the store's metadata on
// every object.
func TestStoreLimitsAboveSchemaLimits(t *testing.T) {
	lim := schema.DefaultLimits()
	// The store's metadata on an object, and a namespace made for it.
	st := store.MemoryFor(t)
	set, probs := buildDesired([]schema.Manifest{{Object: decodeCM(t, configMap("a", "some-namespace", "v")), File: "a.yaml", Line: 1}})
	if len(probs) != 0 {
		t.Fatal(probs)
	}
	gitJSON, _ := schema.Encode(set.objs[0].obj)
	stored, err := st.Create(t.Context(), set.objs[0].obj)
	if err != nil {
		t.Fatal(err)
	}
	storedJSON, _ := schema.Encode(stored)
	nsKind, _ := schema.KindByName("Namespace")
	ns, err := st.Create(t.Context(), autoNamespace(nsKind, strings.Repeat("n", 63), "a-rather-long/path/to/its/manifest.yaml:1000"))
	if err != nil {
		t.Fatal(err)
	}
	nsJSON, _ := schema.Encode(ns)
	meta := int64(len(storedJSON) - len(gitJSON))
	perObject := meta + int64(len(nsJSON))
	need := 2 * (lim.MaxCommitBytes + int64(lim.MaxObjects)*perObject)
	t.Logf("store metadata %d bytes an object, a namespace %d: a commit at schema's limits replacing another writes up to %s; the store takes %s",
		meta, len(nsJSON), formatBytes(need), formatBytes(store.DefaultMaxTxnBytes))
	if store.DefaultMaxTxnBytes < need {
		t.Errorf("store.DefaultMaxTxnBytes %d < %d", store.DefaultMaxTxnBytes, need)
	}
	if writes := 4*lim.MaxObjects + 1; store.DefaultMaxTxnWrites < writes { // objects and namespaces, created and deleted, and the status
		t.Errorf("store.DefaultMaxTxnWrites %d < %d", store.DefaultMaxTxnWrites, writes)
	}
	// An object at schema's limit, with Flotilla's annotations (its source
	// a path of 4 KiB) and the store's metadata.
	if room := lim.MaxObjectBytes + 4<<10 + 512 + meta; store.DefaultMaxObjectBytes < room {
		t.Errorf("store.DefaultMaxObjectBytes %d < %d", store.DefaultMaxObjectBytes, room)
	}
}

func decodeCM(t *testing.T, manifest string) schema.Object {
	t.Helper()
	ms, probs := yamlLoader{}.Load(fstest.MapFS{"a.yaml": {Data: []byte(manifest)}}, ".")
	if len(probs) != 0 || len(ms) != 1 {
		t.Fatalf("decode: %v", probs)
	}
	return ms[0].Object
}
