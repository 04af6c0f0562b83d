package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/join"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/examples"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/netfabric"
)

// labCluster is a `flotilla lab` of the real binary, for the multi-node
// end-to-end tests, with its own name and subnet so it can run beside
// others on the host.
type labCluster struct {
	t      testing.TB
	dir    string
	repo   string // the repository the server syncs (commit writes there)
	client *apiclient.Client
}

// newLab is `flotilla lab up` with the server's own copy of examples/hello.
func newLab(t testing.TB, nodes int) *labCluster {
	t.Helper()
	return newLabWithRepo(t, nodes, "")
}

// newLabWithRepo is `flotilla lab up --repo repo` ("": none given).
func newLabWithRepo(t testing.TB, nodes int, repo string) *labCluster {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("lab tests need root (network namespaces, Podman)")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("lab tests need podman (make deps installs it)")
	}
	l := &labCluster{t: t, dir: filepath.Join(t.TempDir(), "lab"), repo: repo}
	if repo == "" {
		l.repo = filepath.Join(l.dir, "server", "repo")
	}
	name := "fe" + randomHex(t, 3)
	subnet := fmt.Sprintf("10.93.%d.0/24", 1+int(randomByte(t))%250) // not 10.96/16: the service CIDR
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"server.log", "node1.log", "node2.log", "node3.log"} {
				if data, err := os.ReadFile(filepath.Join(l.dir, "logs", f)); err == nil {
					t.Logf("%s:\n%s", f, tail(string(data), 30))
				}
			}
		}
		if out, err := exec.Command(flotillaBin, "lab", "down", "--dir", l.dir).CombinedOutput(); err != nil {
			t.Errorf("flotilla lab down: %v\n%s", err, out)
		}
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), name+"-") {
			t.Errorf("after lab down, namespaces of %s are left:\n%s", name, out)
		}
	})
	args := []string{"lab", "up", "--dir", l.dir, "--nodes", fmt.Sprint(nodes), "--name", name, "--subnet", subnet, "--timeout", "3m"}
	if repo != "" {
		args = append(args, "--repo", repo)
	}
	out, err := exec.Command(flotillaBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("flotilla lab up: %v\n%s", err, out)
	}
	if l.client, err = apiclient.FromKubeconfig(filepath.Join(l.dir, "kubeconfig.yaml")); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *labCluster) lab(args ...string) {
	l.t.Helper()
	if out, err := exec.Command(flotillaBin, append([]string{"lab"}, append(args, "--dir", l.dir)...)...).CombinedOutput(); err != nil {
		l.t.Fatalf("flotilla lab %v: %v\n%s", args, err, out)
	}
}

func (l *labCluster) commit(file, content, msg string) {
	l.t.Helper()
	if err := os.WriteFile(filepath.Join(l.repo, file), []byte(content), 0o644); err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "git add -A && git -c user.name=e2e -c user.email=e2e@localhost commit -qm \""+msg+"\"")
	cmd.Dir = l.repo
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("commit: %v\n%s", err, out)
	}
}

func (l *labCluster) pods() []*corev1.Pod {
	pods, err := l.tryPods()
	if err != nil {
		l.t.Fatalf("list pods: %v", err)
	}
	return pods
}

// tryPods lists the pods, or says why the API did not answer.
func (l *labCluster) tryPods() ([]*corev1.Pod, error) {
	objs, _, err := l.client.List(context.Background(), "pods", store.ListOptions{Namespace: "default"})
	if err != nil {
		return nil, err
	}
	out := make([]*corev1.Pod, len(objs))
	for i, o := range objs {
		out[i] = o.(*corev1.Pod)
	}
	return out, nil
}

func (l *labCluster) nodeReady(name string) (bool, error) {
	obj, err := l.client.Get(context.Background(), "nodes", "", name)
	if err != nil {
		return false, err
	}
	return nodeReady(obj.(*corev1.Node)), nil
}

