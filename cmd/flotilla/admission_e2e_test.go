package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
)

// TestUpAdmission: the write pipeline as a kubectl user of `flotilla up`
// meets it, through the real binary. An invalid Deployment is refused
// with its field (it once crashed the whole process), the objects from
// Git carry Kubernetes' defaults without being re-applied, `kubectl
// expose` gets a ClusterIP, a dry run creates nothing, and the process
// lives on and stops cleanly. It also runs checkRBAC, checkPodSecurity and
// checkSOPSSecret on the same cluster.
func TestUpAdmission(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed")
	}
	c := newUpCluster(t)
	sopsKey := withSOPSKey(t, c)
	agentAddr := freeAddr(t)
	c.args = append(c.args, "--agent-addr", agentAddr)
	c.start()
	home := t.TempDir()
	run := kubectlAs(t, kubectl, filepath.Join(c.dataDir, "kubeconfig.yaml"), home)
	expect := func(out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
	}
	manifest := func(name string, replicas int) string {
		p := filepath.Join(home, name+".yaml")
		y := fmt.Sprintf("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: %s\nspec:\n  replicas: %d\n  selector:\n    matchLabels: {app: %[1]s}\n"+
			"  template:\n    metadata:\n      labels: {app: %[1]s}\n    spec:\n      containers: [{name: web, image: localhost/busybox:latest, command: [sleep, '3600']}]\n", name, replicas)
		if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	expect(run(true, "apply", "-f", manifest("broken", -1)), `The Deployment "broken" is invalid: spec.replicas`)
	expect(run(false, "apply", "--dry-run=server", "-f", manifest("trial", 1)), "created (server dry run)")
	expect(run(true, "get", "deployment", "trial"), "not found")
	expect(run(true, "get", "deployment", "broken"), "not found")

	// The example from Git: stored with defaults, described without holes.
	expect(run(false, "get", "deployment", "hello", "-o", "yaml"),
		"revisionHistoryLimit: 10", "progressDeadlineSeconds: 600", "maxSurge: 25%", "terminationMessagePolicy: File",
		"timeoutSeconds: 1", "successThreshold: 1", "failureThreshold: 3")
	// (whatever the alignment: kubectl releases pad describe differently)
	squeeze := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	expect(squeeze(run(false, "describe", "service", "hello")), "Type: ClusterIP", "Port: http 80/TCP", "TargetPort: http/TCP")
	// A sync of the unchanged commit does not re-apply it: the
	// deployment's spec generation stays.
	gen := func() int64 {
		obj, err := c.client.Get(t.Context(), "deployments", "default", "hello")
		if err != nil {
			t.Fatal(err)
		}
		return obj.(*appsv1.Deployment).Generation
	}
	before := gen()
	runCLI(t, c, "sync")
	if after := gen(); after != before {
		t.Errorf("a sync of the same commit changed the deployment's generation %d → %d", before, after)
	}

	expect(run(false, "expose", "deployment", "hello", "--name", "hello-direct", "--port", "8080"), "service/hello-direct exposed")
	if ip := run(false, "get", "service", "hello-direct", "-o", "jsonpath={.spec.clusterIP}"); !strings.HasPrefix(ip, "10.96.") {
		t.Errorf("exposed service's cluster IP %q", ip)
	}
	// A valid deployment made with kubectl runs.
	expect(run(false, "apply", "-f", manifest("sleeper", 1)), "deployment.apps/sleeper created")
	c.eventually("the sleeper's pod runs", 3*time.Minute, func() error {
		out := run(false, "get", "pods", "-l", "app=sleeper", "--no-headers")
		if !strings.Contains(out, "Running") {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	checkCLIForms(t, c)
	checkLogs(t, c, run)
	checkStreams(t, c, kubectl, filepath.Join(c.dataDir, "kubeconfig.yaml"), home, run)
	checkEvents(t, c, run)
	// A new revision by a JSON patch, then kubectl rollout undo (a JSON
	// patch of the template back to the previous ReplicaSet's).
	expect(run(false, "patch", "deployment", "sleeper", "--type", "json", "-p",
		`[{"op":"replace","path":"/spec/template/spec/containers/0/command","value":["sleep","3601"]}]`), "deployment.apps/sleeper patched")
	expect(run(false, "rollout", "status", "deployment/sleeper", "--timeout", "3m"), "successfully rolled out")
	expect(run(false, "rollout", "undo", "deployment/sleeper"), "deployment.apps/sleeper rolled back")
	expect(run(false, "rollout", "status", "deployment/sleeper", "--timeout", "3m"), "successfully rolled out")
	expect(run(false, "get", "deployment", "sleeper", "-o", "jsonpath={.spec.template.spec.containers[0].command}"), `["sleep","3600"]`)
	checkRBAC(t, c, kubectl, run)
	checkMetrics(t, c, kubectl, agentAddr, run)
	checkPodSecurity(t, c, run)
	checkSOPSSecret(t, c, sopsKey, run)
	if c.cmd.ProcessState != nil {
		t.Fatalf("flotilla up exited: %s", c.cmd.ProcessState)
	}
	if err := c.stop(); err != nil {
		t.Fatalf("flotilla up did not stop cleanly: %v", err)
	}
}

// checkRBAC is issue 10's view user: a kubeconfig minted by `flotilla
// kubeconfig`, bound to view by a ClusterRoleBinding committed to Git, can
// read and not write; a RoleBinding committed next lets it delete pods in
// default after the sync.
func checkRBAC(t *testing.T, c *upCluster, kubectl string, admin func(bool, ...string) string) {
	home := t.TempDir()
	kc := filepath.Join(home, "vera.kubeconfig")
	if out, err := exec.Command(flotillaBin, "kubeconfig", "--data-dir", c.dataDir, "--user", "vera", "--group", "viewers",
		"--ttl", "1h", "-o", kc).CombinedOutput(); err != nil {
		t.Fatalf("flotilla kubeconfig: %v\n%s", err, out)
	}
	vera := kubectlAs(t, kubectl, kc, home)
	canI := func(args ...string) func() error {
		return func() error {
			cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kc, "--cache-dir", filepath.Join(home, "cache"), "auth", "can-i"}, args...)...)
			cmd.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG=")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("can-i %s: %v: %s", strings.Join(args, " "), err, out)
			}
			return nil
		}
	}
	expect := func(out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
	}
	commit := func(file, content, msg string) {
		t.Helper()
		if err := writeRepoFile(c, file, content); err != nil {
			t.Fatal(err)
		}
		c.git("add", file)
		c.git("commit", "-qm", msg)
		runCLI(t, c, "sync")
	}
	// Bound to nothing yet: vera is authenticated but may not list pods.
	expect(vera(false, "auth", "whoami"), "vera", "viewers")
	expect(vera(true, "get", "pods"), `User "vera" cannot list resource "pods"`)

	commit("viewers.yaml", `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: viewers
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects:
- {kind: Group, name: viewers}
`, "viewers may view")
	c.eventually("vera can list pods after the sync", 20*time.Second, canI("list", "pods"))
	expect(vera(false, "get", "pods"), "hello-")
	pod := strings.TrimSpace(admin(false, "get", "pods", "-l", "app=sleeper", "-o", "jsonpath={.items[0].metadata.name}"))
	expect(vera(true, "delete", "pod", pod, "--wait=false"), "Forbidden", `cannot delete resource "pods"`)
	expect(vera(true, "auth", "can-i", "delete", "pods"), "no")
	expect(vera(true, "get", "secrets"), `cannot list resource "secrets"`)

	commit("vera-edits.yaml", `apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: vera-edits
  namespace: default
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects:
- {kind: User, name: vera}
`, "vera may edit default")
	c.eventually("vera can delete pods in default after the sync", 20*time.Second, canI("delete", "pods"))
	expect(vera(true, "auth", "can-i", "delete", "pods", "-n", "kube-system"), "no")
	expect(vera(false, "delete", "pod", pod, "--wait=false"), "deleted")
}

