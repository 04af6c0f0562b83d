package store_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/raftlog"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/schema"
)

// The replicated store seen from its clients: a history of reads and
// writes made through every server while a nemesis partitions the network
// and restarts the leader must be linearizable (checked with porcupine), and
// a server cut off from the majority must refuse writes and show nothing the
// majority did not commit.

// raftCluster is a Raft group of Replicated stores on one MemNetwork, as
// raftGroup, whose servers can also be killed (Node stopped, store closed)
// and restarted from their directories. Every server stops when the test
// ends.
type raftCluster struct {
	nw      *raftlog.MemNetwork
	peers   []raftlog.Peer
	servers []*raftServer
	// snapshotEntries is the Nodes' Config.SnapshotEntries (0: default).
	snapshotEntries uint64
}

// raftServer is one server of a raftCluster: its directories survive a
// kill; its Node and store are nil while it is down.
type raftServer struct {
	id  uint64
	dir string
	log *slog.Logger

	mu   sync.Mutex
	st   *store.Badger
	node *raftlog.Node
}

// newRaftCluster starts n servers and waits for a leader.
func newRaftCluster(t *testing.T, n int, snapshotEntries uint64) *raftCluster {
	t.Helper()
	c := &raftCluster{nw: raftlog.NewMemNetwork(), snapshotEntries: snapshotEntries}
	t.Cleanup(c.nw.Close)
	for i := 1; i <= n; i++ {
		c.peers = append(c.peers, raftlog.Peer{ID: uint64(i), Addr: fmt.Sprint("s", i)})
	}
	for i := range n {
		// One logger per server for every run of it: LoggerAt registers a
		// cleanup, which only the test's goroutine may do safely late.
		s := &raftServer{id: uint64(i + 1), dir: t.TempDir(), log: testkit.LoggerAt(t, slog.LevelWarn)}
		c.servers = append(c.servers, s)
		if err := c.start(s); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, s := range c.servers {
			if err := c.kill(s); err != nil {
				t.Error(err)
			}
		}
	})
	testkit.Eventually(t, "a leader", 20*time.Second, func() error {
		if c.leader() < 0 {
			return errors.New("no leader yet")
		}
		return nil
	})
	return c
}

// start opens s's store and starts its Node from s's directories (a new
// server the first time, a restart after).
func (c *raftCluster) start(s *raftServer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.node != nil {
		return nil
	}
	st, err := store.Open(store.Config{Dir: filepath.Join(s.dir, "db"), Replicated: true, Logger: s.log})
	if err != nil {
		return fmt.Errorf("server %d: %w", s.id, err)
	}
	node, err := raftlog.Start(raftlog.Config{ID: s.id, Dir: filepath.Join(s.dir, "raft"), Bootstrap: c.peers,
		Transport: c.nw.Transport(s.id), StateMachine: st, TickInterval: 20 * time.Millisecond,
		SnapshotEntries: c.snapshotEntries, Logger: s.log})
	if err != nil {
		_ = st.Close()
		return fmt.Errorf("server %d: %w", s.id, err)
	}
	c.nw.Register(s.id, node)
	st.Replicate(node)
	s.st, s.node = st, node
	return nil
}

// kill stops s's Node, then closes its store, as a server that shuts down:
// what it wrote is on disk. Calls waiting on either return an error.
func (c *raftCluster) kill(s *raftServer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.node == nil {
		return nil
	}
	c.nw.Register(s.id, nil)
	s.node.Stop()
	err := s.st.Close()
	s.st, s.node = nil, nil
	if err != nil {
		return fmt.Errorf("server %d: %w", s.id, err)
	}
	return nil
}

// store is s's store, or nil while s is down.
func (s *raftServer) store() *store.Badger {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// status is s's Node's Status (zero while s is down).
func (s *raftServer) status() raftlog.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.node == nil {
		return raftlog.Status{}
	}
	return s.node.Status()
}

// leader is the index of the running server that believes it leads in
// the highest term, or -1. (A leader cut off from the majority believes it
// until its election timeout.)
func (c *raftCluster) leader() int {
	best, term := -1, uint64(0)
	for i, s := range c.servers {
		if st := s.status(); st.ID != 0 && st.Leader == st.ID && st.Term >= term {
			best, term = i, st.Term
		}
	}
	return best
}

// registerOp is what a client does to one ConfigMap.
type registerOp uint8

