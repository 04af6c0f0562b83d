package gossip

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// These tests run real memberlist members over loopback, several in one
// process. Deadlines are generous: they check what happens, not how fast.

func TestThreeMembersSeeEachOtherWithMeta(t *testing.T) {
	ms := startCluster(t, 3, newKey(t))
	for _, m := range ms {
		got := m.Members()
		for i, mem := range got {
			want := agentMeta(i + 1)
			want.NodeName = mem.Name
			if mem.Name != ms[i].Local().Name {
				t.Fatalf("%s: Members()[%d] = %s, want sorted by name", m.Local().Name, i, mem.Name)
			}
			if mem.Meta != want {
				t.Errorf("%s sees %s with Meta %+v, want %+v", m.Local().Name, mem.Name, mem.Meta, want)
			}
			if mem.Addr != ms[i].Local().Addr {
				t.Errorf("%s sees %s at %s, want %s", m.Local().Name, mem.Name, mem.Addr, ms[i].Local().Addr)
			}
		}
	}
}

func TestSubscribeStartsWithCurrentMembers(t *testing.T) {
	ms := startCluster(t, 3, newKey(t))
	ch, cancel := ms[0].Subscribe()
	for i := range 3 {
		ev := <-ch
		if ev.Type != Joined || ev.Member.Name != ms[i].Local().Name {
			t.Fatalf("event %d = %v %s, want Joined %s", i, ev.Type, ev.Member.Name, ms[i].Local().Name)
		}
	}
	cancel()
	if _, ok := <-ch; ok {
		t.Fatal("channel still open after cancel")
	}
}

func TestUpdateMetaPropagates(t *testing.T) {
	ms := startCluster(t, 3, newKey(t))
	events, cancel := ms[1].Subscribe()
	defer cancel()

	meta := agentMeta(1)
	meta.PodCIDR = "10.244.99.0/24"
	meta.VTEPMAC = "02:00:00:00:00:99"
	ctx, cancelCtx := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelCtx()
	if err := ms[0].UpdateMeta(ctx, meta); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	ev, _ := waitEvent(t, events, 30*time.Second, "Updated node-1 on node-2", isEvent(Updated, "node-1"))
	if ev.Member.Meta.PodCIDR != meta.PodCIDR || ev.Member.Meta.VTEPMAC != meta.VTEPMAC {
		t.Errorf("Updated event carries %+v, want PodCIDR %s VTEPMAC %s", ev.Member.Meta, meta.PodCIDR, meta.VTEPMAC)
	}
	if got := ms[0].Local().Meta.PodCIDR; got != meta.PodCIDR {
		t.Errorf("Local().Meta.PodCIDR = %q, want %q", got, meta.PodCIDR)
	}
	testkit.EventuallyTrue(t, "node-3 sees node-1's new PodCIDR", 30*time.Second, func() bool {
		return ms[2].Members()[0].Meta.PodCIDR == meta.PodCIDR
	})
}

func TestUpdateMetaRefusesInvalidAndOversized(t *testing.T) {
	m := newMember(t, "node-1", newKey(t), agentMeta(1))
	ctx := context.Background()
	bad := agentMeta(1)
	bad.PodCIDR = "10.244.1.0"
	if err := m.UpdateMeta(ctx, bad); err == nil || !strings.Contains(err.Error(), "PodCIDR") {
		t.Errorf("UpdateMeta(bad PodCIDR) = %v, want an error naming PodCIDR", err)
	}
	big := Meta{Role: RoleServer, APIAddr: "https://" + strings.Repeat("a", 600) + ":6443"}
	if err := m.UpdateMeta(ctx, big); err == nil || !strings.Contains(err.Error(), "512") {
		t.Errorf("UpdateMeta(oversized) = %v, want an error naming the 512-byte limit", err)
	}
	if got := m.Local().Meta; got.PodCIDR != agentMeta(1).PodCIDR {
		t.Errorf("a refused UpdateMeta changed Local().Meta to %+v", got)
	}
	other := agentMeta(1)
	other.NodeName = "node-2"
	if err := m.UpdateMeta(ctx, other); err == nil {
		t.Error("UpdateMeta with another NodeName succeeded")
	}
}

