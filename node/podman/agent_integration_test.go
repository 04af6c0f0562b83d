//go:build linux

package podman

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/netfabric"
	"github.com/flotilla-dev/flotilla/node"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)[:n]
}

// testFabric is a real netfabric with unique names, destroyed at cleanup.
func testFabric(t *testing.T) *netfabric.Fabric {
	podCIDR := testkit.FreeSubnet(t, "10.251.%d.0/24")
	_, cluster, _ := net.ParseCIDR("10.251.0.0/16")
	suffix := randHex(t, 8)
	f, err := netfabric.New(netfabric.Config{
		PodCIDR: podCIDR, ClusterCIDR: cluster, Bridge: "fln" + suffix, StateDir: t.TempDir(),
		NetNSPrefix: "fln" + suffix + "-", NFTable: "fln_" + suffix,
		Logger: testkit.LoggerAt(t, slog.LevelInfo),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Destroy(context.Background()); err != nil {
			t.Errorf("fabric cleanup: %v", err)
		}
	})
	if err := f.Init(context.Background()); err != nil {
		t.Fatalf("fabric init: %v", err)
	}
	return f
}

// TestAgentOnPodman runs the node agent on real Podman, netfabric and the
// Badger store: pods start with pod IPs that answer from the host, env
// comes from a ConfigMap, a restarted agent adopts its pods and removes an
// orphan, and a deleted pod's container goes away.
func TestAgentOnPodman(t *testing.T) {
	svc := startTestService(t)
	rt := svc.Runtime
	fab := testFabric(t)
	st := store.MemoryFor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	node1 := "it-" + randHex(t, 6)
	podDir := t.TempDir()

	if _, err := st.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "greet", Namespace: "default"},
		Data: map[string]string{"GREETING": "hi-from-configmap", "page": "hello flotilla"}}); err != nil {
		t.Fatal(err)
	}
	grace := int64(1)
	cmKey := func(key string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "greet"}, Key: key}}
	}
	web := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: corev1.PodSpec{
		NodeName: node1, TerminationGracePeriodSeconds: &grace,
		Containers: []corev1.Container{{Name: "httpd", Image: BusyboxImage, ImagePullPolicy: corev1.PullNever,
			Command: []string{"sh", "-c", `mkdir -p /www && echo "$PAGE" > /www/index.html && exec httpd -f -p 8080 -h /www`},
			Env:     []corev1.EnvVar{{Name: "PAGE", ValueFrom: cmKey("page")}},
			Ports:   []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/index.html", Port: intstr.FromString("http")}},
				PeriodSeconds: 1},
		}},
	}}
	echo := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"}, Spec: corev1.PodSpec{
		NodeName: node1, TerminationGracePeriodSeconds: &grace,
		Containers: []corev1.Container{{Name: "echo", Image: BusyboxImage,
			Command: []string{"sh", "-c", "echo $GREETING; sleep 3600"},
			Env:     []corev1.EnvVar{{Name: "GREETING", ValueFrom: cmKey("GREETING")}},
		}},
	}}
	for _, p := range []*corev1.Pod{web, echo} {
		if _, err := st.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}

	startAgent := func() (*node.Agent, func()) {
		a, err := node.New(node.Config{NodeName: node1, Store: st, Runtime: rt, Network: fab, PodDir: podDir,
			SyncInterval: 500 * time.Millisecond, OrphanGracePeriod: time.Second,
			Logger: testkit.LoggerAt(t, slog.LevelInfo)})
		if err != nil {
			t.Fatal(err)
		}
		actx, acancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { _ = a.Run(actx); close(done) }()
		stop := func() { acancel(); <-done }
		t.Cleanup(stop)
		return a, stop
	}
	getPod := func(name string) *corev1.Pod {
		obj, err := st.Get(ctx, "pods", "default", name)
		if err != nil {
			t.Fatalf("get pod %s: %v", name, err)
		}
		return obj.(*corev1.Pod)
	}

	start := time.Now()
	a, stop := startAgent()
	testkit.EventuallyTrue(t, "web Running and Ready", 60*time.Second, func() bool {
		p := getPod("web")
		return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready
	})
	t.Logf("web ready after %s", time.Since(start))
	webPod := getPod("web")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + net.JoinHostPort(webPod.Status.PodIP, "8080") + "/index.html")
	if err != nil {
		t.Fatalf("GET from the host: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(body)) != "hello flotilla" {
		t.Fatalf("body = %q", body)
	}

	testkit.EventuallyTrue(t, "echo Running", 30*time.Second, func() bool { return getPod("echo").Status.Phase == corev1.PodRunning })
	var logs bytes.Buffer
	testkit.EventuallyTrue(t, "echo logs", 10*time.Second, func() bool {
		logs.Reset()
		return a.PodLogs(ctx, "default", "echo", corev1.PodLogOptions{}, &logs) == nil && strings.Contains(logs.String(), "hi-from-configmap")
	})

	// Restart the agent with an orphan waiting: adopt, do not recreate.
	webID := webPod.Status.ContainerStatuses[0].ContainerID
	stop()
	orphanUID := "orphan-" + randHex(t, 8)
	if _, err := rt.RunPod(ctx, runtimeapi.PodSandbox{UID: orphanUID, Namespace: "default", Name: "orphan", Hostname: "orphan",
		Containers: []runtimeapi.ContainerSpec{{Name: "sleep", Image: BusyboxImage, Command: []string{"sleep", "3600"}}}}); err != nil {
		t.Fatalf("run orphan: %v", err)
	}
	start = time.Now()
	startAgent()
	testkit.EventuallyTrue(t, "orphan removed", 30*time.Second, func() bool {
		pods, err := rt.ListPods(ctx)
		if err != nil {
			return false
		}
		for _, p := range pods {
			if p.UID == orphanUID {
				return false
			}
		}
		return true
	})
	t.Logf("orphan removed %s after agent restart", time.Since(start))
	if got := getPod("web").Status.ContainerStatuses[0].ContainerID; got != webID {
		t.Fatalf("web container recreated after agent restart: %s, was %s", got, webID)
	}
	pods, _ := rt.ListPods(ctx)
	if len(pods) != 2 {
		t.Fatalf("runtime pods after restart = %+v, want web and echo", pods)
	}

	// Delete web: its Podman pod and network go away.
	if _, err := st.Delete(ctx, "pods", "default", "web", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "web removed from podman and netfabric", 30*time.Second, func() bool {
		pods, err := rt.ListPods(ctx)
		if err != nil {
			return false
		}
		for _, p := range pods {
			if p.UID == string(webPod.UID) {
				return false
			}
		}
		uids, _ := fab.Pods(ctx)
		for _, u := range uids {
			if u == string(webPod.UID) {
				return false
			}
		}
		return true
	})
}
