package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkEvents: on `flotilla up` with Podman, a pod whose image cannot be
// pulled (a registry on a closed loopback port) shows the kubelet's Failed
// and BackOff Events (ErrImagePull, ImagePullBackOff) in kubectl describe
// and flotilla describe; a scale-up shows ScalingReplicaSet and
// SuccessfulCreate; the Git sync shows Synced; and kubectl events reads them.
func checkEvents(t *testing.T, c *upCluster, kubectl func(bool, ...string) string) {
	const pod = `apiVersion: v1
kind: Pod
metadata: {name: badimage}
spec:
  containers:
  - {name: c, image: "127.0.0.1:1/nope/absent:1"}
`
	commit := c.commitFiles("a pod with an image that cannot be pulled", "events", map[string]string{"pod.yaml": pod})
	c.waitAttempt(commit, time.Minute)
	c.eventually("badimage's pull failure in kubectl describe", 3*time.Minute, func() error {
		out := kubectl(false, "describe", "pod", "badimage")
		for _, want := range []string{"Events:", "Failed", "Error: ErrImagePull", "BackOff", `Back-off pulling image "127.0.0.1:1/nope/absent:1"`, "Error: ImagePullBackOff", "kubelet"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("describe lacks %q:\n%s", want, out)
			}
		}
		if !strings.Contains(out, "(x") {
			return fmt.Errorf("no repeated event counted (xN over …):\n%s", out)
		}
		t.Logf("kubectl describe pod badimage:\n%s", out)
		return nil
	})
	cmd := exec.Command(flotillaBin, "--kubeconfig", filepath.Join(c.dataDir, "kubeconfig.yaml"), "describe", "pod", "badimage")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Events:") || !strings.Contains(string(out), "ImagePullBackOff") {
		t.Errorf("flotilla describe pod badimage: %v\n%s", err, out)
	}
	if out := kubectl(false, "events", "--for", "pod/badimage"); !strings.Contains(out, "BackOff") {
		t.Errorf("kubectl events --for pod/badimage:\n%s", out)
	}
	if out := kubectl(false, "get", "events", "-A"); !strings.Contains(out, "Synced") || !strings.Contains(out, "Applied commit "+commit[:7]) {
		t.Errorf("kubectl get events -A has no Synced event of %s:\n%s", commit[:7], out)
	}
	kubectl(false, "scale", "deployment", "sleeper", "--replicas", "2")
	c.eventually("the scale-up's events", 2*time.Minute, func() error {
		out := kubectl(false, "describe", "deployment", "sleeper")
		if !strings.Contains(out, "ScalingReplicaSet") || !strings.Contains(out, "from 1 to 2") {
			return fmt.Errorf("describe deployment:\n%s", out)
		}
		out = kubectl(false, "get", "events", "--field-selector", "reason=SuccessfulCreate")
		if !strings.Contains(out, "replicaset/sleeper-") {
			return fmt.Errorf("no SuccessfulCreate of sleeper's replicaset:\n%s", out)
		}
		return nil
	})
	kubectl(false, "scale", "deployment", "sleeper", "--replicas", "1")
}