func TestLeaveIsSeenAsLeft(t *testing.T) {
	ms := startCluster(t, 3, newKey(t))
	events, cancel := ms[0].Subscribe()
	defer cancel()

	if err := ms[2].Leave(5 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if err := ms[2].Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	ev, skipped := waitEvent(t, events, 30*time.Second, "node-3 gone on node-1", func(ev Event) bool {
		return ev.Member.Name == "node-3" && (ev.Type == Left || ev.Type == Failed)
	})
	if ev.Type != Left {
		t.Fatalf("node-1 saw node-3 %v after a polite Leave, want Left (before: %v)", ev.Type, skipped)
	}
	if ev.Member.Meta.PodCIDR != agentMeta(3).PodCIDR {
		t.Errorf("Left event carries Meta %+v, want node-3's last Meta", ev.Member.Meta)
	}
	for _, s := range skipped {
		if s.Type != Joined {
			t.Errorf("node-1 saw %v %s while node-3 left, want only the initial Joined events", s.Type, s.Member.Name)
		}
	}
	testkit.EventuallyTrue(t, "node-2 no longer lists node-3", 30*time.Second, func() bool { return len(ms[1].Members()) == 2 })
	if got := len(ms[0].Members()); got != 2 {
		t.Errorf("node-1 lists %d members after node-3 left, want 2", got)
	}
	if err := ms[2].Leave(time.Second); !errors.Is(err, ErrShutdown) {
		t.Errorf("Leave after Shutdown = %v, want ErrShutdown", err)
	}
}

func TestShutdownWithoutLeaveIsSeenAsFailed(t *testing.T) {
	ms := startCluster(t, 3, newKey(t))
	ev1, cancel1 := ms[0].Subscribe()
	defer cancel1()
	ev2, cancel2 := ms[1].Subscribe()
	defer cancel2()

	start := time.Now()
	if err := ms[2].Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for i, ch := range []<-chan Event{ev1, ev2} {
		ev, skipped := waitEvent(t, ch, 30*time.Second, "node-3 gone", func(ev Event) bool {
			return ev.Member.Name == "node-3" && (ev.Type == Left || ev.Type == Failed)
		})
		if ev.Type != Failed {
			t.Fatalf("node-%d saw node-3 %v after a kill, want Failed (before: %v)", i+1, ev.Type, skipped)
		}
		t.Logf("node-%d saw node-3 Failed %s after the kill", i+1, time.Since(start).Round(time.Millisecond))
	}
	if got := len(ms[0].Members()); got != 2 {
		t.Errorf("node-1 lists %d members after node-3 failed, want 2", got)
	}
}

func TestWrongKeyIsRefused(t *testing.T) {
	ms := startCluster(t, 2, newKey(t))
	intruder := newMember(t, "intruder", newKey(t), agentMeta(9))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := intruder.Join(ctx, []string{addrOf(ms[0])})
	if err == nil {
		t.Fatal("Join with the wrong key succeeded")
	}
	if !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("Join error = %v, want ErrKeyMismatch", err)
	}
	want := "gossip: cannot join " + addrOf(ms[0]) + ": the cluster key does not match"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Join error = %q, want it to contain %q", err, want)
	}
	t.Logf("wrong key: %v", err)

	// Kept sleep: what is checked is that nothing happens. Real time passes
	// for gossip to spread anything it might have learnt: 2 s is 20 gossip
	// rounds (GossipInterval) and 4 probe rounds.
	time.Sleep(2 * time.Second)
	for _, m := range ms {
		for _, mem := range m.Members() {
			if mem.Name == "intruder" {
				t.Errorf("%s lists the intruder", m.Local().Name)
			}
		}
	}
	if got := intruder.Members(); len(got) != 1 {
		t.Errorf("the intruder sees %d members, want only itself", len(got))
	}
}

