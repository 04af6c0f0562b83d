package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// TestUpPodmanKilled kills `flotilla up`'s Podman service with SIGKILL: the
// node goes NotReady with the reason ContainerRuntimeDown and a message
// naming the socket, Podman is started again, the node is Ready again, and
// every pod runs again with exactly one Podman pod each (the containers
// conmon kept running are adopted, not duplicated).
func TestUpPodmanKilled(t *testing.T) {
	c := newUpCluster(t)
	c.start()
	c.eventually("the example's pods Running", 3*time.Minute, func() error { return readyPods(c.pods(), 2, "1") })
	nodeName := c.args[len(c.args)-1]
	before, err := podmanPods(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := onePodmanPodEach(c, before); err != nil {
		t.Fatalf("before the kill: %v", err)
	}

	// Follow the Node from now on: a short NotReady spell is not missed.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := c.client.Watch(ctx, "nodes", store.ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var notReady *corev1.NodeCondition
	go func() {
		for ev := range events {
			n, ok := ev.Object.(*corev1.Node)
			if !ok || n.Name != nodeName {
				continue
			}
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionFalse {
					mu.Lock()
					if notReady == nil {
						notReady = cond.DeepCopy()
					}
					mu.Unlock()
				}
			}
		}
	}()

	pidFile := filepath.Join(c.dataDir, "podman", "podman.pid")
	pid, err := readPid(pidFile)
	if err != nil {
		t.Fatalf("the Podman service's pid: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(c.dataDir, "podman", "podman.sock")
	testkit.Eventually(t, "the node NotReady with the reason", 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if notReady == nil {
			return errors.New("no Ready=False seen")
		}
		if notReady.Reason != "ContainerRuntimeDown" || !strings.Contains(notReady.Message, sock) {
			return fmt.Errorf("Ready=False %s: %s", notReady.Reason, notReady.Message)
		}
		return nil
	})
	t.Logf("node NotReady: %s", notReady.Message)
	testkit.Eventually(t, "a new Podman service", time.Minute, func() error {
		if p, err := readPid(pidFile); err != nil || p == pid {
			return fmt.Errorf("pid %d (%v)", p, err)
		}
		return nil
	})
	testkit.Eventually(t, "the node Ready again", time.Minute, func() error {
		obj, err := c.client.Get(context.Background(), "nodes", "", nodeName)
		if err != nil {
			return err
		}
		for _, cond := range obj.(*corev1.Node).Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("not Ready")
	})
	testkit.Eventually(t, "every pod Running again, one Podman pod each", 2*time.Minute, func() error {
		if err := readyPods(c.pods(), 2, "1"); err != nil {
			return err
		}
		now, err := podmanPods(c)
		if err != nil {
			return err
		}
		return onePodmanPodEach(c, now)
	})
	after, _ := podmanPods(c)
	for uid, ids := range before {
		if got := after[uid]; len(got) != 1 || got[0] != ids[0] {
			t.Errorf("pod %s: Podman pod %v before, %v after; conmon kept it running, it should be adopted", uid, ids, got)
		}
	}
}

// podmanPods maps pod UIDs to the IDs of the Podman pods labelled with them.
func podmanPods(c *upCluster) (map[string][]string, error) {
	out, err := c.podmanCLI("pod", "ps", "--format", "json")
	if err != nil {
		return nil, fmt.Errorf("podman pod ps: %v: %s", err, out)
	}
	var list []struct {
		ID     string            `json:"Id"`
		Labels map[string]string `json:"Labels"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("podman pod ps: %w: %s", err, out)
	}
	m := map[string][]string{}
	for _, p := range list {
		if uid := p.Labels[runtimeapi.LabelPodUID]; uid != "" {
			m[uid] = append(m[uid], p.ID)
		}
	}
	return m, nil
}

// onePodmanPodEach is nil when every store pod has exactly one Podman pod
// and no Podman pod belongs to no store pod.
func onePodmanPodEach(c *upCluster, pods map[string][]string) error {
	storePods := c.pods()
	for _, p := range storePods {
		if n := len(pods[string(p.UID)]); n != 1 {
			return fmt.Errorf("pod %s has %d Podman pods", p.Name, n)
		}
	}
	if len(pods) != len(storePods) {
		return fmt.Errorf("%d Podman pods for %d store pods", len(pods), len(storePods))
	}
	return nil
}
