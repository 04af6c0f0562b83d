package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/store"
)

// The lab's linearizability check: clients read and write a few
// ConfigMaps, each through one server's own address, while the lab's
// links are cut and restored (the leader's node, then a follower's) and
// the leader's node is killed and started again; the history is checked
// with porcupine, as etcd's robustness tests do. The store's own test
// (cluster/store, TestLinearizableOverRaft) adds compare-and-set on an
// in-process network; this one is the real thing: HTTPS between servers,
// the API, the lab's switch, a server's process killed.

type labRegIn struct {
	get   bool
	key   string
	value string // put: the value written (unique)
}

type labRegOut struct {
	value   string // get: "" for not found
	unknown bool   // put: no answer says whether it was applied
}

var labRegisterModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(labRegIn).key
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range slices.Sorted(maps.Keys(byKey)) {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(string), input.(labRegIn), output.(labRegOut)
		if in.get {
			return out.value == s, s
		}
		return true, in.value
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(labRegIn), output.(labRegOut)
		if in.get {
			return fmt.Sprintf("get(%s) → %q", in.key, out.value)
		}
		if out.unknown {
			return fmt.Sprintf("put(%s, %s) → ?", in.key, in.value)
		}
		return fmt.Sprintf("put(%s, %s) → ok", in.key, in.value)
	},
}

// notWritten reports whether an API error says that nothing was written:
// the Statuses of a store that refused before proposing (429 stale, 503 no
// leader), or a refusal before the store (4xx other than a timeout).
func notWritten(err error) bool {
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		return false // a transport error or a deadline: unknown
	}
	code := int(st.Status().Code)
	return code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable ||
		(code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusGatewayTimeout)
}

// checkLinearizable runs three clients, one per server, for the length of
// the nemesis: the leader's node cut off for 6 s, healed, then a
// follower's for 6 s, healed, then the leader's node killed for 5 s and
// started again. The cut-off follower, asked from its own node, refuses a
// write, which its history (a watch through it, once healed) never shows. The history must be linearizable, with
// enough successful operations that the check means something.
func (l *labCluster) checkLinearizable() {
	t := l.t
	servers, err := l.servers()
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"lin-a", "lin-b"}
	for _, k := range keys {
		cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: k, Namespace: "default"}, Data: map[string]string{"v": ""}}
		if _, err := l.client.Create(context.Background(), cm); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu    sync.Mutex
		ops   []porcupine.Operation
		start = time.Now()
	)
	now := func() int64 { return int64(time.Since(start)) }
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	okReads, okWrites := 0, 0
	for i, s := range servers {
		c, _ := l.serverClient(s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				key := keys[n%len(keys)]
				in := labRegIn{get: n%2 == 0, key: key}
				octx, ocancel := context.WithTimeout(ctx, 3*time.Second)
				call := now()
				var out labRegOut
				var err error
				if in.get {
					var obj any
					obj, err = c.Get(octx, "configmaps", "default", key)
					if err == nil {
						out.value = obj.(*corev1.ConfigMap).Data["v"]
					}
				} else {
					in.value = fmt.Sprintf("c%d-%d", i, n)
					cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"},
						ObjectMeta: metav1.ObjectMeta{Name: key, Namespace: "default"}, Data: map[string]string{"v": in.value}}
					_, err = c.Update(octx, cm) // no resourceVersion: a put
				}
				ret := now()
				ocancel()
				if ctx.Err() != nil && err != nil {
					break // the run ended under it
				}
				switch {
				case err == nil:
					mu.Lock()
					if in.get {
						okReads++
					} else {
						okWrites++
					}
					ops = append(ops, porcupine.Operation{ClientId: i, Input: in, Call: call, Output: out, Return: ret})
					mu.Unlock()
				case in.get || notWritten(err):
					// a failed read, or a write refused whole: no effect
				default:
					mu.Lock()
					ops = append(ops, porcupine.Operation{ClientId: i, Input: in, Call: call, Output: labRegOut{unknown: true}, Return: math.MaxInt64})
					mu.Unlock()
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	// The nemesis: partitions through the lab's switch.
	time.Sleep(2 * time.Second)
	leader := l.leaderNode()
	l.lab("cut", leader)
	time.Sleep(6 * time.Second)
	l.lab("heal", leader)
	time.Sleep(3 * time.Second)
	var follower string
	l.eventually("a leader after the heal", 30*time.Second, func() error {
		n, err := l.tryLeaderNode()
		if err != nil {
			return err
		}
		for _, f := range []string{"node1", "node2", "node3"} {
			if f != n && (f != leader || follower == "") {
				follower = f // another node than the first cut, if it can be
			}
		}
		return nil
	})
	_, before, err := l.client.List(context.Background(), "configmaps", store.ListOptions{Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	l.lab("cut", follower)
	cutAt := time.Now()
	// Once the follower can tell that its leader is gone (its election
	// timeout, 1 s), a write through it is refused.
	time.Sleep(2 * time.Second)
	asked := time.Now()
	refused := l.minorityWrite(follower, keys[0])
	t.Logf("the cut-off %s refused a write (delete configmap %s) %s after it was asked", follower, keys[0], refused.Sub(asked).Round(10*time.Millisecond))
	time.Sleep(time.Until(cutAt.Add(6 * time.Second)))
	l.lab("heal", follower)
	time.Sleep(3 * time.Second)
	l.sameHistory(follower, before, keys[0])
	// The leader's node dies (its server killed, as a power loss) and
	// comes back.
	killed := l.leaderNode()
	l.lab("kill", killed)
	time.Sleep(5 * time.Second)
	l.lab("start", killed)
	l.eventually("the killed server answers again", 2*time.Minute, func() error { return l.serversHealthy(3) })
	time.Sleep(3 * time.Second)
	cancel()
	wg.Wait()

	if okReads < 20 || okWrites < 20 {
		t.Fatalf("only %d reads and %d writes succeeded across the partitions: the check would mean nothing", okReads, okWrites)
	}
	res, info := porcupine.CheckOperationsVerbose(labRegisterModel, ops, time.Minute)
	if res != porcupine.Ok {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("flotilla-lab-linearizability-%d.html", time.Now().UnixNano()))
		if f, err := os.Create(path); err == nil {
			_ = porcupine.Visualize(labRegisterModel, info, f)
			f.Close()
		}
		t.Fatalf("history of %d operations through 3 servers, partitions of %s and %s, %s killed: porcupine says %s (visualization: %s)", len(ops), leader, follower, killed, res, path)
	}
	t.Logf("linearizable: %d operations (%d reads, %d writes acknowledged) through 3 servers, with %s then %s cut off, then the leader's node %s killed and started", len(ops), okReads, okWrites, leader, follower, killed)
	// The partitions healed: every server is a voter again, and agrees.
	l.waitVoters(3)
	l.eventually("the servers are healthy after the partitions", time.Minute, func() error { return l.serversHealthy(3) })
	for _, k := range keys {
		if _, err := l.client.Delete(context.Background(), "configmaps", "default", k, store.DeleteOptions{}); err != nil {
			t.Error(err)
		}
	}
}

// minorityWrite deletes key through the API of node's own server, from
// inside the node, while the node is cut off: the server is a minority of
// one and must refuse (an error, within its client's 20 s). It returns
// when the refusal came.
func (l *labCluster) minorityWrite(node, key string) time.Time {
	t := l.t
	kubeconfig := l.kubeconfigFor("127.0.0.1")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, flotillaBin, "lab", "exec", "--dir", l.dir, node, "--",
		flotillaBin, "--kubeconfig", kubeconfig, "delete", "configmap", key).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("a write through the cut-off %s got no answer in 20 s:\n%s", node, out)
	}
	if err == nil {
		t.Fatalf("the cut-off %s accepted a write (delete configmap %s) that no majority made:\n%s", node, key, out)
	}
	return time.Now()
}

