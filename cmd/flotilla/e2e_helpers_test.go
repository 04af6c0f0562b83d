package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/netfabric"
	"github.com/flotilla-dev/flotilla/schema"
)

// The end-to-end tests run the real binary: `flotilla up` with its own
// Podman storage, bridge, network namespaces and nftables table, so that it
// can run beside other tests and a `make demo` on the same host.

// buildTags are the Podman bindings' build tags (as in the Makefile).
const buildTags = "remote,exclude_graphdriver_btrfs,btrfs_noversion,exclude_graphdriver_devicemapper,containers_image_openpgp"

var flotillaBin string // built once in TestMain

func TestMain(m *testing.M) {
	code := func() int {
		if os.Getuid() != 0 {
			return m.Run() // the e2e tests skip themselves
		}
		dir, err := os.MkdirTemp("", "flotilla-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		flotillaBin = filepath.Join(dir, "flotilla")
		cmd := exec.Command("go", "build", "-tags", buildTags, "-o", flotillaBin, ".")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build flotilla:", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// upCluster is one `flotilla up` process and what it needs on the host.
type upCluster struct {
	t       testing.TB
	dataDir string
	args    []string
	cmd     *exec.Cmd
	logPath string
	client  *apiclient.Client
	podman  []string // podman CLI arguments for this cluster's storage
	env     []string
	fabric  netfabric.Config
}

// newUpCluster prepares (but does not start) an isolated `flotilla up`, and
// registers the cleanup of everything it may leave on the host.
func newUpCluster(t testing.TB) *upCluster {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("end-to-end tests need root (network namespaces, Podman)")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("end-to-end tests need podman (make deps installs it)")
	}
	id := randomHex(t, 3)
	dir := t.TempDir()
	c := &upCluster{t: t, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "up.log")}
	// Podman takes a run root of at most 50 characters: not under TempDir.
	runRoot, err := os.MkdirTemp("", "fe2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runRoot) })
	root := filepath.Join(dir, "podman-root")
	c.podman = []string{"--root", root, "--runroot", runRoot, "--storage-driver", "vfs"}
	c.env = append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(c.dataDir, "podman", "containers.conf"))
	cidr := testkit.FreeSubnet(t, "10.244.%d.0/24").String() // inside the default cluster CIDR
	bridge, prefix, table := "fte"+id, "fe"+id+"-", "fte"+id
	c.args = []string{"up", "--data-dir", c.dataDir, "--api-addr", "127.0.0.1:0", "--interval", "1h",
		"--pod-cidr", cidr, "--bridge", bridge, "--netns-prefix", prefix, "--nft-table", table,
		"--podman-root", root, "--podman-runroot", runRoot, "--podman-storage-driver", "vfs", "--node-name", "e2e-" + id}
	_, ipnet, _ := net.ParseCIDR(cidr)
	c.fabric = netfabric.Config{PodCIDR: ipnet, Bridge: bridge, NetNSPrefix: prefix, NFTable: table, StateDir: filepath.Join(c.dataDir, "net")}
	t.Cleanup(c.cleanup)
	return c
}

// start runs `flotilla up` and waits until its API answers and the first
// sync has run.
func (c *upCluster) start() {
	t := c.t
	t.Helper()
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(flotillaBin, c.args...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	kubeconfig := filepath.Join(c.dataDir, "kubeconfig.yaml")
	c.eventually("the API answers and the first sync ran", 2*time.Minute, func() error {
		if c.cmd.ProcessState != nil {
			return fmt.Errorf("flotilla up exited")
		}
		cl, err := apiclient.FromKubeconfig(kubeconfig)
		if err != nil {
			return err
		}
		if _, err := cl.Get(context.Background(), "syncstatuses", "", schema.SyncStatusName); err != nil {
			return err
		}
		c.client = cl
		return nil
	})
}

// kill9 kills `flotilla up` as a crash would.
func (c *upCluster) kill9() {
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

// stop sends SIGTERM and returns the exit error.
func (c *upCluster) stop() error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		_ = c.cmd.Process.Kill()
		return fmt.Errorf("flotilla up did not stop within a minute of SIGTERM")
	}
}

func (c *upCluster) cleanup() {
	if c.cmd != nil && c.cmd.ProcessState == nil {
		c.kill9()
	}
	if c.t.Failed() {
		if data, err := os.ReadFile(c.logPath); err == nil {
			c.t.Logf("flotilla up output:\n%s", tail(string(data), 40))
		}
		if data, err := os.ReadFile(filepath.Join(c.dataDir, "flotilla.log")); err == nil {
			c.t.Logf("flotilla up log:\n%s", tail(string(data), 80))
		}
	}
	// `flotilla down` removes the pods and the network; check it did.
	down := exec.Command(flotillaBin, "down", "--data-dir", c.dataDir, "--grace", "1s")
	if out, err := down.CombinedOutput(); err != nil {
		c.t.Errorf("flotilla down: %v\n%s", err, out)
	}
	if out, err := c.podmanCLI("ps", "-aq"); err != nil || strings.TrimSpace(out) != "" {
		c.t.Errorf("after flotilla down, containers are left: %q (%v)", out, err)
	}
	if err := exec.Command("ip", "link", "show", c.fabric.Bridge).Run(); err == nil {
		c.t.Errorf("after flotilla down, bridge %s is left", c.fabric.Bridge)
	}
	// What down could not remove must not outlive the test either.
	_, _ = c.podmanCLI("pod", "rm", "-af", "-t", "0")
	_, _ = c.podmanCLI("rm", "-af", "-t", "0")
	if f, err := netfabric.New(c.fabric); err == nil {
		_ = f.Destroy(context.Background())
	}
	// A podman service killed with its parent may still be exiting.
	_ = exec.Command("pkill", "-f", "unix://"+filepath.Join(c.dataDir, "podman", "podman.sock")).Run()
	noProcessesLeft(c.t, "flotilla down", c.podman[1])
}

// noProcessesLeft fails the test if, after what (the command that should
// have ended them), processes still name dir (a Podman root: the conmon of
// each container names it) once an exec session's exit delay has passed,
// and kills them.
func noProcessesLeft(t testing.TB, what, dir string) {
	t.Helper()
	var left map[int]string
	_ = testkit.Wait(context.Background(), 30*time.Second, func() error {
		if left = processesNaming(dir); len(left) > 0 {
			return fmt.Errorf("%d left", len(left))
		}
		return nil
	})
	for pid, cmdline := range left {
		t.Errorf("after %s, process %d is left: %.200s", what, pid, cmdline)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// processesNaming returns the command lines of the processes whose
// arguments name dir or a path under it.
func processesNaming(dir string) map[int]string {
	found := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(b), "\x00") {
			if arg == dir || strings.HasPrefix(arg, dir+"/") || strings.Contains(arg, ":"+dir+"/") {
				found[pid] = strings.ReplaceAll(string(b), "\x00", " ")
				break
			}
		}
	}
	return found
}

func (c *upCluster) podmanCLI(args ...string) (string, error) {
	cmd := exec.Command("podman", append(append([]string{}, c.podman...), args...)...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// git runs git in the cluster's example repository.
func (c *upCluster) git(args ...string) {
	c.t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=e2e", "-c", "user.email=e2e@localhost"}, args...)...)
	cmd.Dir = filepath.Join(c.dataDir, "repo")
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// edit rewrites a file of the example repository.
func (c *upCluster) edit(file string, replace ...string) {
	c.t.Helper()
	path := filepath.Join(c.dataDir, "repo", file)
	data, err := os.ReadFile(path)
	if err != nil {
		c.t.Fatal(err)
	}
	s := string(data)
	for i := 0; i+1 < len(replace); i += 2 {
		if !strings.Contains(s, replace[i]) {
			c.t.Fatalf("%s does not contain %q", file, replace[i])
		}
		s = strings.ReplaceAll(s, replace[i], replace[i+1])
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

func (c *upCluster) pods() []*corev1.Pod {
	objs, _, err := c.client.List(context.Background(), "pods", store.ListOptions{Namespace: "default"})
	if err != nil {
		c.t.Fatalf("list pods: %v", err)
	}
	out := make([]*corev1.Pod, len(objs))
	for i, o := range objs {
		out[i] = o.(*corev1.Pod)
	}
	return out
}

func (c *upCluster) syncStatus() *schema.SyncStatus {
	obj, err := c.client.Get(context.Background(), "syncstatuses", "", schema.SyncStatusName)
	if err != nil {
		c.t.Fatalf("get sync status: %v", err)
	}
	return obj.(*schema.SyncStatus)
}

// eventually polls fn until it returns nil. The deadline is generous: it
// only guards against hanging, it measures nothing.
func (c *upCluster) eventually(what string, timeout time.Duration, fn func() error) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: still not true after %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readyPods returns nil when exactly n pods exist, all Running and ready,
// all with the given env VERSION in their template.
func readyPods(pods []*corev1.Pod, n int, version string) error {
	if len(pods) != n {
		return fmt.Errorf("%d pods, want %d", len(pods), n)
	}
	for _, p := range pods {
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return fmt.Errorf("pod %s is %s", p.Name, p.Status.Phase)
		}
		for _, cs := range p.Status.ContainerStatuses {
			if !cs.Ready {
				return fmt.Errorf("pod %s not ready", p.Name)
			}
		}
		if got := envValue(p, "VERSION"); got != version {
			return fmt.Errorf("pod %s has VERSION %q, want %q", p.Name, got, version)
		}
	}
	return nil
}

func envValue(p *corev1.Pod, name string) string {
	for _, e := range p.Spec.Containers[0].Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func httpGet(url string) (string, error) {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return string(data), err
}

func uids(pods []*corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, string(p.UID))
	}
	sort.Strings(out)
	return out
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
