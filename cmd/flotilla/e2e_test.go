package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vishvananda/netlink"

	"github.com/flotilla-dev/flotilla/schema"
)

// TestUpGitOpsLoop is the one-node GitOps loop as a user lives it, through
// the real binary: `flotilla up` on the bundled example, commits that scale,
// change env and prune, a refused bad commit, a kill -9 in the middle of a
// rollout, and a clean stop.
func TestUpGitOpsLoop(t *testing.T) {
	c := newUpCluster(t)
	c.start()

	// The example's two pods run as real containers that answer HTTP on
	// their pod IPs, with the ConfigMap's greeting and their own hostname.
	c.eventually("the example's 2 pods are Running and ready", 3*time.Minute, func() error {
		return readyPods(c.pods(), 2, "1")
	})
	for _, p := range c.pods() {
		body, err := httpGet("http://" + p.Status.PodIP + ":8080/")
		if err != nil {
			t.Fatalf("GET pod %s at %s: %v", p.Name, p.Status.PodIP, err)
		}
		want := fmt.Sprintf("Hello from Flotilla from %s, version 1", p.Name)
		if strings.TrimSpace(body) != want {
			t.Fatalf("pod %s answered %q, want %q", p.Name, body, want)
		}
	}

	// The example's Service: a virtual IP from the service CIDR that this
	// node (the host itself) reaches, answered by the pods.
	obj, err := c.client.Get(t.Context(), "services", "default", "hello")
	if err != nil {
		t.Fatal(err)
	}
	vip := obj.(*corev1.Service).Spec.ClusterIP
	if !strings.HasPrefix(vip, "10.96.") {
		t.Fatalf("service hello has cluster IP %q, want one from 10.96.0.0/16", vip)
	}
	c.eventually("the service's VIP answers from the host", time.Minute, func() error {
		body, err := httpGet("http://" + vip + "/")
		if err != nil || !strings.Contains(body, "Hello from Flotilla from hello-") {
			return fmt.Errorf("%q, %v", body, err)
		}
		return nil
	})

	// Replicas and env change in one commit: a rolling update to 3 new pods.
	c.edit("deployment.yaml", "replicas: 2", "replicas: 3", `value: "1"`, `value: "2"`)
	c.git("commit", "-qam", "three replicas, version 2")
	c.eventually("3 pods of version 2", 3*time.Minute, func() error { return readyPods(c.pods(), 3, "2") })
	body, err := httpGet("http://" + c.pods()[0].Status.PodIP + ":8080/")
	if err != nil || !strings.Contains(body, "version 2") {
		t.Fatalf("after the rollout a pod answered %q, %v; want version 2", body, err)
	}

	// A bad commit is refused whole, located, and changes nothing that runs.
	before := uids(c.pods())
	live := c.syncStatus().Status.LastAppliedCommit
	c.edit("deployment.yaml", "replicas: 3", "replicas: -1")
	c.git("commit", "-qam", "oops")
	c.eventually("the bad commit is refused", time.Minute, func() error {
		s := c.syncStatus().Status
		if s.Result != schema.SyncRefused {
			return fmt.Errorf("result %s", s.Result)
		}
		return nil
	})
	s := c.syncStatus().Status
	if s.LastAppliedCommit != live {
		t.Errorf("live commit moved from %s to %s on a refused commit", live, s.LastAppliedCommit)
	}
	if len(s.Problems) != 1 || s.Problems[0].File != "deployment.yaml" || s.Problems[0].Line == 0 || s.Problems[0].Field != "spec.replicas" {
		t.Errorf("problems = %+v, want one at deployment.yaml:LINE spec.replicas", s.Problems)
	}
	out := runCLI(t, c, "status")
	if !strings.Contains(out, "deployment.yaml:") || !strings.Contains(out, "Refused") {
		t.Errorf("flotilla status does not show the refused commit:\n%s", out)
	}
	if after := uids(c.pods()); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("pods changed on a refused commit: %v → %v", before, after)
	}

	// The next good commit applies; a manifest removed from Git is pruned.
	c.git("revert", "--no-edit", "HEAD")
	if err := writeRepoFile(c, "extra.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  a: b\n"); err != nil {
		t.Fatal(err)
	}
	c.git("add", "-A")
	c.git("commit", "-qm", "an extra ConfigMap")
	c.eventually("the extra ConfigMap exists", time.Minute, func() error {
		_, err := c.client.Get(t.Context(), "configmaps", "default", "extra")
		return err
	})
	c.git("rm", "-q", "extra.yaml")
	c.git("commit", "-qm", "no extra")
	c.eventually("the extra ConfigMap is pruned", time.Minute, func() error {
		if _, err := c.client.Get(t.Context(), "configmaps", "default", "extra"); !isNotFound(err) {
			return fmt.Errorf("still there (err %v)", err)
		}
		return nil
	})

	// kill -9 in the middle of a rollout, then start again: it converges
	// with no duplicate pods and no orphaned containers.
	c.edit("deployment.yaml", "replicas: 3", "replicas: 5", `value: "2"`, `value: "3"`)
	c.git("commit", "-qam", "five replicas, version 3")
	c.eventually("the rollout has begun", time.Minute, func() error {
		for _, p := range c.pods() {
			if envValue(p, "VERSION") == "3" {
				return nil
			}
		}
		return fmt.Errorf("no pod of version 3 yet")
	})
	c.kill9()
	c.start()
	c.eventually("5 pods of version 3 after the restart", 3*time.Minute, func() error { return readyPods(c.pods(), 5, "3") })
	c.eventually("podman ps -a matches the store", 2*time.Minute, func() error {
		out, err := c.podmanCLI("ps", "-a", "--format", `{{index .Labels "flotilla.dev/pod-uid"}}`)
		if err != nil {
			return fmt.Errorf("podman ps: %v: %s", err, out)
		}
		got := strings.Fields(out)
		want := uids(c.pods())
		if strings.Join(sortedCopy(got), ",") != strings.Join(want, ",") {
			return fmt.Errorf("containers of pods %v, store has %v", got, want)
		}
		return nil
	})

	// Ctrl-C (SIGTERM) stops it cleanly; the pods keep running.
	if err := c.stop(); err != nil {
		t.Fatalf("flotilla up did not stop cleanly: %v", err)
	}
	out, err = c.podmanCLI("ps", "--filter", "status=running", "--format", "{{.ID}}")
	if err != nil || len(strings.Fields(out)) != 5 {
		t.Errorf("after stop, podman ps shows %q (%v), want 5 running containers", out, err)
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// runCLI runs the flotilla CLI against the cluster and returns its output.
func runCLI(t *testing.T, c *upCluster, args ...string) string {
	t.Helper()
	cmd := exec.Command(flotillaBin, append([]string{"--kubeconfig", filepath.Join(c.dataDir, "kubeconfig.yaml")}, args...)...)
	out, _ := cmd.CombinedOutput() // status exits 1 on a refused commit
	return string(out)
}

func writeRepoFile(c *upCluster, name, content string) error {
	return os.WriteFile(filepath.Join(c.dataDir, "repo", name), []byte(content), 0o644)
}

// TestUpRefusesARoutedPodCIDR: `flotilla up` whose pod CIDR holds a route of
// another link (a leftover bridge, a VPN) stops at once and says which route
// and how to remove it, instead of starting pods the host cannot reach.
func TestUpRefusesARoutedPodCIDR(t *testing.T) {
	c := newUpCluster(t)
	other := "ftr" + randomHex(t, 4)
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: other}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if link, err := netlink.LinkByName(other); err == nil {
			_ = netlink.LinkDel(link)
		}
	})
	link, err := netlink.LinkByName(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	half := &net.IPNet{IP: c.fabric.PodCIDR.IP, Mask: net.CIDRMask(25, 32)}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: half}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, flotillaBin, c.args...).CombinedOutput()
	want := fmt.Sprintf("overlaps the host's route %s dev %s", half, other)
	if err == nil || !strings.Contains(string(out), want) || !strings.Contains(string(out), "ip route del "+half.String()+" dev "+other) ||
		strings.Contains(string(out), "panic") {
		t.Fatalf("flotilla up with a routed pod CIDR: %v\n%s\nwant a refusal with %q and how to remove the route", err, out, want)
	}
}