const (
	opGet registerOp = iota
	opPut            // create, or update without a resourceVersion
	opCAS            // update with the resourceVersion the expected value was read at
)

type registerInput struct {
	op     registerOp
	key    string
	value  string // put, cas: the value written
	expect string // cas: the value whose resourceVersion the update carried
}

type registerOutput struct {
	value   string // get: the value read, "" for not found
	swapped bool   // cas: the update was applied (else a conflict)
	// unknown: the call ended without saying whether it was applied (its
	// deadline passed, the server stopped). The operation stays open:
	// porcupine may place it anywhere after its call, or nowhere.
	unknown bool
}

// registerModel is the porcupine model of the ConfigMaps, checked one
// ConfigMap at a time: the state is its Data["v"], "" while it does not
// exist. Every written value is unique, so a value names the one write
// that made it, and a resourceVersion the one value.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(registerInput).key
			if byKey[k] == nil {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		slices.Sort(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(string), input.(registerInput), output.(registerOutput)
		switch in.op {
		case opGet:
			return out.value == s, s
		case opPut:
			return true, in.value
		default: // opCAS
			switch {
			case out.unknown && s == in.expect, out.swapped:
				return s == in.expect, in.value
			case out.unknown:
				return true, s
			default:
				return s != in.expect, s
			}
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(registerInput), output.(registerOutput)
		var call, ret string
		switch in.op {
		case opGet:
			call, ret = fmt.Sprintf("get(%s)", in.key), fmt.Sprintf("%q", out.value)
		case opPut:
			call, ret = fmt.Sprintf("put(%s, %s)", in.key, in.value), "ok"
		case opCAS:
			call, ret = fmt.Sprintf("cas(%s, %s → %s)", in.key, in.expect, in.value), "conflict"
			if out.swapped {
				ret = "ok"
			}
		}
		if out.unknown {
			ret = "?"
		}
		return call + " → " + ret
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
	DescribeOperationMetadata: func(info any) string {
		s, _ := info.(string)
		return s
	},
}

// notApplied reports whether err says that a write was not applied and
// never will be: nothing was proposed (no leader, dropped), or every write
// set proposed was refused as stale. Any other error (the deadline, a
// stopped Node, a closed store) leaves the write's outcome unknown: a
// proposal accepted by the log may still commit.
func notApplied(err error) bool {
	return errors.Is(err, raftlog.ErrNoLeader) || errors.Is(err, raftlog.ErrProposalDropped) ||
		errors.Is(err, store.ErrStale)
}

func configMap(name, v string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Data: map[string]string{"v": v}}
}

// version is a value and the resourceVersion it was seen at.
type version struct{ value, rv string }

// history records a porcupine history, and for each key the value and
// resourceVersion a client saw last (what a compare-and-set expects, as a
// client would that read through another server).
type history struct {
	start time.Time

	mu   sync.Mutex
	ops  []porcupine.Operation
	seen map[string]version

	okReads, okWrites, conflicts, unknown, dropped atomic.Int64
}

// now is the history's clock: monotonic nanoseconds since its start.
func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(op porcupine.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

func (h *history) observe(key string, obj any) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen[key] = version{cm.Data["v"], cm.ResourceVersion}
}

func (h *history) lastSeen(key string) (version, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.seen[key]
	return v, ok
}

// opTimeout is each client operation's deadline: several election
// timeouts, so that an operation fails only when the group was not
// available for that long, or its proposal was lost (forwarded to a leader
// cut off, or not yet committed when the leader changed), which makes the
// caller wait for the deadline.
const opTimeout = time.Second

// client makes random operations on keys through server s until ctx is
// done, each with its own deadline, and records them in h.
func (h *history) client(ctx context.Context, id int, s *raftServer, keys []string) {
	rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	for seq := 0; ctx.Err() == nil; seq++ {
		st := s.store()
		if st == nil { // the server is down
			pause(ctx, 20*time.Millisecond)
			continue
		}
		key := keys[rng.IntN(len(keys))]
		in := registerInput{op: opGet, key: key}
		var exp version
		if r := rng.IntN(10); r >= 4 {
			in.op, in.value = opPut, fmt.Sprintf("c%d-%d", id, seq)
			var ok bool
			if exp, ok = h.lastSeen(key); ok && r >= 8 {
				in.op, in.expect = opCAS, exp.value
			}
		}
		opCtx, cancel := context.WithTimeout(ctx, opTimeout)
		call := h.now()
		out, obj, err := h.do(opCtx, st, in, exp)
		ret := h.now()
		cancel()
		meta := fmt.Sprintf("server %d", s.id)
		switch {
		case err == nil:
			h.observe(key, obj)
			if in.op == opGet {
				h.okReads.Add(1)
			} else if in.op == opPut || out.swapped {
				h.okWrites.Add(1)
			} else {
				h.conflicts.Add(1)
			}
		case in.op == opGet || notApplied(err):
			// A failed read observed nothing; a refused write changed
			// nothing.
			h.dropped.Add(1)
			pause(ctx, 10*time.Millisecond)
			continue
		default:
			h.unknown.Add(1)
			out.unknown, ret = true, math.MaxInt64
			meta += ": " + err.Error()
			pause(ctx, 10*time.Millisecond)
		}
		h.add(porcupine.Operation{ClientId: id, Input: in, Call: call, Output: out, Return: ret, Metadata: meta})
	}
}

// do runs in on st. err is nil when out holds the result (a conflict, or
// not found, is the result of a compare-and-set whose expected value is not
// there, not an error); obj is the object read or written.
func (h *history) do(ctx context.Context, st *store.Badger, in registerInput, exp version) (out registerOutput, obj any, err error) {
	switch in.op {
	case opGet:
		o, err := st.Get(ctx, "configmaps", "default", in.key)
		if errors.Is(err, store.ErrNotFound) {
			return registerOutput{}, nil, nil
		}
		if err != nil {
			return out, nil, err
		}
		return registerOutput{value: o.(*corev1.ConfigMap).Data["v"]}, o, nil
	case opPut:
		o, err := st.Create(ctx, configMap(in.key, in.value))
		if errors.Is(err, store.ErrExists) {
			o, err = st.Update(ctx, configMap(in.key, in.value))
		}
		return out, o, err
	default: // opCAS
		cm := configMap(in.key, in.value)
		cm.ResourceVersion = exp.rv
		o, err := st.Update(ctx, cm)
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			return out, nil, nil
		}
		return registerOutput{swapped: err == nil}, o, err
	}
}

