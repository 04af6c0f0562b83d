package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hashicorp/memberlist"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/join"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/examples"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/internal/testkit"
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

// newLabWithRepo is `flotilla lab up --repo repo` ("": none given), with
// more flags of lab up.
func newLabWithRepo(t testing.TB, nodes int, repo string, upArgs ...string) *labCluster {
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
	subnet := testkit.FreeSubnet(t, "10.93.%d.0/24").String() // not 10.96/16: the service CIDR
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"server.log", "server2.log", "server3.log", "node1.log", "node2.log", "node3.log"} {
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
		noProcessesLeft(t, "flotilla lab down", l.dir)
	})
	args := []string{"lab", "up", "--dir", l.dir, "--nodes", fmt.Sprint(nodes), "--name", name, "--subnet", subnet, "--timeout", "3m"}
	if repo != "" {
		args = append(args, "--repo", repo)
	}
	args = append(args, upArgs...)
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
	l.commitAll(msg)
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
	// Node certificates live 2 minutes: the agents renew them all along.
	l := newLabWithRepo(t, 3, helloRepo(t, 6), "--node-cert-ttl", "2m")
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

	// kubectl exec reaches a pod on another node through the server (the
	// agent's stream endpoint, over mutual TLS), on WebSocket v5 and SPDY.
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		for _, env := range []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true", "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"} {
			cmd := exec.Command(kubectl, "--kubeconfig", filepath.Join(l.dir, "server", "kubeconfig.yaml"), "exec", "-i", server.Name, "--", "sh", "-c", "hostname; cat")
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), env)
			cmd.Stdin = strings.NewReader("from-stdin\n")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), server.Name) || !strings.Contains(string(out), "from-stdin") {
				t.Errorf("kubectl exec into %s on node3 (%s): %v\n%s", server.Name, env, err, out)
			}
		}
	}

	checkLabTop(t, l)

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
	l.checkNodeRights()
	l.checkGossipLies()

	// The API server down for a minute changes nothing that runs (client and
	// server pods are on node1 and node3, which stayed up).
	l.checkServerOutage(client, server, clientNS)
	l.checkCertRotation()
}

// checkCertRotation: with 2-minute node certificates, every agent has
// renewed its client certificate three times or more (once across the
// server's outage), and is still Ready: its heartbeats are accepted.
func (l *labCluster) checkCertRotation() {
	renewals := func(node string) int {
		// The agent's own log (INFO and up); the lab's logs/ has its
		// warnings only.
		data, _ := os.ReadFile(filepath.Join(l.node(node).DataDir, "flotilla.log"))
		n := 0
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "node certificate renewed") && strings.Contains(line, "kube-apiserver-client-kubelet") {
				n++
			}
		}
		return n
	}
	for _, node := range []string{"node1", "node2", "node3"} {
		l.eventually(node+" renewed its certificate three times", 8*time.Minute, func() error {
			if n := renewals(node); n < 3 {
				return fmt.Errorf("%d renewals", n)
			}
			return nil
		})
		l.eventually(node+" is Ready after its renewals", 2*time.Minute, func() error {
			if ready, err := l.nodeReady(node); err != nil || !ready {
				return fmt.Errorf("ready=%v err=%v", ready, err)
			}
			return nil
		})
		pair, err := tls.LoadX509KeyPair(filepath.Join(l.node(node).DataDir, "pki", "node-client.crt"), filepath.Join(l.node(node).DataDir, "pki", "node-client.key"))
		if err != nil {
			l.t.Fatal(err)
		}
		if left := time.Until(pair.Leaf.NotAfter); left <= 0 || left > 3*time.Minute || pair.Leaf.Subject.CommonName != "system:node:"+node {
			l.t.Errorf("%s's certificate: %s, expires in %s", node, pair.Leaf.Subject, left)
		}
	}
}

// joinToken is the join token the lab's server wrote.
func (l *labCluster) joinToken() join.Token {
	l.t.Helper()
	data, err := os.ReadFile(filepath.Join(l.dir, "server", "join-token"))
	if err != nil {
		l.t.Fatal(err)
	}
	tok, err := join.Parse(string(data))
	if err != nil {
		l.t.Fatal(err)
	}
	return tok
}

