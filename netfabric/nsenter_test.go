package netfabric

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/flotilla-dev/flotilla/node/podnet"
)

// helperEnv makes the test binary, re-executed under nsenter, run
// TestHelperUnderNsenter's body instead of skipping it.
const helperEnv = "FLOTILLA_NETFABRIC_NSENTER_HELPER"

// TestFabricUnderNsenter runs a Fabric the way the lab runs an agent: the
// whole process under `nsenter --net=/run/netns/<node>`. The helper sets up
// pods concurrently (each creates a pod namespace on a thread of its own,
// which must come back to the node namespace, not the root one), checks
// that every thread of the process is still in the node namespace and that
// the bridge is there, and tears everything down.
func TestFabricUnderNsenter(t *testing.T) {
	requireRoot(t)
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("nsenter not installed")
	}
	id := randHex(t, 8)
	name := "flv" + id + "nd"
	makeNetNS(t, name)
	path := filepath.Join(NetNSDir, name)
	bridge := "flt" + id
	cmd := exec.Command(nsenter, "--net="+path, "--", os.Args[0],
		"-test.run=^TestHelperUnderNsenter$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join([]string{path, bridge, "flv" + id + "-", t.TempDir()}, ","))
	out, err := cmd.CombinedOutput()
	t.Logf("helper output:\n%s", out)
	if err != nil || !strings.Contains(string(out), "HELPER OK") {
		t.Fatalf("helper under nsenter: %v", err)
	}
	if _, err := netlink.LinkByName(bridge); err == nil {
		t.Errorf("bridge %s appeared in the test's own namespace", bridge)
	}
	matches, _ := filepath.Glob(filepath.Join(NetNSDir, "flv"+id+"-*"))
	if len(matches) != 0 {
		t.Errorf("pod namespaces left behind: %v", matches)
	}
}

// TestHelperUnderNsenter is the body of TestFabricUnderNsenter, run in the
// re-executed binary; on its own it skips.
func TestHelperUnderNsenter(t *testing.T) {
	args := strings.Split(os.Getenv(helperEnv), ",")
	if len(args) != 4 {
		t.Skip("helper for TestFabricUnderNsenter")
	}
	path, bridge, prefix, dir := args[0], args[1], args[2], args[3]
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	nodeNS := fmt.Sprintf("net:[%d]", st.Ino)
	checkThreads := func(when string) {
		tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
		for _, task := range tasks {
			if got, err := os.Readlink(task); err == nil && got != nodeNS {
				t.Errorf("%s: thread %s is in %s, not the node's %s", when, task, got, nodeNS)
			}
		}
		if len(tasks) == 0 {
			t.Errorf("no threads found")
		}
	}
	checkThreads("start")

	_, pod, _ := net.ParseCIDR("10.250.1.0/24")
	_, cluster, _ := net.ParseCIDR("10.250.0.0/16")
	f, err := New(Config{PodCIDR: pod, ClusterCIDR: cluster, Bridge: bridge, StateDir: dir,
		NetNSPrefix: prefix, NFTable: "flt_" + bridge[3:], Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	defer func() {
		if err := f.Destroy(ctx); err != nil {
			t.Errorf("destroy: %v", err)
		}
	}()
	if err := f.Init(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := f.Setup(ctx, podnet.PodRef{UID: fmt.Sprintf("nsenter-%d", i)}); err != nil {
				t.Errorf("setup %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	checkThreads("after 8 concurrent pod setups")
	if _, err := netlink.LinkByName(bridge); err != nil {
		t.Errorf("bridge not in the node namespace: %v", err)
	}
	if !t.Failed() {
		fmt.Println("HELPER OK")
	}
}
