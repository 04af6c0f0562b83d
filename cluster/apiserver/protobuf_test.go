package apiserver_test

import (
	"bytes"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
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