// kubectlAs runs the real kubectl with kubeconfig kc and home as its HOME;
// the function it returns fails the test unless kubectl fails exactly when
// wantFail says so.
func kubectlAs(t *testing.T, kubectl, kc, home string) func(wantFail bool, args ...string) string {
	return func(wantFail bool, args ...string) string {
		t.Helper()
		cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kc, "--cache-dir", filepath.Join(home, "cache")}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG=")
		out, err := cmd.CombinedOutput()
		if (err != nil) != wantFail {
			t.Fatalf("kubectl --kubeconfig %s %s: %v\n%s", filepath.Base(kc), strings.Join(args, " "), err, out)
		}
		return string(out)
	}
}

// checkCLIForms is issue 12's CLI points that the example's README relies
// on: -o jsonpath, the TYPE/NAME form of get and logs.
func checkCLIForms(t *testing.T, c *upCluster) {
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(flotillaBin, append([]string{"--kubeconfig", filepath.Join(c.dataDir, "kubeconfig.yaml")}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("flotilla %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if ip := cli("get", "svc", "hello", "-o", "jsonpath={.spec.clusterIP}"); !strings.HasPrefix(ip, "10.96.") {
		t.Errorf("get svc hello -o jsonpath={.spec.clusterIP}: %q", ip)
	}
	if out := cli("get", "deploy/hello", "svc/hello"); !strings.Contains(out, "deployment.apps/hello") || !strings.Contains(out, "service/hello") {
		t.Errorf("get deploy/hello svc/hello:\n%s", out)
	}
	if out := cli("get", "pods", "-l", "app=hello", "-o", "custom-columns=NAME:.metadata.name,PHASE:.status.phase"); !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "Running") {
		t.Errorf("get pods -o custom-columns:\n%s", out)
	}
	if out := cli("logs", "deploy/hello"); !strings.Contains(out, "using pod/hello-") {
		t.Errorf("logs deploy/hello does not say which pod:\n%s", out)
	}
}