// sameHistory checks, once node is healed, that a watch through node's own
// server from revision from replays exactly the events a watch through the
// API VIP does, up to a marker written through the VIP: the cut-off server
// recorded no write of its own (none deleting refusedKey), and caught up.
func (l *labCluster) sameHistory(node string, from int64, refusedKey string) {
	t := l.t
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// A marker written through the VIP ends both histories.
	marker, err := l.client.Create(ctx, &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "healed-", Namespace: "default"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := l.client.Delete(context.Background(), "configmaps", "default", marker.GetName(), store.DeleteOptions{}); err != nil {
			t.Error(err)
		}
	}()
	upTo, err := strconv.ParseInt(marker.GetResourceVersion(), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	through, err := apiclient.FromKubeconfig(l.kubeconfigFor(l.node(node).IP))
	if err != nil {
		t.Fatal(err)
	}
	history := func(c *apiclient.Client) []string {
		w, err := c.Watch(ctx, "configmaps", store.ListOptions{Namespace: "default"}, from)
		if err != nil {
			t.Fatalf("watch through %s: %v", c.Server(), err)
		}
		var seen []string
		for {
			select {
			case ev, ok := <-w:
				if !ok {
					t.Fatalf("the watch through %s ended after %d events", c.Server(), len(seen))
				}
				if ev.Object == nil {
					continue
				}
				if ev.Type == store.Deleted && ev.Object.GetName() == refusedKey {
					t.Errorf("the watch through %s shows the refused deletion of %s at revision %d", c.Server(), refusedKey, ev.Revision)
				}
				seen = append(seen, fmt.Sprintf("%s %s@%s", ev.Type, ev.Object.GetName(), ev.Object.GetResourceVersion()))
				if ev.Object.GetName() == marker.GetName() {
					return seen
				}
			case <-ctx.Done():
				t.Fatalf("the watch through %s: %d events, not the marker's (revision %d)", c.Server(), len(seen), upTo)
			}
		}
	}
	want, got := history(l.client), history(through)
	if !slices.Equal(got, want) {
		t.Fatalf("through %s the history since revision %d differs from the VIP's:\n%v\n%v", node, from, got, want)
	}
	if _, err := l.client.Get(ctx, "configmaps", "default", refusedKey); err != nil {
		t.Errorf("after the heal, %s: %v", refusedKey, err)
	}
}
