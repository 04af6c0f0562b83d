package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/examples"
)

// The end-to-end benchmarks of `make bench`. Each runs one isolated
// `flotilla up` and takes its own samples whatever b.N is: run them with
// -benchtime 1x.

// benchCommits is how many commits BenchmarkCommitToRunning times.
const benchCommits = 7

// BenchmarkCommitToRunning times `git commit` of a new Deployment of 10
// replicas → all 10 pods Running on one node, over benchCommits commits.
// Each sample starts from an idle node: the previous Deployment is removed
// by a commit of its own, and its pods are gone, before the timed commit
// (issue 2's figure, p50-s). For the record it then times the same with the
// removal in the timed commit (replace-p50-s): the new pods start while
// Podman stops and removes the old ones, which on a small node costs
// Podman more than the starts themselves.
func BenchmarkCommitToRunning(b *testing.B) {
	c := newUpCluster(b)
	c.start()
	c.git("rm", "-q", "deployment.yaml", "configmap.yaml")
	// commit commits the work tree and returns when app's 10 pods are
	// Running, after how long.
	commit := func(app, msg string) time.Duration {
		c.git("add", "-A")
		start := time.Now()
		c.git("commit", "-qm", msg)
		c.eventually(app+": 10 pods Running", 3*time.Minute, func() error {
			return runningPods(c, app, 10)
		})
		return time.Since(start)
	}
	// settle waits until only n pods are left, in the store and in Podman
	// (the agent stops and removes a pod after it left the store).
	settle := func(what string, n int) {
		c.eventually(what, 3*time.Minute, func() error {
			if got := len(c.pods()); got != n {
				return fmt.Errorf("%d pods, want %d", got, n)
			}
			out, err := c.podmanCLI("ps", "-aq")
			if err != nil {
				return err
			}
			if got := len(strings.Fields(out)); got != n {
				return fmt.Errorf("%d containers in Podman, want %d", got, n)
			}
			return nil
		})
	}
	var fresh, replace []time.Duration
	for i := 0; i <= benchCommits; i++ {
		if i > 0 {
			if err := os.Remove(filepath.Join(c.dataDir, "repo", "bench.yaml")); err != nil {
				b.Fatal(err)
			}
			c.git("add", "-A")
			c.git("commit", "-qm", fmt.Sprintf("remove bench-%d", i-1))
			settle("the node is idle", 0)
		}
		app := fmt.Sprintf("bench-%d", i)
		if err := writeRepoFile(c, "bench.yaml", benchDeployment(app, 10)); err != nil {
			b.Fatal(err)
		}
		took := commit(app, app)
		if i > 0 { // the first commit also prunes the example: not a sample
			fresh = append(fresh, took)
			b.Logf("commit %d: 10 pods Running after %v", i, took.Round(time.Millisecond))
		}
	}
	for i := 1; i <= benchCommits; i++ {
		app := fmt.Sprintf("replace-%d", i)
		if err := writeRepoFile(c, "bench.yaml", benchDeployment(app, 10)); err != nil {
			b.Fatal(err)
		}
		took := commit(app, app)
		replace = append(replace, took)
		b.Logf("replacing commit %d: 10 pods Running after %v (10 others stopped meanwhile)", i, took.Round(time.Millisecond))
		settle("only "+app+"'s pods are left", 10)
	}
	p50, lo, hi := stats(fresh)
	b.ReportMetric(p50.Seconds(), "p50-s")
	b.ReportMetric(lo.Seconds(), "min-s")
	b.ReportMetric(hi.Seconds(), "max-s")
	rp50, _, _ := stats(replace)
	b.ReportMetric(rp50.Seconds(), "replace-p50-s")
}