// pause waits d, or until ctx is done.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// nemesis, until ctx is done, repeatedly isolates the leader or a
// follower, cuts the leader from one follower, or kills and restarts the
// leader, each for a short while, with a pause to recover between. It
// heals everything and restarts every server before it returns; a server
// that does not restart is an error.
func (c *raftCluster) nemesis(ctx context.Context, t *testing.T) {
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	defer func() {
		c.nw.HealAll()
		for _, s := range c.servers {
			if err := c.start(s); err != nil {
				t.Error(err)
			}
		}
	}()
	pause(ctx, 300*time.Millisecond) // the clients' first operations, undisturbed
	for ctx.Err() == nil {
		l := c.leader()
		if l < 0 {
			pause(ctx, 50*time.Millisecond)
			continue
		}
		leader := c.servers[l]
		other := c.servers[(l+1+rng.IntN(len(c.servers)-1))%len(c.servers)]
		hold := time.Duration(300+rng.IntN(700)) * time.Millisecond
		switch rng.IntN(4) {
		case 0:
			t.Logf("nemesis: isolate the leader, server %d, for %s", leader.id, hold)
			c.nw.Isolate(leader.id)
			pause(ctx, hold)
			c.nw.HealAll()
		case 1:
			t.Logf("nemesis: isolate a follower, server %d, for %s", other.id, hold)
			c.nw.Isolate(other.id)
			pause(ctx, hold)
			c.nw.HealAll()
		case 2:
			t.Logf("nemesis: cut the leader, server %d, from server %d for %s", leader.id, other.id, hold)
			c.nw.Cut(leader.id, other.id)
			pause(ctx, hold)
			c.nw.HealAll()
		default:
			t.Logf("nemesis: kill the leader, server %d, for %s", leader.id, hold)
			if err := c.kill(leader); err != nil {
				t.Error(err)
				return
			}
			pause(ctx, hold)
			if err := c.start(leader); err != nil {
				t.Error(err)
				return
			}
		}
		pause(ctx, time.Duration(300+rng.IntN(500))*time.Millisecond)
	}
}