// checkBadJoins runs agents that must be refused, from node3's namespace: a
// join token naming another CA, and a second agent claiming node1's name.
// Each exits with a message that says why, and node1 stays Ready.
func (l *labCluster) checkBadJoins() {
	t := l.t
	tok := l.joinToken()
	// A token naming another CA: the real server's certificate fails it.
	otherCA, _, _, err := apiserver.EnsureCerts(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(otherCA)
	forged := tok
	forged.CA, forged.CAFingerprint = block.Bytes, join.FingerprintDER(block.Bytes)
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
	// An expired token and a revoked one join nothing.
	expiredText, expired, err := auth.NewBootstrapToken(time.Now().Add(-2*time.Hour), time.Hour, "expired")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.client.Create(context.Background(), expired); err != nil {
		t.Fatal(err)
	}
	old := tok
	old.BootstrapToken = expiredText
	if out := agent(old.Encode(), "late"); !strings.Contains(out, "the join token is expired, revoked") {
		t.Errorf("an expired token: the agent said\n%s", out)
	}
	kubeconfig := filepath.Join(l.dir, "server", "kubeconfig.yaml")
	created, err := exec.Command(flotillaBin, "--kubeconfig", kubeconfig, "token", "create", "--ttl", "1h").Output()
	if err != nil {
		t.Fatalf("flotilla token create: %v", err)
	}
	revoked, err := join.Parse(string(created))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(flotillaBin, "--kubeconfig", kubeconfig, "token", "revoke", revoked.TokenID()).CombinedOutput(); err != nil {
		t.Fatalf("flotilla token revoke: %v\n%s", err, out)
	}
	if out := agent(revoked.Encode(), "late"); !strings.Contains(out, "the join token is expired, revoked") {
		t.Errorf("a revoked token: the agent said\n%s", out)
	}
	// The token alone lists no pods.
	req, err := http.NewRequest(http.MethodGet, tok.Server+"/api/v1/pods", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok.BootstrapToken)
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(l.dir, "server", "tls", "ca.crt"))
	if err != nil || !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("the lab's CA: %v", err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	if resp, err := (&http.Client{Transport: tr}).Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("the join token lists pods: %v %v, want 403", resp, err)
	} else {
		resp.Body.Close()
	}
	// No process shows a secret in its arguments: not the join token, not
	// the gossip key.
	gossipKey, err := l.client.Get(context.Background(), "secrets", "kube-system", "flotilla-gossip")
	if err != nil {
		t.Fatal(err)
	}
	key := gossipKey.(*corev1.Secret).Data["key"]
	ps, err := exec.Command("ps", "-eo", "args").Output()
	if err != nil {
		t.Fatal(err)
	}
	_, secret, _ := strings.Cut(tok.BootstrapToken, ".")
	for _, s := range []string{secret, hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key)} {
		if strings.Contains(string(ps), s) {
			t.Errorf("ps -eo args shows a secret:\n%s", ps)
		}
	}
	if ready, err := l.nodeReady("node1"); err != nil || !ready {
		t.Errorf("after the refused joins node1 is ready=%v (%v)", ready, err)
	}
}

