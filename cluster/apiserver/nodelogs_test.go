package apiserver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// TestNodeLogsLeaveNothingBehind: many `flotilla logs` calls proxied to an
// agent reuse connections, so the server's goroutine count ends where it
// was (a transport per call kept each call's connection and two goroutines).
func TestNodeLogsLeaveNothingBehind(t *testing.T) {
	agent := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/containerLogs/default/web/app" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "unexpected "+r.URL.Path, http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "hello from the agent")
	}))
	defer agent.Close()
	host, port, err := net.SplitHostPort(agent.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	st := store.MemoryFor(t)
	ctx := context.Background()
	if _, err := st.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: host}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "app", Image: "x"}}}}); err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	logs := NodeLogs{Store: st, Token: "tok", Port: p}
	call := func() {
		var buf bytes.Buffer
		if err := logs.PodLogs(ctx, "default", "web", LogOptions{}, &buf); err != nil {
			t.Fatal(err)
		}
		if buf.String() != "hello from the agent\n" {
			t.Fatalf("logs = %q", buf.String())
		}
	}
	call() // the shared client and its first connection
	before := runtime.NumGoroutine()
	for i := 0; i < 300; i++ {
		call()
	}
	testkit.EventuallyTrue(t, "the goroutine count back where it was", 10*time.Second, func() bool {
		return runtime.NumGoroutine() <= before+4
	})
}
