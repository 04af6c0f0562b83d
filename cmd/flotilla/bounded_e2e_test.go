package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/schema"
)

// Bounded input through the real binary: a Git remote that accepts TCP and
// never answers fails the fetch within its timeout, and `flotilla sync`
// still answers.

// hungGitServer accepts connections on loopback and never answers.
func hungGitServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String() + "/org/site.git"
}

// flotillaSync runs `flotilla sync` against c and returns its output and
// exit code; it fails the test if sync does not return within a minute.
func (c *upCluster) flotillaSync() (string, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, flotillaBin, "sync", "--kubeconfig", filepath.Join(c.dataDir, "kubeconfig.yaml"))
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		c.t.Fatalf("flotilla sync did not answer within a minute:\n%s", out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		c.t.Fatalf("flotilla sync: %v", err)
	}
	return string(out), 0
}

func TestUpStalledRemote(t *testing.T) {
	c := newUpCluster(t)
	const timeout = 30 * time.Second // longer than the sync trigger's 20s answer bound
	c.args = append(c.args, "--repo", hungGitServer(t), "--git-timeout", timeout.String())
	c.start() // returns once the first sync's status is written: its fetch failed

	st := c.syncStatus().Status
	if st.Result != schema.SyncFetchFailed || !strings.Contains(st.Message, "no answer within "+timeout.String()) {
		t.Fatalf("status after the first sync = %s: %s", st.Result, st.Message)
	}
	if cond := meta.FindStatusCondition(st.Conditions, gitsync.ConditionReady); cond == nil || cond.Reason != gitsync.ReasonFetchFailed {
		t.Errorf("Ready = %+v, want reason %s", cond, gitsync.ReasonFetchFailed)
	}

	// `flotilla sync` asks for a sync, which stalls on the remote: it
	// answers anyway, saying so, and so do several at once.
	out, code := c.flotillaSync()
	if code != 3 || !strings.Contains(out, "In progress:") {
		t.Fatalf("flotilla sync exited %d, want 3 (still running):\n%s", code, out)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, code := c.flotillaSync(); code != 3 && code != 1 {
				errs <- fmt.Errorf("flotilla sync exited %d:\n%s", code, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The API keeps serving meanwhile.
	if _, _, err := c.client.List(context.Background(), "nodes", store.ListOptions{}); err != nil {
		t.Errorf("the API stopped answering: %v", err)
	}
}