// labNode is what the lab recorded of a node.
type labNode struct {
	Name        string `json:"name"`
	IP          string `json:"ip"`
	PodmanRoot  string `json:"podmanRoot"`
	RunRoot     string `json:"runRoot"`
	DataDir     string `json:"dataDir"`
	NetNSPrefix string `json:"netnsPrefix"`
}

func (l *labCluster) node(name string) labNode {
	l.t.Helper()
	data, err := os.ReadFile(filepath.Join(l.dir, "lab.json"))
	if err != nil {
		l.t.Fatal(err)
	}
	var st struct {
		Nodes []labNode `json:"nodes"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		l.t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.Name == name {
			return n
		}
	}
	l.t.Fatalf("no node %s in the lab", name)
	return labNode{}
}

// podmanCmd is the podman CLI on a node's storage.
func (l *labCluster) podmanCmd(node string, args ...string) *exec.Cmd {
	n := l.node(node)
	cmd := exec.Command("podman", append([]string{"--root", n.PodmanRoot, "--runroot", n.RunRoot, "--tmpdir", filepath.Join(n.RunRoot, "libpod-tmp")}, args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(n.DataDir, "podman", "containers.conf"))
	return cmd
}

// podman runs the podman CLI on a node's storage; a failure fails the test.
func (l *labCluster) podman(node string, args ...string) string {
	out, err := l.podmanCmd(node, args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("podman %v on %s: %v\n%s", args, node, err, out)
	}
	return string(out)
}

// httpFromPod sends GET / to ip:8080 from inside the pod's network
// namespace on its node, as the pod itself would.
func httpFromPod(netnsPath, ip string) (string, error) {
	var last string
	err := netfabric.InNetNS(netnsPath, func() error {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip, "8080"), 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET / HTTP/1.0\r\n\r\n")
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			last = sc.Text()
		}
		return nil
	})
	return last, err
}

const duoPod = `apiVersion: v1
kind: Pod
metadata:
  name: duo
spec:
  containers:
    - name: web
      image: localhost/busybox:latest
      imagePullPolicy: IfNotPresent
      command: ["/bin/sh", "-c", "trap 'exit 0' TERM; mkdir -p /www && echo duo > /www/index.html && httpd -f -p 8080 -h /www & wait"]
    - name: client
      image: localhost/busybox:latest
      imagePullPolicy: IfNotPresent
      command: ["/bin/sh", "-c", "trap 'exit 0' TERM; until wget -qO- http://127.0.0.1:8080/; do sleep 1; done; sleep 3600 & wait"]
`

// helloRepo is a repository of the user's own: examples/hello with the
// Deployment at replicas.
func helloRepo(t testing.TB, replicas int) string {
	t.Helper()
	files := fstest.MapFS{}
	err := fs.WalkDir(examples.Hello(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(examples.Hello(), p)
		if p == "deployment.yaml" {
			data = []byte(strings.Replace(string(data), "replicas: 2", fmt.Sprintf("replicas: %d", replicas), 1))
		}
		files[p] = &fstest.MapFile{Data: data, Mode: 0o644}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "repo")
	if err := gitsync.InitLocalRepo(dir, files); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestLabThreeNodes is the multi-node cluster as a user lives it, through
// the real binary and `flotilla lab`: replicas that the repository holds
// before the nodes come up spread over all three (issue 9: they all went to
// the first node Ready), pods reach each other across nodes by pod IP with
// their own source address, containers of a pod share localhost, and a
// killed node's pods run again elsewhere; the node comes back clean.
func TestLabThreeNodes(t *testing.T) {
	l := newLabWithRepo(t, 3, helloRepo(t, 6))
	l.commit("duo.yaml", duoPod, "a pod of two containers")

	byNode := map[string][]*corev1.Pod{}
	l.eventually("6 hello pods Running on all 3 nodes", 3*time.Minute, func() error {
		byNode = map[string][]*corev1.Pod{}
		running := 0
		for _, p := range l.pods() {
			if p.Labels["app"] == "hello" && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				running++
				byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p)
			}
		}
		if running != 6 || len(byNode) != 3 {
			return fmt.Errorf("%d running, on %d nodes", running, len(byNode))
		}
		return nil
	})
	for n, ps := range byNode {
		if len(ps) != 2 {
			t.Errorf("%d hello pods on %s, want 2 on each node", len(ps), n)
		}
	}

	// node1's pod → node3's pod, by pod IP: the answer comes back, and the
	// server side logged the client's own pod IP (no NAT on the overlay).
	client, server := byNode["node1"][0], byNode["node3"][0]
	clientNS := podNetNS(t, l.node("node1"), client)
	l.eventually("a node1 pod reaches a node3 pod", time.Minute, func() error {
		body, err := httpFromPod(clientNS, server.Status.PodIP)
		if err != nil {
			return err
		}
		if !strings.Contains(body, server.Name) {
			return fmt.Errorf("answer %q does not name %s", body, server.Name)
		}
		return nil
	})
	// `flotilla logs` reaches the pod's node through the server.
	logs, err := exec.Command(flotillaBin, "--kubeconfig", filepath.Join(l.dir, "server", "kubeconfig.yaml"), "logs", server.Name).CombinedOutput()
	if err != nil || !strings.Contains(string(logs), client.Status.PodIP+"]") {
		t.Errorf("flotilla logs %s (%v) does not show the client pod IP %s:\n%s", server.Name, err, client.Status.PodIP, logs)
	}

	// Containers of one pod talk over localhost.
	l.eventually("duo's client container reached its web container", 2*time.Minute, func() error {
		for _, p := range l.pods() {
			if p.Name == "duo" && p.Status.Phase == corev1.PodRunning {
				ids := strings.Fields(l.podman(p.Spec.NodeName, "ps", "--filter", "label=flotilla.dev/pod-uid="+string(p.UID),
					"--filter", "label=flotilla.dev/container=client", "--format", "{{.ID}}"))
				if len(ids) == 1 && strings.Contains(l.podman(p.Spec.NodeName, "logs", ids[0]), "duo") {
					return nil
				}
				return fmt.Errorf("client container has not printed duo yet")
			}
		}
		return fmt.Errorf("duo not Running")
	})

	// A node dies: it goes NotReady, and its pods run again elsewhere.
	l.lab("kill", "node2")
	l.eventually("node2 NotReady", time.Minute, func() error {
		if ready, err := l.nodeReady("node2"); err != nil || ready {
			return fmt.Errorf("ready=%v err=%v", ready, err)
		}
		return nil
	})
	l.eventually("6 hello pods Running on node1 and node3", 3*time.Minute, func() error {
		running := 0
		for _, p := range l.pods() {
			if p.Spec.NodeName == "node2" {
				return fmt.Errorf("pod %s still bound to node2", p.Name)
			}
			if p.Labels["app"] == "hello" && p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running != 6 {
			return fmt.Errorf("%d running", running)
		}
		return nil
	})

	// It comes back, Ready, holding no stale pods.
	l.lab("start", "node2")
	l.eventually("node2 Ready again", 2*time.Minute, func() error {
		if ready, err := l.nodeReady("node2"); err != nil || !ready {
			return fmt.Errorf("ready=%v err=%v", ready, err)
		}
		return nil
	})
	l.eventually("node2 runs only pods bound to it", time.Minute, func() error {
		bound := map[string]bool{}
		for _, p := range l.pods() {
			if p.Spec.NodeName == "node2" {
				bound[string(p.UID)] = true
			}
		}
		for _, uid := range strings.Fields(l.podman("node2", "ps", "-a", "--format", `{{index .Labels "flotilla.dev/pod-uid"}}`)) {
			if !bound[uid] {
				return fmt.Errorf("node2 still has a container of pod %s, which is not bound to it", uid)
			}
		}
		return nil
	})

	l.checkBadJoins()

	// The API server down for a minute changes nothing that runs (client and
	// server pods are on node1 and node3, which stayed up).
	l.checkServerOutage(client, server, clientNS)
}

// checkBadJoins runs agents that must be refused, from node3's namespace: a
// join token naming another CA, and a second agent claiming node1's name.
// Each exits with a message that says why, and node1 stays Ready.
func (l *labCluster) checkBadJoins() {
	t := l.t
	data, err := os.ReadFile(filepath.Join(l.dir, "server", "join-token"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := join.Parse(string(data))
	if err != nil {
		t.Fatal(err)
	}
	forged := tok
	forged.CAFingerprint = strings.Repeat("ab", 32)
	n3 := l.node("node3")
	agent := func(token, name string) string {
		dir := t.TempDir()
		tokenFile := filepath.Join(dir, "join-token")
		if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(flotillaBin, "lab", "exec", "--dir", l.dir, "node3", "--", flotillaBin, "agent", "--token-file", tokenFile,
			"--node-name", name, "--advertise-addr", n3.IP, "--gossip-port", "7950", "--data-dir", dir,
			"--bridge", "badjoin0", "--netns-prefix", "badjoin-", "--podman-root", filepath.Join(dir, "root"), "--podman-runroot", filepath.Join(dir, "run"))
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("an agent with %s was not refused:\n%s", name, out)
		}
		return string(out)
	}
	if out := agent(forged.Encode(), "intruder"); !strings.Contains(out, "not the one the join token names") {
		t.Errorf("a token for another CA: the agent said\n%s", out)
	}
	if out := agent(tok.Encode(), "node1"); !strings.Contains(out, "already in the cluster") {
		t.Errorf("a second node1: the agent said\n%s", out)
	}
	if ready, err := l.nodeReady("node1"); err != nil || !ready {
		t.Errorf("after the refused joins node1 is ready=%v (%v)", ready, err)
	}
}

// checkServerOutage stops the API server for a minute: pods keep serving,
// cross-node traffic keeps flowing (the overlay follows gossip, not the
// API), and a commit made meanwhile is applied when the server is back.
func (l *labCluster) checkServerOutage(client, server *corev1.Pod, clientNS string) {
	t := l.t
	l.lab("stop-server")
	deadline := time.Now().Add(time.Minute)
	deploy, err := os.ReadFile(filepath.Join(l.repo, "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	l.commit("deployment.yaml", strings.Replace(string(deploy), "replicas: 6", "replicas: 4", 1), "four replicas, while the server is down")
	for time.Now().Before(deadline) {
		body, err := httpFromPod(clientNS, server.Status.PodIP)
		if err != nil || !strings.Contains(body, server.Name) {
			t.Fatalf("with the server down, node1's pod got %q, %v from %s", body, err, server.Name)
		}
		time.Sleep(5 * time.Second)
	}
	l.lab("start-server")
	l.eventually("the commit made during the outage is applied", 3*time.Minute, func() error {
		pods, err := l.tryPods() // the server takes a moment to answer again
		if err != nil {
			return err
		}
		running := 0
		for _, p := range pods {
			if p.Labels["app"] == "hello" && p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running != 4 {
			return fmt.Errorf("%d hello pods Running, want 4", running)
		}
		for _, n := range []string{"node1", "node2", "node3"} {
			if ready, err := l.nodeReady(n); err != nil || !ready {
				return fmt.Errorf("%s ready=%v err=%v", n, ready, err)
			}
		}
		return nil
	})
}

// podNetNS finds a pod's network namespace on its node: the one of the
// node's pod namespaces whose eth0 holds the pod IP.
func podNetNS(t testing.TB, n labNode, p *corev1.Pod) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		name := strings.Fields(line + " ")[0]
		if name == "" || !strings.HasPrefix(name, n.NetNSPrefix) {
			continue
		}
		addr, _ := exec.Command("ip", "-n", name, "-4", "addr", "show", "eth0").Output()
		if strings.Contains(string(addr), " "+p.Status.PodIP+"/") {
			return "/run/netns/" + name
		}
	}
	t.Fatalf("no network namespace with pod IP %s on %s", p.Status.PodIP, n.Name)
	return ""
}

func (l *labCluster) eventually(what string, timeout time.Duration, fn func() error) {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: still not true after %s: %v", what, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