func TestDuplicateNodeNameIsRefused(t *testing.T) {
	ms := startCluster(t, 2, newKey(t))
	key := ms[0].cfg.Key
	holder := ms[0].Local()
	dup := newMember(t, "node-1", key, agentMeta(7))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := dup.Join(ctx, []string{addrOf(ms[1])})
	if err == nil {
		t.Fatal("Join of a second node-1 succeeded")
	}
	if !errors.Is(err, ErrNameTaken) {
		t.Fatalf("Join error = %v, want ErrNameTaken", err)
	}
	var nt *NameTakenError
	if !errors.As(err, &nt) || nt.Holder != holder.Addr || nt.Claimant != dup.Local().Addr {
		t.Errorf("NameTakenError = %+v, want holder %s claimant %s", nt, holder.Addr, dup.Local().Addr)
	}
	if !strings.Contains(err.Error(), `node name "node-1" is already in the cluster`) {
		t.Errorf("Join error = %q, want it to say the name is already in the cluster", err)
	}
	t.Logf("duplicate name: %v", err)

	// Kept sleep, as in TestWrongKeyIsRefused: nothing may happen while
	// gossip runs 20 rounds.
	time.Sleep(2 * time.Second)
	for _, m := range ms {
		got := m.Members()
		if len(got) != 2 || got[0].Addr != holder.Addr || got[0].Meta.PodCIDR != agentMeta(1).PodCIDR {
			t.Errorf("%s sees %+v, want the original node-1 and node-2 only", m.Local().Name, got)
		}
	}
	if got := len(dup.Members()); got != 1 {
		t.Errorf("the duplicate sees %d members, want only itself", got)
	}
}

func TestJoinNowhereSaysSo(t *testing.T) {
	m := newMember(t, "node-1", newKey(t), agentMeta(1))
	// A port that was just free: nothing listens there.
	other := newMember(t, "node-2", newKey(t), agentMeta(2))
	addr := addrOf(other)
	_ = other.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := m.Join(ctx, []string{addr})
	if err == nil || !strings.Contains(err.Error(), "cannot join "+addr) {
		t.Fatalf("Join(%s) = %v, want cannot join", addr, err)
	}
	t.Logf("nothing there: %v", err)
}

func TestFailedMemberComesBackAsJoined(t *testing.T) {
	key := newKey(t)
	ms := startCluster(t, 2, key)
	events, cancel := ms[0].Subscribe()
	defer cancel()
	_ = ms[1].Shutdown()
	waitEvent(t, events, 30*time.Second, "node-2 Failed", isEvent(Failed, "node-2"))

	// node-2 restarts at another port: the name of a failed member is free.
	back := newMember(t, "node-2", key, agentMeta(2))
	ctx, cancelCtx := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelCtx()
	if err := back.Join(ctx, []string{addrOf(ms[0])}); err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	ev, _ := waitEvent(t, events, 30*time.Second, "node-2 Joined again", isEvent(Joined, "node-2"))
	if ev.Member.Addr != back.Local().Addr {
		t.Errorf("node-2 rejoined at %s, want %s", ev.Member.Addr, back.Local().Addr)
	}
}

// TestKeyRotation: the three steps of a rotation (install the new key
// everywhere, make it primary, drop the old one) keep the members together;
// afterwards a member holding only the old key is refused, and one holding
// the new key joins.
func TestKeyRotation(t *testing.T) {
	oldKey, newKey2 := newKey(t), newKey(t)
	ms := startCluster(t, 3, oldKey)
	step := func(primary []byte, others ...[]byte) {
		t.Helper()
		for _, m := range ms {
			if err := m.SetKeys(primary, others...); err != nil {
				t.Fatal(err)
			}
		}
		// Kept sleep: what is checked is that nothing breaks. 1.5 s is 15
		// gossip rounds and 3 probe rounds under the new keys.
		time.Sleep(1500 * time.Millisecond)
		for _, m := range ms {
			if n := len(m.Members()); n != 3 {
				t.Fatalf("%s sees %d members alive after a rotation step, want 3", m.Local().Name, n)
			}
		}
	}
	step(oldKey, newKey2)
	step(newKey2, oldKey)
	step(newKey2)
	if err := ms[0].SetKeys(make([]byte, 5)); err == nil {
		t.Error("a 5-byte key was taken")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := newMember(t, "stale", oldKey, agentMeta(8)).Join(ctx, []string{addrOf(ms[0])}); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("a member with the old key: %v, want ErrKeyMismatch", err)
	}
	if err := newMember(t, "fresh", newKey2, agentMeta(9)).Join(ctx, []string{addrOf(ms[1])}); err != nil {
		t.Errorf("a member with the new key: %v", err)
	}
}
