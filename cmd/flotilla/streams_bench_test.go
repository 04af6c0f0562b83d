package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// BenchmarkStreams measures issue 12's stream targets on up with the real
// kubectl: `kubectl exec POD -- true` against `podman exec CTR true` on
// the same node (medians of 9), and kubectl port-forward's throughput
// against a direct connection to the pod IP (64 MiB from the pod's
// nc each way).
func BenchmarkStreams(b *testing.B) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		b.Skip("kubectl not installed")
	}
	c := newUpCluster(b)
	c.start()
	c.eventually("the example runs", 3*time.Minute, func() error { return readyPods(c.pods(), 2, "1") })
	var pod *corev1.Pod
	for _, p := range c.pods() {
		if strings.HasPrefix(p.Name, "hello-") {
			pod = p
			break
		}
	}
	if pod == nil {
		b.Fatal("no hello pod")
	}
	kc := filepath.Join(c.dataDir, "kubeconfig.yaml")
	home := b.TempDir()
	kube := func(args ...string) *exec.Cmd {
		cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kc, "--cache-dir", filepath.Join(home, "cache")}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG=")
		return cmd
	}
	ctr, err := c.podmanCLI("ps", "--format", "{{.Names}}", "--filter", "label=io.kubernetes.pod.name="+pod.Name)
	names := strings.Fields(ctr)
	if err != nil || len(names) == 0 {
		out, _ := c.podmanCLI("ps", "--format", "{{.Names}}")
		for _, n := range strings.Fields(out) {
			if strings.Contains(n, pod.Name) && !strings.Contains(n, "infra") {
				names = []string{n}
			}
		}
	}
	if len(names) == 0 {
		b.Fatalf("no container of %s in podman ps", pod.Name)
	}
	var viaKubectl, viaPodman []time.Duration
	for i := 0; i < 9; i++ {
		start := time.Now()
		if out, err := kube("exec", pod.Name, "--", "true").CombinedOutput(); err != nil {
			b.Fatalf("kubectl exec: %v %s", err, out)
		}
		viaKubectl = append(viaKubectl, time.Since(start))
		start = time.Now()
		if out, err := c.podmanCLI("exec", names[0], "true"); err != nil {
			b.Fatalf("podman exec: %v %s", err, out)
		}
		viaPodman = append(viaPodman, time.Since(start))
	}
	km, _, _ := stats(viaKubectl)
	pm, _, _ := stats(viaPodman)
	b.Logf("kubectl exec -- true: median %v; podman exec true: median %v", km.Round(time.Millisecond), pm.Round(time.Millisecond))
	b.ReportMetric(km.Seconds()*1000, "kubectl-exec-ms")
	b.ReportMetric(pm.Seconds()*1000, "podman-exec-ms")
	b.ReportMetric(km.Seconds()/pm.Seconds(), "exec-ratio")

	// Throughput: the pod's nc serves 64 MiB on port 9000, read directly
	// from the pod IP and through kubectl port-forward.
	const size = 64 << 20
	serve := func() {
		cmd := kube("exec", pod.Name, "--", "sh", "-c", fmt.Sprintf("(head -c %d /dev/zero | nc -l -p 9000) </dev/null >/dev/null 2>&1 &", size))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("start nc: %v %s", err, out)
		}
	}
	read := func(addr string) time.Duration {
		var conn net.Conn
		c.eventually("connect to "+addr, 30*time.Second, func() error {
			var err error
			conn, err = net.Dial("tcp", addr)
			return err
		})
		defer conn.Close()
		start := time.Now()
		// busybox nc keeps the connection open after its input ends: read
		// the size it sends.
		n, err := io.CopyN(io.Discard, conn, size)
		d := time.Since(start)
		if err != nil || n != size {
			b.Fatalf("read %d of %d bytes from %s: %v", n, size, addr, err)
		}
		return d
	}
	serve()
	direct := read(net.JoinHostPort(pod.Status.PodIP, "9000"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ctx, cancel := context.WithCancel(b.Context())
	pf := exec.CommandContext(ctx, kubectl, "--kubeconfig", kc, "port-forward", "pod/"+pod.Name, fmt.Sprintf("%d:9000", port))
	pf.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG=")
	if err := pf.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cancel(); _ = pf.Wait() }()
	serve()
	forwarded := read(fmt.Sprintf("127.0.0.1:%d", port))
	mbps := func(d time.Duration) float64 { return float64(size) / d.Seconds() / (1 << 20) }
	b.Logf("direct %.0f MiB/s, port-forward %.0f MiB/s", mbps(direct), mbps(forwarded))
	b.ReportMetric(mbps(direct), "direct-MiB/s")
	b.ReportMetric(mbps(forwarded), "forward-MiB/s")
	b.ReportMetric(direct.Seconds()/forwarded.Seconds(), "forward/direct")
}