// checkNodeRights uses node2's own certificate (from its data directory),
// as a thief of it would: it may write the status of its own pods, not
// create a pod, not change node1, not list the cluster's Secrets, and not
// read a Secret no pod of its uses.
func (l *labCluster) checkNodeRights() {
	t := l.t
	ctx := context.Background()
	pki := filepath.Join(l.node("node2").DataDir, "pki")
	certPEM, err1 := os.ReadFile(filepath.Join(pki, "node-client.crt"))
	keyPEM, err2 := os.ReadFile(filepath.Join(pki, "node-client.key"))
	caPEM, err3 := os.ReadFile(filepath.Join(l.dir, "server", "tls", "ca.crt"))
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	node2, err := apiclient.New(apiclient.Config{Server: l.joinToken().Server, CAData: caPEM, CertData: certPEM, KeyData: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	forbidden := func(what string, err error) {
		t.Helper()
		var se *apiclient.StatusError
		if !errors.As(err, &se) || se.Status.Code != http.StatusForbidden {
			t.Errorf("node2's certificate: %s: %v, want 403", what, err)
		}
	}
	secret := &corev1.Secret{TypeMeta: metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: "not-node2s", Namespace: "default"}, StringData: map[string]string{"k": "v"}}
	if _, err := l.client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	_, err = node2.Get(ctx, "secrets", "default", "not-node2s")
	forbidden("get a Secret no pod of its uses", err)
	_, _, err = node2.List(ctx, "secrets", store.ListOptions{})
	forbidden("list the Secrets", err)
	_, err = node2.Create(ctx, &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: "planted", Namespace: "default"},
		Spec:       corev1.PodSpec{NodeName: "node2", Containers: []corev1.Container{{Name: "c", Image: examples.HelloImage}}}})
	forbidden("create a pod", err)
	n1, err := l.client.Get(ctx, "nodes", "", "node1")
	if err != nil {
		t.Fatal(err)
	}
	n1.SetLabels(map[string]string{"stolen": "yes"})
	_, err = node2.Update(ctx, n1)
	forbidden("update node1", err)
	for _, p := range l.pods() {
		if p.Spec.NodeName != "node2" {
			continue
		}
		// Its agent writes the status too: a conflict is asked again.
		for try := 0; ; try++ {
			cur, err := l.client.Get(ctx, "pods", p.Namespace, p.Name)
			if err == nil {
				_, err = node2.UpdateStatus(ctx, cur)
			}
			if err == nil || !errors.Is(err, store.ErrConflict) || try == 5 {
				if err != nil {
					t.Errorf("node2's certificate: update the status of its pod %s: %v", p.Name, err)
				}
				break
			}
		}
		break
	}
}