// TestLinearizableOverRaft: clients read, write and compare-and-set three
// ConfigMaps through all three servers while the leader is isolated, cut
// from a follower, or killed and restarted; the history, with every write
// whose outcome the client does not know left open, is linearizable.
func TestLinearizableOverRaft(t *testing.T) {
	if testing.Short() {
		t.Skip("a Raft group under faults for several seconds")
	}
	// Snapshots every 64 entries: a restarted server may catch up from one.
	c := newRaftCluster(t, 3, 64)
	keys := []string{"k1", "k2", "k3"}
	h := &history{start: time.Now(), seen: map[string]version{}}

	// The run lasts 10 s, or up to 20 s on a machine so loaded that fewer
	// than 100 reads or writes returned by then.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	const clients = 5
	for i := range clients {
		wg.Go(func() { h.client(ctx, i, c.servers[i%len(c.servers)], keys) })
	}
	wg.Go(func() { c.nemesis(ctx, t) })
	wg.Go(func() {
		pause(ctx, 10*time.Second)
		for ctx.Err() == nil && (h.okReads.Load() < 100 || h.okWrites.Load() < 100) {
			pause(ctx, 100*time.Millisecond)
		}
		cancel()
	})
	wg.Wait()
	t.Logf("%d operations: %d reads, %d writes and %d conflicts that returned, %d writes of unknown outcome; %d refused or failed (dropped)",
		len(h.ops), h.okReads.Load(), h.okWrites.Load(), h.conflicts.Load(), h.unknown.Load(), h.dropped.Load())
	if h.okReads.Load() < 50 || h.okWrites.Load() < 50 {
		t.Errorf("too few operations returned to check anything: %d reads, %d writes", h.okReads.Load(), h.okWrites.Load())
	}

	res, info := porcupine.CheckOperationsVerbose(registerModel, h.ops, 20*time.Second)
	if res != porcupine.Ok {
		f, err := os.CreateTemp("", "flotilla-linearizable-*.html")
		if err == nil {
			err = porcupine.Visualize(registerModel, info, f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			t.Errorf("cannot write the visualization: %v", err)
		} else {
			t.Logf("visualization: %s", f.Name())
		}
		explainIllegal(t, h.ops, info)
		t.Fatalf("history of %d operations: porcupine says %s, want %s (Unknown: the check did not finish in time)", len(h.ops), res, porcupine.Ok)
	}

	// Healed, every server ends with the same ConfigMaps at the same
	// revisions.
	testkit.Eventually(t, "the servers to agree", 20*time.Second, func() error {
		var first string
		for i, s := range c.servers {
			lctx, lcancel := context.WithTimeout(t.Context(), 2*time.Second)
			objs, rev, err := s.store().List(lctx, "configmaps", store.ListOptions{})
			lcancel()
			if err != nil {
				return fmt.Errorf("server %d: %w", s.id, err)
			}
			got := fmt.Sprint(rev, " ", describe(objs))
			if i == 0 {
				first = got
			} else if got != first {
				return fmt.Errorf("server %d lists %s, server 1 %s", s.id, got, first)
			}
		}
		return nil
	})
}

// describe is name@resourceVersion=v of each ConfigMap.
func describe(objs []schema.Object) string {
	var out []string
	for _, o := range objs {
		if cm, ok := o.(*corev1.ConfigMap); ok {
			out = append(out, cm.Name+"@"+cm.ResourceVersion+"="+cm.Data["v"])
		}
	}
	return strings.Join(out, " ")
}

// TestMinorityRefusesWrites: a follower cut off from the other two refuses
// a write, with ErrNoLeader within a few election timeouts, while the
// majority goes on writing; its watch shows nothing meanwhile, and an
// update carrying a resourceVersion the majority wrote gets no answer from
// its older state (no conflict, no not found). Healed, it catches up: its
// reads and its watch show the majority's writes, in the majority's order,
// and never the write it refused.
//
// A write made the moment the follower is cut off, while it still believes
// in the leader, is forwarded to the leader and lost on the way; the call
// ends at its deadline, its outcome unknown to the caller (a forwarded
// proposal may commit later). The test only requires that every server then
// agrees on whether it was applied.
func TestMinorityRefusesWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-server Raft group")
	}
	c := newRaftCluster(t, 3, 0)
	l := c.leader()
	iso, maj := c.servers[(l+1)%3], c.servers[(l+2)%3] // two followers
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	base, err := maj.store().Create(ctx, configMap("base", "0"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := iso.store().Get(ctx, "configmaps", "default", "base"); err != nil {
		t.Fatalf("server %d, before the partition: %v", iso.id, err)
	}
	since := iso.store().Revision()
	isoWatch, err := iso.store().Watch(ctx, "configmaps", store.ListOptions{}, since)
	if err != nil {
		t.Fatal(err)
	}
	majWatch, err := maj.store().Watch(ctx, "configmaps", store.ListOptions{}, since)
	if err != nil {
		t.Fatal(err)
	}

	c.nw.Isolate(iso.id)
	earlyCtx, earlyCancel := context.WithTimeout(ctx, time.Second)
	_, earlyErr := iso.store().Create(earlyCtx, configMap("early", "minority"))
	earlyCancel()
	if earlyErr == nil {
		t.Fatalf("server %d, cut off: a write succeeded", iso.id)
	}
	t.Logf("a write at once through the cut-off server %d: %v", iso.id, earlyErr)

	testkit.Eventually(t, fmt.Sprintf("server %d to know it has no leader", iso.id), 10*time.Second, func() error {
		if st := iso.status(); st.Leader != 0 {
			return fmt.Errorf("it follows server %d", st.Leader)
		}
		return nil
	})
	refusedCtx, refusedCancel := context.WithTimeout(ctx, 10*time.Second)
	began := time.Now()
	_, err = iso.store().Create(refusedCtx, configMap("refused", "minority"))
	took := time.Since(began)
	refusedCancel()
	if !errors.Is(err, raftlog.ErrNoLeader) {
		t.Fatalf("server %d, cut off, without a leader: a write returned %v after %s, want %v", iso.id, err, took, raftlog.ErrNoLeader)
	}
	t.Logf("a write through server %d without a leader: refused after %s", iso.id, took)

	upd := configMap("base", "1")
	upd.ResourceVersion = base.GetResourceVersion()
	based, err := maj.store().Update(ctx, upd)
	if err != nil {
		t.Fatalf("server %d, in the majority: %v", maj.id, err)
	}
	majority := []string{"base@" + based.GetResourceVersion()}
	var first, last schema.Object
	for i := range 5 {
		name := fmt.Sprint("m", i)
		if last, err = maj.store().Create(ctx, configMap(name, "majority")); err != nil {
			t.Fatalf("server %d, in the majority: %v", maj.id, err)
		}
		if i == 0 {
			first = last
		}
		majority = append(majority, name+"@"+last.GetResourceVersion())
	}

	// Updates that carry the resourceVersions the majority wrote: the
	// cut-off server holds an older base and no m0, and answering from its
	// own state (a conflict, not found) would be a stale read of what the
	// majority acknowledged. It cannot know better without the majority,
	// so it must not answer before the deadline. (Their outcome is then
	// unknown to the caller; nothing below depends on it.)
	casBase := configMap("base", "minority")
	casBase.ResourceVersion = based.GetResourceVersion()
	casFirst := configMap(first.GetName(), "minority")
	casFirst.ResourceVersion = first.GetResourceVersion()
	for _, cm := range []*corev1.ConfigMap{casBase, casFirst} {
		sctx, scancel := context.WithTimeout(ctx, time.Second)
		_, err := iso.store().Update(sctx, cm)
		scancel()
		if err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			t.Errorf("server %d, cut off: update %s@%s, which the majority wrote: %v, want no answer before the deadline",
				iso.id, cm.Name, cm.ResourceVersion, err)
		}
	}

	select {
	case ev := <-isoWatch:
		t.Fatalf("server %d, cut off, watched %s %s@%s", iso.id, ev.Type, ev.Object.GetName(), ev.Object.GetResourceVersion())
	case <-time.After(200 * time.Millisecond):
	}
	if rev := iso.store().Revision(); rev != since {
		t.Fatalf("server %d, cut off, is at revision %d, was at %d", iso.id, rev, since)
	}

	c.nw.HealAll()
	testkit.Eventually(t, fmt.Sprintf("server %d to read the majority's last write", iso.id), 20*time.Second, func() error {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		defer rcancel()
		obj, err := iso.store().Get(rctx, "configmaps", "default", last.GetName())
		if err != nil {
			return err
		}
		if obj.GetResourceVersion() != last.GetResourceVersion() {
			return fmt.Errorf("%s@%s, want @%s", last.GetName(), obj.GetResourceVersion(), last.GetResourceVersion())
		}
		return nil
	})
	// Healed, it accepts writes again: the last event both watches wait for.
	testkit.Eventually(t, fmt.Sprintf("a write through server %d", iso.id), 20*time.Second, func() error {
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		defer wcancel()
		_, err := iso.store().Create(wctx, configMap("healed", "x"))
		if errors.Is(err, store.ErrExists) { // an earlier try's outcome was unknown
			return nil
		}
		return err
	})

	isoSeen, majSeen := watchUntil(t, isoWatch, "healed"), watchUntil(t, majWatch, "healed")
	if isoSeen != majSeen {
		t.Fatalf("server %d watched\n  %s\nserver %d\n  %s", iso.id, isoSeen, maj.id, majSeen)
	}
	for _, w := range majority {
		if !strings.Contains(" "+isoSeen+" ", " "+w+" ") {
			t.Errorf("server %d did not watch the majority's %s: %s", iso.id, w, isoSeen)
		}
	}
	if strings.Contains(isoSeen, "refused@") {
		t.Errorf("the refused write was applied: %s", isoSeen)
	}
	early := strings.Contains(isoSeen, "early@")
	if early && notApplied(earlyErr) {
		t.Errorf("the write refused with %v was applied: %s", earlyErr, isoSeen)
	}
	t.Logf("the write of unknown outcome was applied: %v; server %d watched %s", early, iso.id, isoSeen)
	for _, s := range c.servers {
		if _, err := s.store().Get(ctx, "configmaps", "default", "refused"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("server %d: the refused write: %v, want %v", s.id, err, store.ErrNotFound)
		}
	}
}

