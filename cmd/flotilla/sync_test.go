package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/schema"
)

// TestSyncHandlerAnswersWhileTheRemoteStalls: behind a remote that
// accepts TCP and never answers, every POST of the sync trigger is answered
// within its bound with the status and "a sync is in progress", and 100 of
// them leave no goroutine behind.
func TestSyncHandlerAnswersWhileTheRemoteStalls(t *testing.T) {
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
	v, err := schema.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	s, err := gitsync.New(gitsync.Config{
		URL: "http://" + ln.Addr().String() + "/r.git", WorkDir: filepath.Join(t.TempDir(), "clone"),
		Store: store.MemoryFor(t), Loader: v, Logger: testkit.Logger(t), FetchTimeout: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	testkit.EventuallyTrue(t, "the first sync is stalled", 0, func() bool { return s.State().Syncing })

	h := syncHandlerWait(s, 20*time.Millisecond)
	for range 100 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/sync", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("code %d: %s", rec.Code, rec.Body)
		}
		obj, err := schema.DecodeAny(rec.Body.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		c := meta.FindStatusCondition(obj.(*schema.SyncStatus).Status.Conditions, gitsync.ConditionReconciling)
		if c == nil || c.Reason != gitsync.ReasonProgressing {
			t.Fatalf("answer without the sync in progress: %s", rec.Body)
		}
	}
	if st := s.State(); st.Started != 1 {
		t.Errorf("%d syncs started behind the stalled one, want it alone", st.Started)
	}
	cancel() // ends the stalled fetch
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	testkit.Eventually(t, "no goroutine left behind", 0, func() error {
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			return fmt.Errorf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}