// BenchmarkPodStartVsPodmanRun compares, in one run on the same Podman
// storage and configuration, the start of a pod through Flotilla (API
// create of a pod bound to the node, through Pod Security admission, with
// a restricted security context → status Running) with a plain `podman
// run -d` of the same container. Medians of 7 each.
func BenchmarkPodStartVsPodmanRun(b *testing.B) {
	c := newUpCluster(b)
	c.start()
	c.eventually("the example runs (the image is loaded)", 3*time.Minute, func() error { return readyPods(c.pods(), 2, "1") })
	node := c.args[len(c.args)-1]
	var plain, flot []time.Duration
	for i := 0; i < 7; i++ {
		name := fmt.Sprintf("plain-%s-%d", randomHex(b, 3), i)
		start := time.Now()
		out, err := c.podmanCLI("run", "-d", "--name", name, "--network", "none", examples.HelloImage,
			"/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait")
		if err != nil {
			b.Fatalf("podman run: %v: %s", err, out)
		}
		plain = append(plain, time.Since(start))
		_, _ = c.podmanCLI("rm", "-f", "-t", "0", name)

		// Timed to the watch event that says Running, not by polling
		// (whose period would be most of the figure).
		pod := benchPod(fmt.Sprintf("podstart-%d", i), node)
		ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
		events, err := c.client.Watch(ctx, "pods", store.ListOptions{Namespace: "default", FieldSelector: "metadata.name=" + pod.Name}, 0)
		if err != nil {
			b.Fatalf("watch pod %s: %v", pod.Name, err)
		}
		start = time.Now()
		if _, err := c.client.Create(b.Context(), pod); err != nil {
			b.Fatalf("create pod: %v", err)
		}
		var took time.Duration
		for ev := range events {
			if p, ok := ev.Object.(*corev1.Pod); ok && p.Status.Phase == corev1.PodRunning {
				took = time.Since(start)
				break
			}
		}
		cancel()
		if took == 0 {
			b.Fatalf("pod %s: the watch ended before the pod was Running (within a minute?)", pod.Name)
		}
		flot = append(flot, took)
		if _, err := c.client.Delete(b.Context(), "pods", "default", pod.Name, store.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	pp, _, _ := stats(plain)
	fp, _, _ := stats(flot)
	b.Logf("podman run -d: median %v; Flotilla pod start: median %v", pp.Round(time.Millisecond), fp.Round(time.Millisecond))
	b.ReportMetric(pp.Seconds(), "podman-run-s")
	b.ReportMetric(fp.Seconds(), "flotilla-s")
	b.ReportMetric(fp.Seconds()/pp.Seconds(), "ratio")
}

func benchDeployment(app string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
spec:
  replicas: %[2]d
  selector:
    matchLabels:
      app: %[1]s
  template:
    metadata:
      labels:
        app: %[1]s
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: %[3]s
          imagePullPolicy: IfNotPresent
          command: ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
`, app, replicas, examples.HelloImage)
}

// benchPod is a pod that Pod Security's restricted level admits, with the
// security context it asks for (issue 11's figure: a pod start with
// securityContext and PSA against a plain podman run).
func benchPod(name, node string) *corev1.Pod {
	grace := int64(1)
	yes, no, uid := true, false, int64(1000)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: &grace,
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "main", Image: examples.HelloImage, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		},
	}
}

// runningPods is nil when app has exactly n pods, all Running.
func runningPods(c *upCluster, app string, n int) error {
	running := 0
	for _, p := range c.pods() {
		if p.Labels["app"] == app && p.Status.Phase == corev1.PodRunning {
			running++
		}
	}
	if running != n {
		return fmt.Errorf("%d of %d Running", running, n)
	}
	return nil
}

func stats(d []time.Duration) (p50, lo, hi time.Duration) {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[0], s[len(s)-1]
}

// BenchmarkLabFailover measures, in a 3-node lab of the real binary, how
// long after `lab kill` the node is NotReady, and how long until all its
// pods run again on the other nodes (the server's pod eviction timeout is
// the lab's default, 30 s).
func BenchmarkLabFailover(b *testing.B) {
	l := newLab(b, 3)
	deploy, err := os.ReadFile(filepath.Join(l.dir, "server", "repo", "deployment.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	l.commit("deployment.yaml", strings.Replace(string(deploy), "replicas: 2", "replicas: 6", 1), "six replicas")
	l.eventually("6 pods Running on 3 nodes", 3*time.Minute, func() error {
		nodes := map[string]bool{}
		for _, p := range l.pods() {
			if p.Status.Phase == corev1.PodRunning {
				nodes[p.Spec.NodeName] = true
			}
		}
		if len(nodes) != 3 {
			return fmt.Errorf("pods Running on %d nodes", len(nodes))
		}
		return nil
	})
	start := time.Now()
	l.lab("kill", "node2")
	var notReady time.Duration
	l.eventually("node2 NotReady", time.Minute, func() error {
		if ready, err := l.nodeReady("node2"); err != nil || ready {
			return fmt.Errorf("ready=%v err=%v", ready, err)
		}
		notReady = time.Since(start)
		return nil
	})
	l.eventually("6 pods Running elsewhere", 3*time.Minute, func() error {
		running := 0
		for _, p := range l.pods() {
			if p.Spec.NodeName != "node2" && p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running != 6 {
			return fmt.Errorf("%d Running off node2", running)
		}
		return nil
	})
	moved := time.Since(start)
	b.Logf("node killed → NotReady %v; → its pods Running elsewhere %v", notReady.Round(10*time.Millisecond), moved.Round(10*time.Millisecond))
	b.ReportMetric(notReady.Seconds(), "notready-s")
	b.ReportMetric(moved.Seconds(), "rescheduled-s")

	// node2 joins again as a new machine would: its Node deleted, its keys
	// and certificates gone, nothing but the join token. Timed from the
	// agent's start: token → certificates → Node Ready.
	if _, err := l.client.Delete(context.Background(), "nodes", "", "node2", store.DeleteOptions{}); err != nil {
		b.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(l.node("node2").DataDir, "pki")); err != nil {
		b.Fatal(err)
	}
	start = time.Now()
	l.lab("start", "node2")
	l.eventually("node2 joined again and Ready", 2*time.Minute, func() error {
		if ready, err := l.nodeReady("node2"); err != nil || !ready {
			return fmt.Errorf("ready=%v err=%v", ready, err)
		}
		return nil
	})
	joined := time.Since(start)
	b.Logf("a node joins with the token: → Ready in %v", joined.Round(10*time.Millisecond))
	b.ReportMetric(joined.Seconds(), "join-s")
}
