package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// TestLabThreeServers is the highly available control plane as an
// operator lives it: three servers, one on each node, replicate the store
// and the leader holds the API VIP that kubeconfigs and agents use.
//   - The leader's node dies during a rolling update: a new leader is
//     elected, kubectl through the VIP keeps working, the rollout finishes
//     with no pod lost or duplicated, and no acknowledged API write is
//     lost.
//   - With every server stopped, a node is killed and started: its pods
//     run again from its own state; when the servers return nothing is
//     duplicated.
//   - A dead server is removed and a fresh one joins in its place: the
//     group has three voters again.
func TestLabThreeServers(t *testing.T) {
	l := newLabWithRepo(t, 3, helloRepo(t, 6), "--servers", "3")
	ctx := t.Context()
	l.waitVoters(3)
	l.eventually("6 hello pods Running", 3*time.Minute, func() error { return l.helloRunning(6, "") })

	// Clients through every server while links are cut and restored.
	l.checkLinearizable()

	// Acknowledged writes, all along, through the VIP.
	w := l.startWriter(ctx)

	// A rolling update; the leader's node dies as it starts.
	deploy, err := os.ReadFile(filepath.Join(l.repo, "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	updated := strings.Replace(string(deploy), "  template:\n    metadata:\n", "  template:\n    metadata:\n      annotations:\n        rollout: second\n", 1)
	if updated == string(deploy) {
		t.Fatalf("cannot annotate the pod template of:\n%s", deploy)
	}
	l.commit("deployment.yaml", updated, "a rolling update")
	l.eventually("the rollout starts", 2*time.Minute, func() error {
		for _, p := range l.pods() {
			if p.Annotations["rollout"] == "second" {
				return nil
			}
		}
		return fmt.Errorf("no pod of the new template yet")
	})
	leader := l.leaderNode()
	killed := time.Now()
	l.lab("kill", leader)
	back := l.apiBack(time.Minute)
	t.Logf("the leader's node %s killed: the API answered through the VIP again after %s", leader, back.Sub(killed).Round(10*time.Millisecond))
	l.eventually("a new leader on another node", time.Minute, func() error {
		n, err := l.tryLeaderNode()
		if err != nil {
			return err
		}
		if n == leader {
			return fmt.Errorf("%s still leads", n)
		}
		return nil
	})
	l.eventually("the rollout finishes on the two nodes left", 4*time.Minute, func() error { return l.helloRunning(6, "second") })
	acked := w.stop()
	if len(acked) < 10 {
		t.Errorf("only %d writes were acknowledged: the writer did not run", len(acked))
	}
	l.checkAcked(acked)

	// The dead node returns: its server rejoins; nothing of it runs twice.
	l.lab("start", leader)
	l.waitVoters(3)
	l.eventually("the servers are healthy", time.Minute, func() error { return l.serversHealthy(3) })
	l.eventually("6 pods of the new template, each once", 2*time.Minute, func() error {
		if err := l.helloRunning(6, "second"); err != nil {
			return err
		}
		return l.eachPodOnce(leader)
	})

	// Every server down; a node killed and started again.
	l.checkAllServersDown()

	// A server dies for good: remove it, and join a fresh one in its place.
	l.checkReplaceServer()

	// Disaster: every server's data is lost; a snapshot brings it back.
	l.checkSnapshotRestore()
}

// helloRunning checks that exactly want hello pods exist (not being
// deleted), all Running, of the template annotated rollout=annotation
// ("": any).
func (l *labCluster) helloRunning(want int, annotation string) error {
	pods, err := l.tryPods()
	if err != nil {
		return err
	}
	n := 0
	for _, p := range pods {
		if p.Labels["app"] != "hello" {
			continue
		}
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || (annotation != "" && p.Annotations["rollout"] != annotation) {
			return fmt.Errorf("pod %s: phase %s, rollout=%q, deleting=%v", p.Name, p.Status.Phase, p.Annotations["rollout"], p.DeletionTimestamp != nil)
		}
		n++
	}
	if n != want {
		return fmt.Errorf("%d hello pods, want %d", n, want)
	}
	return nil
}

// eachPodOnce checks that node runs each pod bound to it once, and
// nothing else.
func (l *labCluster) eachPodOnce(node string) error {
	pods, err := l.tryPods()
	if err != nil {
		return err
	}
	bound := map[string]bool{}
	for _, p := range pods {
		if p.Spec.NodeName == node {
			bound[string(p.UID)] = true
		}
	}
	out, err := l.podmanCmd(node, "pod", "ps", "--filter", "status=running", "--format", `{{index .Labels "flotilla.dev/pod-uid"}}`).CombinedOutput()
	if err != nil {
		return fmt.Errorf("podman pod ps on %s: %v: %s", node, err, out)
	}
	seen := map[string]int{}
	for _, uid := range strings.Fields(string(out)) {
		if !bound[uid] {
			return fmt.Errorf("%s runs a pod of %s, which is not bound to it", node, uid)
		}
		if seen[uid]++; seen[uid] > 1 {
			return fmt.Errorf("%s runs pod %s twice", node, uid)
		}
	}
	return nil
}

// servers lists the store's servers as the server behind the VIP sees them.
func (l *labCluster) servers() ([]apiserver.ServerInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return l.client.Servers(ctx)
}

func (l *labCluster) waitVoters(n int) {
	l.t.Helper()
	l.eventually(fmt.Sprintf("%d voting servers", n), 2*time.Minute, func() error {
		servers, err := l.servers()
		if err != nil {
			return err
		}
		voters := 0
		for _, s := range servers {
			if s.Voter {
				voters++
			}
		}
		if voters != n || len(servers) != n {
			return fmt.Errorf("%d voters among %d servers: %+v", voters, len(servers), servers)
		}
		return nil
	})
}

// serversHealthy checks, through each server's own address, that n
// servers answer and agree on the leader.
func (l *labCluster) serversHealthy(n int) error {
	servers, err := l.servers()
	if err != nil {
		return err
	}
	if len(servers) != n {
		return fmt.Errorf("%d servers, want %d", len(servers), n)
	}
	leaders := map[uint64]bool{}
	for _, s := range servers {
		host, _, err := net.SplitHostPort(s.Address)
		if err != nil {
			return fmt.Errorf("server %s has address %q", s.Name, s.Address)
		}
		out, err := exec.Command(flotillaBin, "--kubeconfig", l.kubeconfigFor(host), "get", "servers", "-o", "json").Output()
		if err != nil {
			return fmt.Errorf("get servers through %s: %v: %s", host, err, out)
		}
		var list apiserver.ServerList
		if err := json.Unmarshal(out, &list); err != nil {
			return fmt.Errorf("get servers through %s: %v: %s", host, err, out)
		}
		for _, x := range list.Items {
			if x.Role == "leader" {
				leaders[x.ID] = true
			}
		}
	}
	if len(leaders) != 1 {
		return fmt.Errorf("the servers name %d leaders: %v", len(leaders), leaders)
	}
	return nil
}

// kubeconfigFor is the lab's kubeconfig with its server replaced by host
// (a server's own address instead of the VIP).
func (l *labCluster) kubeconfigFor(host string) string {
	data, err := os.ReadFile(filepath.Join(l.dir, "kubeconfig.yaml"))
	if err != nil {
		l.t.Fatal(err)
	}
	vip := l.client.Server()
	u := strings.TrimPrefix(vip, "https://")
	vipHost, port, _ := net.SplitHostPort(u)
	path := filepath.Join(l.t.TempDir(), "kubeconfig-"+host)
	replaced := strings.Replace(string(data), "https://"+net.JoinHostPort(vipHost, port), "https://"+net.JoinHostPort(host, port), 1)
	if err := os.WriteFile(path, []byte(replaced), 0o600); err != nil {
		l.t.Fatal(err)
	}
	return path
}

// serverClient is an API client of server s's own address (not the
// VIP), and that address's host.
func (l *labCluster) serverClient(s apiserver.ServerInfo) (*apiclient.Client, string) {
	l.t.Helper()
	host, _, err := net.SplitHostPort(s.Address)
	if err != nil {
		l.t.Fatal(err)
	}
	c, err := apiclient.FromKubeconfig(l.kubeconfigFor(host))
	if err != nil {
		l.t.Fatal(err)
	}
	return c, host
}

// tryLeaderNode is the lab node the leader runs on (server i on node i,
// found by its peer address).
func (l *labCluster) tryLeaderNode() (string, error) {
	servers, err := l.servers()
	if err != nil {
		return "", err
	}
	for _, s := range servers {
		if s.Role != "leader" {
			continue
		}
		host, _, err := net.SplitHostPort(s.Address)
		if err != nil {
			return "", err
		}
		for _, n := range []string{"node1", "node2", "node3"} {
			if l.node(n).IP == host {
				return n, nil
			}
		}
		return "", fmt.Errorf("the leader %s at %s is on no node", s.Name, s.Address)
	}
	return "", fmt.Errorf("no leader among %+v", servers)
}

func (l *labCluster) leaderNode() string {
	l.t.Helper()
	n, err := l.tryLeaderNode()
	if err != nil {
		l.t.Fatal(err)
	}
	return n
}

// apiBack waits until the API answers through the kubeconfig's address
// (the VIP) and returns when it did.
func (l *labCluster) apiBack(timeout time.Duration) time.Time {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _, err := l.client.List(ctx, "namespaces", store.ListOptions{})
		cancel()
		if err == nil {
			return time.Now()
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("the API does not answer through %s %s after the leader died: %v", l.client.Server(), timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writer creates ConfigMaps through the VIP, one after another, and
// records those the API acknowledged.
type writer struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	acked  []string
}

func (l *labCluster) startWriter(ctx context.Context) *writer {
	ctx, cancel := context.WithCancel(ctx)
	w := &writer{cancel: cancel}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("acked-%d", i)
			cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"},
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Data: map[string]string{"i": fmt.Sprint(i)}}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := l.client.Create(wctx, cm)
			cancel()
			if err == nil {
				w.mu.Lock()
				w.acked = append(w.acked, name)
				w.mu.Unlock()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return w
}

func (w *writer) stop() []string {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.acked...)
}

// checkAcked checks that every acknowledged write is in the store.
func (l *labCluster) checkAcked(acked []string) {
	l.t.Helper()
	objs, _, err := l.client.List(context.Background(), "configmaps", store.ListOptions{Namespace: "default"})
	if err != nil {
		l.t.Fatal(err)
	}
	have := map[string]bool{}
	for _, o := range objs {
		have[o.GetName()] = true
	}
	lost := 0
	for _, name := range acked {
		if !have[name] {
			lost++
			l.t.Errorf("acknowledged write %s is lost", name)
		}
	}
	l.t.Logf("%d acknowledged writes across the failover, %d lost", len(acked), lost)
}

// checkAllServersDown stops every server, kills a node and starts it (its
// own server comes back, alone: a minority, no API): its pods answer again
// from the agent's own state; once the servers return nothing of it runs
// twice.
func (l *labCluster) checkAllServersDown() {
	t := l.t
	var victim *corev1.Pod
	for _, n := range []string{"node2", "node3", "node1"} {
		for _, p := range l.podsOn(n) {
			victim = p
		}
		if victim != nil {
			break
		}
	}
	if victim == nil {
		t.Fatal("no hello pod to follow")
	}
	dead := victim.Spec.NodeName
	probe := l.node(dead)
	l.lab("stop-server")
	l.lab("kill", dead)
	killed := time.Now()
	l.lab("start", dead)
	if err := testkit.Wait(t.Context(), 2*time.Minute, func() error {
		out, err := l.podmanCmd(dead, "pod", "ps", "--filter", "status=running", "--format", `{{index .Labels "flotilla.dev/pod-uid"}}`).CombinedOutput()
		if err != nil {
			return fmt.Errorf("podman pod ps: %v: %s", err, out)
		}
		if !strings.Contains(string(out), string(victim.UID)) {
			return fmt.Errorf("%s's pod %s does not run: %s", dead, victim.Name, out)
		}
		return nil
	}); err != nil {
		t.Fatalf("with every server down, %s's pod did not run again: %v", probe.Name, err)
	}
	took := time.Since(killed)
	t.Logf("%s killed and started with every server down: its pod %s ran again %s after the kill", dead, victim.Name, took.Round(time.Second))
	if took > 20*time.Second { // the figure is 30 s: say where the time went
		if data, err := os.ReadFile(filepath.Join(l.dir, "logs", dead+".log")); err == nil {
			t.Logf("%s's agent, the start without servers took %s:\n%s", dead, took.Round(time.Second), tail(string(data), 60))
		}
	}
	l.lab("start-server")
	l.waitVoters(3)
	l.eventually("6 hello pods Running after the outage", 3*time.Minute, func() error { return l.helloRunning(6, "") })
	for _, n := range []string{"node1", "node2", "node3"} {
		l.eventually(n+" runs each of its pods once", time.Minute, func() error { return l.eachPodOnce(n) })
	}
}

func (l *labCluster) podsOn(node string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range l.pods() {
		if p.Spec.NodeName == node && p.Labels["app"] == "hello" && p.Status.Phase == corev1.PodRunning {
			out = append(out, p)
		}
	}
	return out
}

// checkReplaceServer kills a follower's node, removes its server from the
// group, wipes its data dir and starts the node again: the server joins
// afresh with the lab's server join token, and the group has three
// voters, all healthy.
func (l *labCluster) checkReplaceServer() {
	t := l.t
	leader := l.leaderNode()
	victim := "node2"
	if leader == victim {
		victim = "node3"
	}
	ip := l.node(victim).IP
	servers, err := l.servers()
	if err != nil {
		t.Fatal(err)
	}
	var gone string
	for _, s := range servers {
		if strings.HasPrefix(s.Address, ip+":") {
			gone = s.Name
		}
	}
	if gone == "" {
		t.Fatalf("no server at %s among %+v", ip, servers)
	}
	l.lab("kill", victim)
	out, err := exec.Command(flotillaBin, "--kubeconfig", filepath.Join(l.dir, "kubeconfig.yaml"), "server", "remove", gone).CombinedOutput()
	if err != nil {
		t.Fatalf("flotilla server remove %s: %v\n%s", gone, err, out)
	}
	l.waitVoters(2)
	if err := os.RemoveAll(filepath.Join(l.dir, "servers", "server"+strings.TrimPrefix(victim, "node"))); err != nil {
		t.Fatal(err)
	}
	l.lab("start", victim)
	l.waitVoters(3)
	servers, err = l.servers()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		if s.Name == gone {
			t.Errorf("the removed server %s is back in the group: %+v", gone, servers)
		}
	}
	l.eventually("the servers are healthy", time.Minute, func() error { return l.serversHealthy(3) })
	t.Logf("server %s removed and a fresh server joined on %s: %d voters", gone, victim, len(servers))
}

// checkSnapshotRestore saves a snapshot through the VIP, stops every
// server and wipes their data dirs, restores the snapshot into the first
// server's and starts them all: the first founds the group again from the
// snapshot, the others join it afresh; every object is back with its UID
// and cluster IP, and the nodes' pods are adopted without a restart.
func (l *labCluster) checkSnapshotRestore() {
	t := l.t
	// A StatefulSet's claim, bound to a volume: state that only the store
	// holds (the repository has the template, not the binding).
	l.commit("stateful.yaml", claimStatefulSet, "a StatefulSet with a claim")
	var claim *corev1.PersistentVolumeClaim
	l.eventually("data-0 Running, its claim Bound", 3*time.Minute, func() error {
		pod, err := l.client.Get(context.Background(), "pods", "default", "data-0")
		if err != nil {
			return err
		}
		if phase := pod.(*corev1.Pod).Status.Phase; phase != corev1.PodRunning {
			return fmt.Errorf("data-0 is %s", phase)
		}
		obj, err := l.client.Get(context.Background(), "persistentvolumeclaims", "default", "www-data-0")
		if err != nil {
			return err
		}
		claim = obj.(*corev1.PersistentVolumeClaim)
		if claim.Status.Phase != corev1.ClaimBound || claim.Spec.VolumeName == "" {
			return fmt.Errorf("claim www-data-0 is %s, volume %q", claim.Status.Phase, claim.Spec.VolumeName)
		}
		return nil
	})
	pvObj, err := l.client.Get(context.Background(), "persistentvolumes", "", claim.Spec.VolumeName)
	if err != nil {
		t.Fatal(err)
	}
	pv := pvObj.(*corev1.PersistentVolume)
	kubeconfig := filepath.Join(l.dir, "kubeconfig.yaml")
	pass := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pass, []byte("a passphrase for the lab's snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "cluster.snap")
	if out, err := exec.Command(flotillaBin, "--kubeconfig", kubeconfig, "snapshot", "save", file, "--passphrase-file", pass).CombinedOutput(); err != nil {
		t.Fatalf("snapshot save: %v\n%s", err, out)
	}
	before := map[string]string{} // kind/ns/name → uid
	var svcIP string
	for _, res := range []string{"configmaps", "services", "pods", "deployments", "statefulsets", "persistentvolumeclaims"} {
		objs, _, err := l.client.List(context.Background(), res, store.ListOptions{Namespace: "default"})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			before[res+"/"+o.GetName()] = string(o.GetUID())
			if svc, ok := o.(*corev1.Service); ok && svc.Name == "hello" {
				svcIP = svc.Spec.ClusterIP
			}
		}
	}
	// node/container ID → its start time: the running containers.
	running := func() map[string]string {
		m := map[string]string{}
		for _, n := range []string{"node1", "node2", "node3"} {
			for _, line := range strings.Split(strings.TrimSpace(l.podman(n, "ps", "--format", "{{.ID}} {{.StartedAt}}")), "\n") {
				if f := strings.Fields(line); len(f) == 2 {
					m[n+"/"+f[0]] = f[1]
				}
			}
		}
		return m
	}
	starts := running()
	if len(starts) < 6 {
		t.Fatalf("only %d containers run before the restore: %v", len(starts), starts)
	}

	l.lab("stop-server")
	for _, d := range []string{"server", "servers"} {
		if err := os.RemoveAll(filepath.Join(l.dir, d)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(flotillaBin, "snapshot", "restore", file, "--data-dir", filepath.Join(l.dir, "server"), "--passphrase-file", pass).CombinedOutput(); err != nil {
		t.Fatalf("snapshot restore: %v\n%s", err, out)
	}
	l.lab("start-server")
	l.waitVoters(3)
	l.eventually("6 hello pods Running after the restore", 3*time.Minute, func() error { return l.helloRunning(6, "") })
	for key, uid := range before {
		res, name, _ := strings.Cut(key, "/")
		if res == "pods" {
			continue // pods are checked on the nodes below
		}
		obj, err := l.client.Get(context.Background(), res, "default", name)
		if err != nil {
			t.Errorf("after the restore, %s: %v", key, err)
			continue
		}
		if string(obj.GetUID()) != uid {
			t.Errorf("after the restore, %s has UID %s, want %s", key, obj.GetUID(), uid)
		}
		if svc, ok := obj.(*corev1.Service); ok && svc.Name == "hello" && svc.Spec.ClusterIP != svcIP {
			t.Errorf("after the restore, the hello Service's cluster IP is %s, want %s", svc.Spec.ClusterIP, svcIP)
		}
	}
	// Every server holds the restored objects, not only the one restored:
	// the others joined it afresh.
	servers, err := l.servers()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		c, host := l.serverClient(s)
		for _, key := range []string{"services/hello", "persistentvolumeclaims/" + claim.Name, "pods/data-0"} {
			res, name, _ := strings.Cut(key, "/")
			obj, err := c.Get(context.Background(), res, "default", name)
			if err != nil {
				t.Errorf("after the restore, server %s (%s): %s: %v", s.Name, host, key, err)
			} else if string(obj.GetUID()) != before[key] {
				t.Errorf("after the restore, server %s (%s): %s has UID %s, want %s", s.Name, host, key, obj.GetUID(), before[key])
			}
		}
	}
	// The claim is bound to the same volume, which is bound to it.
	if obj, err := l.client.Get(context.Background(), "persistentvolumeclaims", "default", claim.Name); err != nil {
		t.Errorf("after the restore, claim %s: %v", claim.Name, err)
	} else if c := obj.(*corev1.PersistentVolumeClaim); c.Spec.VolumeName != pv.Name || c.Status.Phase != corev1.ClaimBound {
		t.Errorf("after the restore, claim %s is %s to volume %q, want Bound to %s", c.Name, c.Status.Phase, c.Spec.VolumeName, pv.Name)
	}
	if obj, err := l.client.Get(context.Background(), "persistentvolumes", "", pv.Name); err != nil {
		t.Errorf("after the restore, volume %s: %v", pv.Name, err)
	} else if v := obj.(*corev1.PersistentVolume); v.UID != pv.UID || v.Spec.ClaimRef == nil || v.Spec.ClaimRef.UID != claim.UID {
		t.Errorf("after the restore, volume %s (UID %s, claim %+v), want UID %s bound to claim UID %s", v.Name, v.UID, v.Spec.ClaimRef, pv.UID, claim.UID)
	}
	// The nodes' containers are the same ones, not restarted.
	for _, n := range []string{"node1", "node2", "node3"} {
		l.eventually(n+" runs each of its pods once after the restore", time.Minute, func() error { return l.eachPodOnce(n) })
	}
	after := running()
	for id, was := range starts {
		if now, ok := after[id]; !ok || now != was {
			t.Errorf("container %s (started %s) no longer runs as it did after the restore (now %q)", id, was, now)
		}
	}
	t.Logf("snapshot restored into a wiped group: %d objects back with their UIDs, claim %s bound to %s, %d containers ran on untouched", len(before), claim.Name, pv.Name, len(starts))
}

// claimStatefulSet is a StatefulSet of one replica whose claim (a class-less
// one: a local volume on the pod's node) comes from its template.
const claimStatefulSet = `apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: data
spec:
  serviceName: data
  replicas: 1
  selector:
    matchLabels:
      app: data
  template:
    metadata:
      labels:
        app: data
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: localhost/busybox:latest
        imagePullPolicy: IfNotPresent
        command: ["/bin/sh", "-c", "trap 'exit 0' TERM; date > /data/started; sleep 3600 & wait"]
        volumeMounts:
        - name: www
          mountPath: /data
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 10Mi
`
