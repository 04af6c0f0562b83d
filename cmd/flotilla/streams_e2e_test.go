package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// checkStreams is issue 12's streams through the real kubectl on up:
// exec (output, stdin, exit code, a terminal), port-forward to a pod's
// HTTP port and to a service's, and cp both ways of a 10 MB file,
// byte-exact.
func checkStreams(t *testing.T, c *upCluster, kubectl, kc, home string, run func(bool, ...string) string) {
	pod := strings.TrimPrefix(strings.TrimSpace(run(false, "get", "pods", "-l", "app=hello", "-o", "name")), "pod/")
	if i := strings.IndexByte(pod, '\n'); i >= 0 {
		pod = pod[:i]
	}
	if got := strings.TrimSpace(run(false, "exec", pod, "--", "hostname")); got != pod {
		t.Errorf("kubectl exec %s -- hostname printed %q", pod, got)
	}
	var extraEnv []string
	k := func(stdin io.Reader, args ...string) (string, error) {
		cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kc, "--cache-dir", filepath.Join(home, "cache")}, args...)...)
		cmd.Env = append(append(os.Environ(), "HOME="+home, "KUBECONFIG="), extraEnv...)
		cmd.Stdin = stdin
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// kubectl 1.32 speaks WebSocket v5 first; older ones, and this one
	// told so, SPDY.
	for _, env := range [][]string{nil, {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"}} {
		extraEnv = env
		if out, err := k(strings.NewReader("hi\n"), "exec", "-i", pod, "--", "cat"); err != nil || strings.TrimSpace(out) != "hi" {
			t.Errorf("echo hi | kubectl exec -i -- cat (%v): %v %q", env, err, out)
		}
		out, err := k(nil, "exec", pod, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 || !strings.Contains(out, "out") || !strings.Contains(out, "err") {
			t.Errorf("kubectl exec -- sh -c 'echo out; echo err >&2; exit 3' (%v): %v %q", env, err, out)
		}
	}
	extraEnv = nil
	// A terminal: kubectl -t needs one of its own, which script gives it.
	if script, err := exec.LookPath("script"); err == nil {
		cmd := exec.Command(script, "-qec", fmt.Sprintf("%s --kubeconfig %s exec -it %s -- tty", kubectl, kc, pod), "/dev/null")
		cmd.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG=")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "/dev/pts/") {
			t.Errorf("kubectl exec -it -- tty: %v %q", err, out)
		}
	}
	// port-forward to the pod's port 8080 (httpd), on a free local port:
	// over the WebSocket tunnel (kubectl 1.31+'s first choice; its -v=4
	// log names a fallback to SPDY, which must not happen) and over SPDY.
	// The SPDY run goes to the service (kubectl picks one of its pods and
	// the target port behind port 80).
	for _, websocket := range []string{"true", "false"} {
		target, remote, want := "pod/"+pod, "8080", pod
		if websocket == "false" {
			target, remote, want = "svc/hello", "80", "hello-"
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		ctx, cancel := context.WithCancel(t.Context())
		pf := exec.CommandContext(ctx, kubectl, "--kubeconfig", kc, "-v=4", "port-forward", target, fmt.Sprintf("%d:%s", port, remote))
		pf.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG=", "KUBECTL_PORT_FORWARD_WEBSOCKETS="+websocket)
		var pfOut testkit.Buffer
		pf.Stdout, pf.Stderr = &pfOut, &pfOut
		if err := pf.Start(); err != nil {
			t.Fatal(err)
		}
		c.eventually("HTTP through kubectl port-forward "+target+" (KUBECTL_PORT_FORWARD_WEBSOCKETS="+websocket+")", time.Minute, func() error {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(b), want) {
				return fmt.Errorf("answer %q (port-forward: %s)", b, pfOut.String())
			}
			return nil
		})
		cancel()
		_ = pf.Wait()
		if websocket == "true" && strings.Contains(pfOut.String(), "fallback to secondary dialer") {
			t.Errorf("kubectl port-forward fell back to SPDY:\n%s", pfOut.String())
		}
	}

	// cp both ways, 10 MB of random bytes.
	src := filepath.Join(home, "big")
	data := make([]byte, 10<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	run(false, "cp", src, pod+":/tmp/big")
	back := filepath.Join(home, "big.back")
	run(false, "cp", pod+":/tmp/big", back)
	got, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("kubectl cp round trip: %d bytes back, differ from the %d sent", len(got), len(data))
	}
}
