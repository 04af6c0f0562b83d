package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestSnapshotRestore is the disaster drill on `up`: a snapshot of the
// running cluster, the server's state wiped (the node's pods keep running),
// the snapshot restored into the data dir and the server started on it:
// every object is back, the ones Git does not hold too (a ConfigMap and a
// Secret made through the API, the Services' cluster IPs), and the pods are
// adopted as they run, not restarted.
func TestSnapshotRestore(t *testing.T) {
	c := newUpCluster(t)
	c.start()
	c.eventually("the example's 2 pods are Running and ready", 3*time.Minute, func() error {
		return readyPods(c.pods(), 2, "1")
	})
	ctx := t.Context()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "made-by-api"}, Data: map[string]string{"k": "v"}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "creds"}, Data: map[string][]byte{"password": []byte("s3cr3t-in-snapshot")}}
	if _, err := c.client.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	svc, err := c.client.Get(ctx, "services", "default", "hello")
	if err != nil {
		t.Fatal(err)
	}
	clusterIP := svc.(*corev1.Service).Spec.ClusterIP
	type running struct{ uid, container string }
	before := map[string]running{}
	for _, p := range c.pods() {
		before[p.Name] = running{string(p.UID), p.Status.ContainerStatuses[0].ContainerID}
	}

	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "cluster.snap")
	out := runCLI(t, c, "snapshot", "save", file, "--passphrase-file", pass)
	if !strings.Contains(out, "saved "+file) {
		t.Fatalf("snapshot save:\n%s", out)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the snapshot file: %v, %v; want mode 0600", st, err)
	}
	data, _ := os.ReadFile(file)
	if strings.Contains(string(data), "s3cr3t-in-snapshot") || strings.Contains(string(data), "PRIVATE KEY") {
		t.Fatal("the snapshot holds a Secret's value or the CA key in clear")
	}

	// The server's state goes: the store, its log, the CA and keys. The
	// node's (Podman, the pod network, volumes) stays, and its pods run on.
	if err := c.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	wiped := filepath.Join(dir, "wiped")
	if err := os.MkdirAll(wiped, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"db", "raft", "tls", "secrets-key.json", "webhook-secret", "server-id", "kubeconfig.yaml"} {
		if err := os.Rename(filepath.Join(c.dataDir, name), filepath.Join(wiped, name)); err != nil {
			t.Fatal(err)
		}
	}
	restore := func(passFile string) (string, error) {
		out, err := exec.Command(flotillaBin, "snapshot", "restore", file, "--data-dir", c.dataDir, "--passphrase-file", passFile).CombinedOutput()
		return string(out), err
	}
	wrong := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrong, []byte("not the passphrase at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := restore(wrong); err == nil || !strings.Contains(out, "passphrase") {
		t.Fatalf("restore with a wrong passphrase: %v\n%s", err, out)
	}
	if out, err := restore(pass); err != nil || !strings.Contains(out, "restored the snapshot") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if out, err := restore(pass); err == nil || !strings.Contains(out, "already holds") {
		t.Fatalf("a second restore into the same data dir: %v\n%s", err, out)
	}

	c.start()
	if out := runCLI(t, c, "get", "servers"); !strings.Contains(out, "server-1") || !strings.Contains(out, "leader (answered)") || !strings.Contains(out, " ok ") {
		t.Errorf("get servers after the restore:\n%s", out)
	}
	got, err := c.client.Get(ctx, "configmaps", "default", "made-by-api")
	if err != nil || got.(*corev1.ConfigMap).Data["k"] != "v" {
		t.Errorf("the API's ConfigMap after the restore: %v, %v", got, err)
	}
	got, err = c.client.Get(ctx, "secrets", "default", "creds")
	if err != nil || string(got.(*corev1.Secret).Data["password"]) != "s3cr3t-in-snapshot" {
		t.Errorf("the API's Secret after the restore: %v", err)
	}
	got, err = c.client.Get(ctx, "services", "default", "hello")
	if err != nil || got.(*corev1.Service).Spec.ClusterIP != clusterIP {
		t.Errorf("service hello after the restore: %v, %v; want cluster IP %s", got, err, clusterIP)
	}
	c.eventually("the pods to be adopted as they ran", 2*time.Minute, func() error {
		pods := c.pods()
		if err := readyPods(pods, 2, "1"); err != nil {
			return err
		}
		for _, p := range pods {
			b, ok := before[p.Name]
			if !ok || b.uid != string(p.UID) {
				return fmt.Errorf("pod %s (uid %s) was not there before the restore", p.Name, p.UID)
			}
			if cs := p.Status.ContainerStatuses; len(cs) != 1 || cs[0].ContainerID != b.container || cs[0].RestartCount != 0 {
				return fmt.Errorf("pod %s's container: %+v, want %s not restarted", p.Name, cs, b.container)
			}
		}
		return nil
	})
}
