package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// BenchmarkLabThreeServers measures a lab of three servers (one Raft
// group, the API VIP) and three nodes, through the real binary (issue 13):
//
//   - commit → 10 pods Running: `git commit` of a new Deployment of 10
//     replicas until all 10 are Running on the nodes, over benchCommits
//     commits, each from idle nodes (p50-s, as BenchmarkCommitToRunning
//     times one server);
//
//   - each server's resident memory (VmRSS, the largest of each second
//     over 30 s, max-rss-mb the largest of the three) while the store holds
//     1,000 pods: a Deployment of 990 replicas that no node may run (a
//     two-core lab cannot run 1,000 containers), so Pending, and 10 Running.
//
//     go test -run '^$' -bench BenchmarkLabThreeServers -benchtime 1x -v ./cmd/flotilla/
func BenchmarkLabThreeServers(b *testing.B) {
	l := newLabWithRepo(b, 3, helloRepo(b, 0), "--servers", "3")
	l.waitVoters(3)
	if err := os.Remove(filepath.Join(l.repo, "deployment.yaml")); err != nil {
		b.Fatal(err)
	}
	running := func(app string, n int) error {
		pods, err := l.tryPods()
		if err != nil {
			return err
		}
		ok := 0
		for _, p := range pods {
			if p.Labels["app"] == app && p.Status.Phase == corev1.PodRunning {
				ok++
			}
		}
		if ok != n {
			return fmt.Errorf("%d of %d Running", ok, n)
		}
		return nil
	}
	// idle: no pod in the store, no container on any node.
	idle := func() error {
		if pods, err := l.tryPods(); err != nil || len(pods) > 0 {
			return fmt.Errorf("%d pods (%v)", len(pods), err)
		}
		for _, node := range []string{"node1", "node2", "node3"} {
			out, err := l.podmanCmd(node, "ps", "-aq").Output()
			if err != nil {
				return fmt.Errorf("podman ps on %s: %w", node, err)
			}
			if n := len(strings.Fields(string(out))); n > 0 {
				return fmt.Errorf("%d containers left on %s", n, node)
			}
		}
		return nil
	}
	var took []time.Duration
	for i := 0; i <= benchCommits; i++ {
		if i > 0 {
			if err := os.Remove(filepath.Join(l.repo, "bench.yaml")); err != nil {
				b.Fatal(err)
			}
			l.commitAll(fmt.Sprintf("remove bench-%d", i-1))
		}
		l.eventually("the nodes are idle", 3*time.Minute, idle)
		app := fmt.Sprintf("bench-%d", i)
		if err := os.WriteFile(filepath.Join(l.repo, "bench.yaml"), []byte(benchDeployment(app, 10)), 0o644); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		l.commitAll(app)
		for err := running(app, 10); err != nil; err = running(app, 10) {
			if time.Since(start) > 3*time.Minute {
				b.Fatalf("%s: 10 pods not Running after 3m: %v", app, err)
			}
			time.Sleep(50 * time.Millisecond) // (l.eventually's 500 ms would be the resolution)
		}
		if i > 0 { // the first commit also prunes the example: not a sample
			took = append(took, time.Since(start))
			b.Logf("3 servers: commit %d: 10 pods Running after %v", i, took[len(took)-1].Round(time.Millisecond))
		}
	}
	p50, lo, hi := stats(took)
	b.ReportMetric(p50.Seconds(), "p50-s")
	b.ReportMetric(lo.Seconds(), "min-s")
	b.ReportMetric(hi.Seconds(), "max-s")

	// 1,000 pods in the store: the 10 Running and 990 Pending.
	pending := strings.Replace(benchDeployment("pending", 990), "    spec:\n",
		"    spec:\n      nodeSelector:\n        flotilla.dev/bench: nowhere\n", 1)
	if err := os.WriteFile(filepath.Join(l.repo, "pending.yaml"), []byte(pending), 0o644); err != nil {
		b.Fatal(err)
	}
	l.commitAll("990 pods no node may run")
	l.eventually("1,000 pods in the store", 5*time.Minute, func() error {
		if pods, err := l.tryPods(); err != nil || len(pods) != 1000 {
			return fmt.Errorf("%d pods (%v)", len(pods), err)
		}
		return nil
	})
	pids := l.serverPIDs()
	peak := map[string]int64{}
	for range 30 {
		for name, pid := range pids {
			kib, err := procRSSKiB(pid)
			if err != nil {
				b.Fatalf("%s: %v", name, err)
			}
			peak[name] = max(peak[name], kib)
		}
		time.Sleep(time.Second)
	}
	var most float64
	for name, kib := range peak {
		mb := float64(kib) * 1024 / 1e6
		b.Logf("3 servers, 1,000 pods: %s %.0f MB (max VmRSS over 30 s)", name, mb)
		most = max(most, mb)
	}
	b.ReportMetric(most, "max-rss-mb")
}

// commitAll commits every change of the lab's repository.
func (l *labCluster) commitAll(msg string) {
	l.t.Helper()
	cmd := exec.Command("sh", "-c", "git add -A && git -c user.name=e2e -c user.email=e2e@localhost commit -qm \""+msg+"\"")
	cmd.Dir = l.repo
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("commit: %v\n%s", err, out)
	}
}

// serverPIDs are the lab's server processes (server, server2, …) by name.
func (l *labCluster) serverPIDs() map[string]int {
	l.t.Helper()
	data, err := os.ReadFile(filepath.Join(l.dir, "lab.json"))
	if err != nil {
		l.t.Fatal(err)
	}
	var st struct {
		Procs []struct {
			Name string `json:"name"`
			PID  int    `json:"pid"`
		} `json:"processes"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		l.t.Fatal(err)
	}
	out := map[string]int{}
	for _, p := range st.Procs {
		if strings.HasPrefix(p.Name, "server") {
			out[p.Name] = p.PID
		}
	}
	if len(out) == 0 {
		l.t.Fatalf("no server process in %s/lab.json", l.dir)
	}
	return out
}
