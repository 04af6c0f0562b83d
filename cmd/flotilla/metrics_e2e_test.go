package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/internal/promtest"
)

// freeAddr is a loopback address with a port nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// checkMetrics is issue 12's metrics on up: the server's /metrics (every
// part's families, the request counter moving) for cluster-admin and a 403
// Status for a view user; the agent's endpoint for a certificate RBAC
// allows and 403 for the view user; and kubectl top pods showing a pod
// that burns CPU, top nodes the node.
func checkMetrics(t *testing.T, c *upCluster, kubectl, agentAddr string, admin func(bool, ...string) string) {
	home := t.TempDir()
	kc := filepath.Join(home, "mona.kubeconfig")
	if out, err := exec.Command(flotillaBin, "kubeconfig", "--data-dir", c.dataDir, "--user", "mona", "--group", "viewers",
		"--ttl", "1h", "-o", kc).CombinedOutput(); err != nil {
		t.Fatalf("flotilla kubeconfig: %v\n%s", err, out)
	}
	mona := kubectlAs(t, kubectl, kc, home)

	// The server: every part's families in one scrape.
	lists := map[string]string{"verb": "LIST", "resource": "pods", "code": "200"}
	before, _ := promtest.Value(admin(false, "get", "--raw", "/metrics"), "apiserver_request_total", lists)
	admin(false, "get", "pods")
	admin(false, "get", "pods", "-A")
	text := admin(false, "get", "--raw", "/metrics")
	for _, fam := range []string{"apiserver_request_total", "apiserver_request_duration_seconds", "apiserver_longrunning_requests",
		"apiserver_storage_size_bytes", "flotilla_store_revision", "flotilla_gitsync_duration_seconds", "flotilla_gitsync_syncs_total",
		"workqueue_depth", "workqueue_work_duration_seconds", "flotilla_controller_reconcile_duration_seconds",
		"scheduler_pod_scheduling_duration_seconds", "scheduler_scheduling_attempt_duration_seconds",
		"kubelet_runtime_operations_duration_seconds", "container_cpu_usage_seconds_total", "process_resident_memory_bytes"} {
		if !promtest.HasFamily(text, fam) {
			t.Errorf("the server's /metrics lacks %s", fam)
		}
	}
	if after, _ := promtest.Value(text, "apiserver_request_total", lists); after < before+2 {
		t.Errorf("apiserver_request_total of pod lists went %v → %v over two lists", before, after)
	}
	// A kubectl watch is counted while it runs.
	watch := exec.Command(kubectl, "--kubeconfig", filepath.Join(c.dataDir, "kubeconfig.yaml"), "get", "pods", "--watch")
	watch.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG=")
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	c.eventually("the pod watch is counted", 30*time.Second, func() error {
		text := admin(false, "get", "--raw", "/metrics")
		if n, _ := promtest.Value(text, "apiserver_longrunning_requests", map[string]string{"verb": "WATCH", "resource": "pods"}); n < 1 {
			return fmt.Errorf("apiserver_longrunning_requests: %s", promtest.Lines(text, "apiserver_longrunning_requests"))
		}
		return nil
	})
	_ = watch.Process.Kill()
	_ = watch.Wait()
	if out := mona(true, "get", "--raw", "/metrics"); !strings.Contains(out, "Forbidden") || !strings.Contains(out, `cannot get path "/metrics"`) {
		t.Errorf("a view user's /metrics:\n%s", out)
	}

	// The agent's endpoint: mutual TLS with the cluster CA, RBAC like the
	// kubelet's.
	tlsDir := filepath.Join(c.dataDir, "tls")
	caPEM, err := os.ReadFile(filepath.Join(tlsDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	client := func(user string, groups ...string) *http.Client {
		certPEM, keyPEM, err := apiserver.IssueClientCert(tlsDir, user, groups, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	get := func(hc *http.Client, path string) (int, string) {
		resp, err := hc.Get("https://" + agentAddr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	root := client("agent-scraper", auth.GroupMasters)
	c.eventually("the agent's /metrics has the pods' usage", time.Minute, func() error {
		code, body := get(root, "/metrics")
		if code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		for _, fam := range []string{"container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "pod_cpu_usage_seconds_total",
			"pod_memory_working_set_bytes", "node_cpu_usage_seconds_total", "node_memory_working_set_bytes", "kubelet_runtime_operations_duration_seconds"} {
			if !promtest.HasFamily(body, fam) {
				return fmt.Errorf("no %s", fam)
			}
		}
		// The sleeper Deployment's container.
		if v, ok := promtest.Value(body, "container_memory_working_set_bytes", map[string]string{"namespace": "default", "container": "web"}); !ok || v <= 0 {
			return fmt.Errorf("the sleeper's memory: %v", v)
		}
		return nil
	})
	if code, body := get(client(auth.APIServerUser), "/stats/summary"); code != http.StatusOK || !strings.Contains(body, `"podRef"`) {
		t.Errorf("the API server's /stats/summary: %d %.300s", code, body)
	}
	for _, path := range []string{"/metrics", "/stats/summary"} {
		if code, body := get(client("mona", "viewers"), path); code != http.StatusForbidden {
			t.Errorf("a view user's agent %s: %d %.300s, want 403", path, code, body)
		}
	}

	// kubectl top: a pod burning CPU shows it.
	admin(false, "run", "burner", "--image", "localhost/busybox:latest", "--restart", "Never", "--command", "--", "sh", "-c", "while :; do :; done")
	defer admin(false, "delete", "pod", "burner", "--wait=false", "--grace-period=1") // sh ignores SIGTERM: do not burn the grace period
	c.eventually("kubectl top pods shows burner's CPU", 3*time.Minute, func() error {
		out := mona(false, "top", "pods", "--no-headers")
		for line := range strings.Lines(out) {
			f := strings.Fields(line)
			if len(f) == 3 && f[0] == "burner" {
				m, err := strconv.Atoi(strings.TrimSuffix(f[1], "m"))
				if err != nil || m < 200 {
					return fmt.Errorf("burner uses %s", f[1])
				}
				return nil
			}
		}
		return fmt.Errorf("no burner in:\n%s", out)
	})
	if out := mona(false, "top", "pods", "-l", "app=sleeper", "--no-headers"); !strings.Contains(out, "sleeper-") || !strings.Contains(out, "Mi") {
		t.Errorf("top pods -l app=sleeper:\n%s", out)
	}
	out := admin(false, "top", "nodes", "--no-headers")
	if f := strings.Fields(out); len(f) < 5 || !strings.HasPrefix(f[0], "e2e-") || !strings.HasSuffix(f[1], "m") || !strings.HasSuffix(f[2], "%") {
		t.Errorf("top nodes:\n%s", out)
	}
}

// checkLabTop: kubectl top reads every agent's stats summary through the
// server (mutual TLS, as logs).
func checkLabTop(t *testing.T, l *labCluster) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Log("kubectl not installed: kubectl top not checked")
		return
	}
	home := t.TempDir()
	top := func(args ...string) (string, error) {
		cmd := exec.Command(kubectl, append([]string{"--kubeconfig", filepath.Join(l.dir, "server", "kubeconfig.yaml"), "top"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	l.eventually("kubectl top nodes shows the 3 nodes", 2*time.Minute, func() error {
		out, err := top("nodes", "--no-headers")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, n := range []string{"node1", "node2", "node3"} {
			found := false
			for line := range strings.Lines(out) {
				if f := strings.Fields(line); len(f) >= 5 && f[0] == n && strings.HasSuffix(f[1], "m") && strings.HasSuffix(f[3], "Mi") {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("no numbers for %s:\n%s", n, out)
			}
		}
		return nil
	})
	l.eventually("kubectl top pods shows the hello pods", time.Minute, func() error {
		out, err := top("pods", "-l", "app=hello", "--no-headers")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if n := strings.Count(out, "hello-"); n != 6 {
			return fmt.Errorf("%d hello pods:\n%s", n, out)
		}
		return nil
	})
}