// watchUntil returns the events of w up to the one of name, as
// name@resourceVersion, in order.
func watchUntil(t *testing.T, w <-chan store.Event, name string) string {
	t.Helper()
	var seen []string
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-w:
			if !ok {
				t.Fatalf("the watch ended after %s", strings.Join(seen, " "))
			}
			seen = append(seen, ev.Object.GetName()+"@"+ev.Object.GetResourceVersion())
			if ev.Object.GetName() == name {
				return strings.Join(seen, " ")
			}
		case <-timeout:
			t.Fatalf("no event for %s within 20s, after %s", name, strings.Join(seen, " "))
		}
	}
}

// explainIllegal logs, for each key whose history porcupine could not
// linearize, the end of the longest linearization it found and the
// operations it could not place after it, earliest return first.
func explainIllegal(t *testing.T, ops []porcupine.Operation, info porcupine.LinearizationInfo) {
	t.Helper()
	parts := registerModel.Partition(ops) // the order the check used
	for p, lins := range info.PartialLinearizations() {
		part := parts[p]
		var longest []int
		for _, lin := range lins {
			if len(lin) > len(longest) {
				longest = lin
			}
		}
		if len(longest) == len(part) {
			continue
		}
		placed := map[int]bool{}
		for _, id := range longest {
			placed[id] = true
		}
		var rest []porcupine.Operation
		for id, op := range part {
			if !placed[id] {
				rest = append(rest, op)
			}
		}
		slices.SortFunc(rest, func(a, b porcupine.Operation) int { return cmp.Compare(a.Return, b.Return) })
		var b strings.Builder
		fmt.Fprintf(&b, "key %s: %d of %d operations linearized; the last of them:\n", part[0].Input.(registerInput).key, len(longest), len(part))
		for _, id := range longest[max(0, len(longest)-6):] {
			b.WriteString(describeOp(part[id]))
		}
		b.WriteString("then none of these fits:\n")
		for _, op := range rest[:min(len(rest), 6)] {
			b.WriteString(describeOp(op))
		}
		t.Log(b.String())
	}
}

// describeOp is one line for an operation: client, interval (ms since the
// start), what it did, its metadata.
func describeOp(op porcupine.Operation) string {
	ret := "∞"
	if op.Return != math.MaxInt64 {
		ret = fmt.Sprintf("%.1f", float64(op.Return)/1e6)
	}
	return fmt.Sprintf("  client %d [%.1f, %s ms] %s (%v)\n", op.ClientId, float64(op.Call)/1e6, ret,
		registerModel.DescribeOperation(op.Input, op.Output), op.Metadata)
}
