package apiserver_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// A protobuf body, as kubectl 1.32 sends its creates, is decoded with
// apimachinery's serializer and passes the same pipeline as JSON; a
// broken one is a 400, and a kind without a protobuf form a 415.
func TestProtobufBodies(t *testing.T) {
	e := newEnv(t, nil)
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "pb"}, Data: map[string]string{"k": "v"}}
	var body bytes.Buffer
	if err := protobuf.NewSerializer(s, s).Encode(cm, &body); err != nil {
		t.Fatal(err)
	}
	const ct = "application/vnd.kubernetes.protobuf"
	resp, out := e.do(t, "POST", "/api/v1/namespaces/default/configmaps", body.String(), "Content-Type", ct)
	if resp.StatusCode != 201 {
		t.Fatalf("protobuf create: %d %s", resp.StatusCode, out)
	}
	obj, err := e.store.Get(t.Context(), "configmaps", "default", "pb")
	if err != nil || obj.(*corev1.ConfigMap).Data["k"] != "v" {
		t.Fatalf("stored %v, %v", obj, err)
	}
	bad := append([]byte(nil), body.Bytes()...)
	bad = bad[:len(bad)-3]
	if resp, out := e.do(t, "POST", "/api/v1/namespaces/default/configmaps", string(bad), "Content-Type", ct); resp.StatusCode != 400 {
		t.Errorf("truncated protobuf: %d %s", resp.StatusCode, out)
	}
	if resp, out := e.do(t, "POST", "/api/v1/namespaces/default/configmaps", "{}", "Content-Type", "application/yaml"); resp.StatusCode != 415 {
		t.Errorf("yaml body: %d %s", resp.StatusCode, out)
	}
}

// A client-go clientset that speaks protobuf gets, lists, creates,
// updates and watches built-in kinds; the answers are protobuf.
func TestProtobufClientset(t *testing.T) {
	e := newEnv(t, nil)
	cs, err := kubernetes.NewForConfig(&rest.Config{
		Host: e.url, BearerToken: testToken, TLSClientConfig: rest.TLSClientConfig{CAData: e.caPEM},
		ContentConfig: rest.ContentConfig{ContentType: "application/vnd.kubernetes.protobuf",
			AcceptContentTypes: "application/vnd.kubernetes.protobuf,application/json"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	cms := cs.CoreV1().ConfigMaps("default")
	w, err := cms.Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "pb"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{})
	if err != nil || cm.Data["k"] != "v" || cm.ResourceVersion == "" {
		t.Fatalf("create: %v %v", cm, err)
	}
	cm.Data["k"] = "w"
	if cm, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil || cm.Data["k"] != "w" {
		t.Fatalf("update: %v %v", cm, err)
	}
	if got, err := cms.Get(ctx, "pb", metav1.GetOptions{}); err != nil || got.Data["k"] != "w" || got.UID != cm.UID {
		t.Fatalf("get: %v %v", got, err)
	}
	list, err := cms.List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 || list.Items[0].Name != "pb" || list.ResourceVersion == "" {
		t.Fatalf("list: %v %v", list, err)
	}
	for _, want := range []watch.EventType{watch.Added, watch.Modified} {
		select {
		case ev := <-w.ResultChan():
			if c, ok := ev.Object.(*corev1.ConfigMap); ev.Type != want || !ok || c.Name != "pb" {
				t.Fatalf("watch: %s %#v, want %s", ev.Type, ev.Object, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s event", want)
		}
	}
	dep, err := cs.AppsV1().Deployments("default").Create(ctx, deployment("default", "pbweb", 2, ""), metav1.CreateOptions{})
	if err != nil || *dep.Spec.Replicas != 2 {
		t.Fatalf("create deployment: %v %v", dep, err)
	}
	if deps, err := cs.AppsV1().Deployments("default").List(ctx, metav1.ListOptions{}); err != nil || len(deps.Items) != 1 {
		t.Fatalf("list deployments: %v %v", deps, err)
	}
	// Errors stay JSON Status objects, which client-go reads either way.
	if _, err := cms.Get(ctx, "nope", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get missing: %v", err)
	}

	// The wire: protobuf first when preferred, JSON when preferred or
	// when the kind has no protobuf form, 406 when only protobuf will do.
	const pb = "application/vnd.kubernetes.protobuf"
	for _, c := range []struct{ path, accept, want string }{
		{"/api/v1/namespaces/default/configmaps/pb", pb + ",application/json", pb},
		{"/api/v1/namespaces/default/configmaps", pb, pb},
		{"/api/v1/namespaces/default/configmaps", "application/json;q=0.9," + pb + ";q=0.5", "application/json"},
		{"/api/v1/namespaces/default/configmaps", "application/json," + pb, "application/json"},
		{"/api/v1/namespaces/default/configmaps", "*/*", "application/json"},
		{"/apis/flotilla.dev/v1alpha1/syncstatuses", pb + ",application/json", "application/json"},
		{"/apis/flotilla.dev/v1alpha1/syncstatuses", pb, "406"},
		{"/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1", pb, pb + ";stream=watch"},
	} {
		resp, body := e.do(t, "GET", c.path, "", "Accept", c.accept)
		got := resp.Header.Get("Content-Type")
		if resp.StatusCode == http.StatusNotAcceptable {
			got = "406"
			if !strings.Contains(body, `"reason":"NotAcceptable"`) {
				t.Errorf("406 body: %s", body)
			}
		}
		if got != c.want {
			t.Errorf("GET %s, Accept %s: %s (%d), want %s", c.path, c.accept, got, resp.StatusCode, c.want)
		}
		if got == pb && !strings.HasPrefix(body, "k8s\x00") {
			t.Errorf("GET %s: not a protobuf envelope: %q", c.path, body[:min(len(body), 20)])
		}
	}
}