// checkGossipLies joins the lab's gossip with the real key as "liar", a
// member that says it is node1 and announces node2's pod CIDR, then leaves:
// node2's route on node1 does not change, and node1 — still healthy —
// stays Ready with every pod it had, past the eviction timeout.
func (l *labCluster) checkGossipLies() {
	t := l.t
	ctx := context.Background()
	tok := l.joinToken()
	keyObj, err := l.client.Get(ctx, "secrets", "kube-system", "flotilla-gossip")
	if err != nil {
		t.Fatal(err)
	}
	n2, err := l.client.Get(ctx, "nodes", "", "node2")
	if err != nil {
		t.Fatal(err)
	}
	cidr2 := n2.(*corev1.Node).Spec.PodCIDR
	_, ipnet2, err := net.ParseCIDR(cidr2)
	if err != nil {
		t.Fatalf("node2's pod CIDR %q: %v", cidr2, err)
	}
	route := func() string {
		out, err := exec.Command(flotillaBin, "lab", "exec", "--dir", l.dir, "node1", "--", "ip", "route", "show", cidr2).CombinedOutput()
		if err != nil {
			t.Fatalf("ip route on node1: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	before := route()
	var uids []string
	for _, p := range l.pods() {
		if p.Spec.NodeName == "node1" {
			uids = append(uids, string(p.UID))
		}
	}
	host, _, err := net.SplitHostPort(tok.GossipAddr)
	if err != nil {
		t.Fatal(err)
	}
	// Flotilla's gossip package will not announce another node's name, so
	// the liar speaks memberlist itself, with Flotilla's metadata format.
	meta := func(leaving bool) []byte {
		b, _ := json.Marshal(map[string]any{"v": 1, "r": "agent", "n": "node1", "t": host, "c": cidr2,
			"m": netfabric.VTEPMACFor(ipnet2).String(), "l": leaving})
		return b
	}
	d := &liarDelegate{}
	d.meta.Store(meta(false))
	mc := memberlist.DefaultLANConfig()
	mc.Name, mc.BindAddr, mc.BindPort, mc.AdvertiseAddr = "liar", host, 0, host
	mc.SecretKey, mc.Delegate, mc.LogOutput = keyObj.(*corev1.Secret).Data["key"], d, io.Discard
	liar, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	defer liar.Shutdown()
	if _, err := liar.Join([]string{tok.GossipAddr}); err != nil {
		t.Fatalf("the liar could not join the gossip: %v", err)
	}
	// Kept sleep: what is checked is that nothing happens. The announced
	// CIDR has a few seconds to reach every agent (gossip converges in
	// well under a second here).
	time.Sleep(5 * time.Second)
	if after := route(); after != before {
		t.Errorf("a gossip member announcing node2's pod CIDR changed node1's route:\nbefore %s\nafter  %s", before, after)
	}
	d.meta.Store(meta(true)) // Flotilla's "leaving on purpose" flag, then the leave
	if err := liar.UpdateNode(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := liar.Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	// Kept sleep: past the server's 30 s eviction timeout, nothing moved.
	time.Sleep(40 * time.Second)
	if ready, err := l.nodeReady("node1"); err != nil || !ready {
		t.Errorf("after a member announced node1 left: ready=%v (%v)", ready, err)
	}
	have := map[string]bool{}
	for _, p := range l.pods() {
		have[string(p.UID)] = true
	}
	for _, uid := range uids {
		if !have[uid] {
			t.Errorf("pod %s of node1 was evicted after a gossip lie", uid)
		}
	}
}

// liarDelegate is a memberlist delegate that announces whatever meta holds.
type liarDelegate struct{ meta atomic.Value }

func (d *liarDelegate) NodeMeta(int) []byte             { return d.meta.Load().([]byte) }
func (d *liarDelegate) NotifyMsg([]byte)                {}
func (d *liarDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *liarDelegate) LocalState(bool) []byte          { return nil }
func (d *liarDelegate) MergeRemoteState([]byte, bool)   {}

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
	// The server pod's node dies and starts again while the server is
	// still down: its agent runs the pods it last knew of, from its own
	// state (k3s #4113: agents stay NotReady after a reboot).
	dead := server.Spec.NodeName
	l.lab("kill", dead)
	killed := time.Now()
	l.lab("start", dead)
	if err := testkit.Wait(t.Context(), 2*time.Minute, func() error {
		body, err := httpFromPod(clientNS, server.Status.PodIP)
		if err != nil || !strings.Contains(body, server.Name) {
			return fmt.Errorf("%q, %v", body, err)
		}
		return nil
	}); err != nil {
		t.Logf("podman on %s:\n%s", dead, l.podman(dead, "ps", "-a"))
		if data, rerr := os.ReadFile(filepath.Join(l.dir, "logs", dead+".log")); rerr == nil {
			var mine []string
			for _, line := range strings.Split(string(data), "\n") {
				if strings.Contains(line, server.Name) || strings.Contains(line, "last known") || strings.Contains(line, "level=ERROR") {
					mine = append(mine, line)
				}
			}
			t.Logf("%s's log on %s:\n%s", server.Name, dead, tail(strings.Join(mine, "\n"), 60))
		}
		t.Fatalf("%s's pod %s does not answer again with no server: %v", dead, server.Name, err)
	}
	t.Logf("%s killed and started with every server down: its pod answered again %s after the kill", dead, time.Since(killed).Round(time.Second))
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
	// Nothing duplicated: every container of the restarted node is of a pod
	// bound to it, one runtime pod per pod.
	l.eventually(dead+" runs each of its pods once", time.Minute, func() error {
		bound := map[string]bool{}
		for _, p := range l.pods() {
			if p.Spec.NodeName == dead {
				bound[string(p.UID)] = true
			}
		}
		seen := map[string]int{}
		for _, uid := range strings.Fields(l.podman(dead, "pod", "ps", "--format", `{{index .Labels "flotilla.dev/pod-uid"}}`)) {
			if !bound[uid] {
				return fmt.Errorf("%s has a pod of %s, which is not bound to it", dead, uid)
			}
			if seen[uid]++; seen[uid] > 1 {
				return fmt.Errorf("%s runs pod %s twice", dead, uid)
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
