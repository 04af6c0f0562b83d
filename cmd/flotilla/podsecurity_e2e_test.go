package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/schema"
)

// checkPodSecurity is issue 11's pod security on `up`: Pod Security
// admission refuses a pod that mounts the host's root, by a commit
// (located) and by kubectl (422 with the PSA message), and admits it in a
// namespace labelled privileged, where it runs; a securityContext is
// applied by Podman as asked, and runAsNonRoot keeps a root image from
// starting, saying why.
func checkPodSecurity(t *testing.T, c *upCluster, kubectl func(bool, ...string) string) {
	live := c.syncStatus().Status.LastAppliedCommit
	const rootPod = `apiVersion: v1
kind: Pod
metadata: {name: host-root, namespace: %s}
spec:
  containers: [{name: c, image: localhost/busybox:latest, command: [sleep, "3600"]}]
  volumes: [{name: host, hostPath: {path: /}}]
`
	commit := c.commitFiles("a pod with the host's root", "psa", map[string]string{"root.yaml": fmt.Sprintf(rootPod, "default")})
	st := c.waitAttempt(commit, time.Minute)
	if st.Result != schema.SyncRefused || st.LastAppliedCommit != live {
		t.Fatalf("commit with a hostPath pod: %s, live %s (want Refused, %s live): %s", st.Result, st.LastAppliedCommit, live, st.Message)
	}
	errs := schema.Problems(st.Problems).Errors()
	if len(errs) != 1 || errs[0].File != "psa/root.yaml" || errs[0].Line != 1 || errs[0].Field != "spec" ||
		!strings.Contains(errs[0].Reason, `violates PodSecurity "baseline:latest": hostPath volumes (volume "host")`) {
		t.Fatalf("problems %+v, want one at psa/root.yaml:1 spec with the PSA message", st.Problems)
	}
	manifest := filepath.Join(t.TempDir(), "root.yaml")
	if err := os.WriteFile(manifest, []byte(fmt.Sprintf(rootPod, "default")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := kubectl(true, "apply", "-f", manifest); !strings.Contains(out, `The Pod "host-root" is invalid: spec: Forbidden: violates PodSecurity "baseline:latest": hostPath volumes (volume "host")`) {
		t.Errorf("kubectl apply of a hostPath pod:\n%s", out)
	}

	const secPods = `apiVersion: v1
kind: Pod
metadata: {name: secctx}
spec:
  securityContext: {fsGroup: 2000}
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - {name: uid, image: localhost/busybox:latest, command: [sh, -c, "id -u; id -G; stat -c %g /data; sleep 3600"],
     securityContext: {runAsUser: 1000}, volumeMounts: [{name: data, mountPath: /data}]}
  - {name: ro, image: localhost/busybox:latest, command: [sh, -c, "touch /x && echo writable || echo read-only; sleep 3600"],
     securityContext: {readOnlyRootFilesystem: true}}
  - {name: caps, image: localhost/busybox:latest, command: [sh, -c, "grep -E 'CapEff|NoNewPrivs|Seccomp:' /proc/self/status; sleep 3600"],
     securityContext: {capabilities: {drop: [ALL]}, allowPrivilegeEscalation: false}}
---
apiVersion: v1
kind: Pod
metadata: {name: nonroot}
spec:
  securityContext: {runAsNonRoot: true}
  containers: [{name: c, image: localhost/busybox:latest, command: [sleep, "3600"]}]
`
	commit = c.commitFiles("privileged ops; security contexts", "psa", map[string]string{
		"ops.yaml":  "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ops\n  labels: {pod-security.kubernetes.io/enforce: privileged}\n",
		"root.yaml": fmt.Sprintf(rootPod, "ops"),
		"sec.yaml":  secPods,
	})
	if st := c.waitAttempt(commit, time.Minute); st.Result != schema.SyncApplied {
		t.Fatalf("commit %s: %s: %s %+v", commit[:12], st.Result, st.Message, st.Problems)
	}
	c.eventually("the privileged namespace's hostPath pod and secctx run", 2*time.Minute, func() error {
		for _, ref := range []string{"ops/host-root", "default/secctx"} {
			ns, name, _ := strings.Cut(ref, "/")
			if out := kubectl(false, "get", "pod", name, "-n", ns, "-o", "jsonpath={.status.phase}"); out != "Running" {
				return fmt.Errorf("pod %s is %q", ref, out)
			}
		}
		return nil
	})
	logs := func(container string) string {
		var out string
		c.eventually("container "+container+" logs", 30*time.Second, func() error {
			if out = kubectl(false, "logs", "secctx", "-c", container); strings.TrimSpace(out) == "" {
				return fmt.Errorf("no log yet")
			}
			return nil
		})
		return out
	}
	if out := strings.Fields(logs("uid")); len(out) < 3 || out[0] != "1000" || !strings.Contains(" "+strings.Join(out[1:len(out)-1], " ")+" ", " 2000 ") || out[len(out)-1] != "2000" {
		t.Errorf("runAsUser 1000, fsGroup 2000: id -u; id -G; stat -c %%g /data printed %q", out)
	}
	if out := logs("ro"); !strings.Contains(out, "read-only") {
		t.Errorf("readOnlyRootFilesystem: writing /x: %q", out)
	}
	out := logs("caps")
	for _, want := range []string{"CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(out, want) {
			t.Errorf("drop ALL, allowPrivilegeEscalation false, RuntimeDefault: /proc/self/status lacks %q:\n%s", want, out)
		}
	}
	c.eventually("nonroot waits, saying why", time.Minute, func() error {
		for _, p := range c.pods() {
			if p.Name != "nonroot" {
				continue
			}
			for _, cs := range p.Status.ContainerStatuses {
				if w := cs.State.Waiting; w != nil && w.Reason == "CreateContainerConfigError" &&
					strings.Contains(w.Message, "container has runAsNonRoot and image will run as root") {
					return nil
				}
				return fmt.Errorf("container %s: %+v", cs.Name, cs.State)
			}
			return fmt.Errorf("no container status yet (%s)", p.Status.Phase)
		}
		return fmt.Errorf("no pod nonroot")
	})
	for _, p := range c.pods() {
		if p.Name == "nonroot" && p.Status.Phase == corev1.PodRunning {
			t.Errorf("nonroot runs as root")
		}
	}
	c.commitFiles("drop the pod security pods", "psa", nil)
}
