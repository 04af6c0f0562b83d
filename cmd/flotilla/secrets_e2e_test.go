package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/cluster/store/encrypt"
)

// Secrets at rest, through the real binary: a Secret from the repository
// reaches a pod (env and volume) while the store's files hold no clear copy
// of it; `flotilla secrets rotate-key` rotates the key of the running
// cluster, and the Secret still reaches pods, after a restart too.
func TestUpSecretsEncryptedAtRest(t *testing.T) {
	c := newUpCluster(t)
	c.start()
	password := "e2e-pw-" + randomHex(t, 8)
	b64 := base64.StdEncoding.EncodeToString([]byte(password))
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: reader-secret
  namespace: default
type: Opaque
data:
  password: %s
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: secret-reader
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {app: secret-reader}
  template:
    metadata:
      labels: {app: secret-reader}
    spec:
      containers:
        - name: web
          image: localhost/busybox:latest
          imagePullPolicy: IfNotPresent
          command: ["/bin/sh", "-c"]
          args:
            - |
              mkdir -p /www
              echo "env=$PASSWORD file=$(cat /etc/secret/password)" > /www/index.html
              trap 'exit 0' TERM
              httpd -f -v -p 8080 -h /www &
              wait
          env:
            - name: PASSWORD
              valueFrom:
                secretKeyRef: {name: reader-secret, key: password}
          volumeMounts:
            - {name: secret, mountPath: /etc/secret, readOnly: true}
      volumes:
        - name: secret
          secret: {secretName: reader-secret}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: ann-edit
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: ann}
`, b64)
	if err := writeRepoFile(c, "secret.yaml", manifest); err != nil {
		t.Fatal(err)
	}
	c.git("add", "-A")
	c.git("commit", "-qm", "a Secret and a pod that reads it")

	want := "env=" + password + " file=" + password
	readsSecret := func(when string) {
		t.Helper()
		c.eventually("a secret-reader pod serves the Secret "+when, 3*time.Minute, func() error {
			objs, _, err := c.client.List(t.Context(), "pods", store.ListOptions{Namespace: "default", LabelSelector: "app=secret-reader"})
			if err != nil {
				return err
			}
			if len(objs) != 1 {
				return fmt.Errorf("%d pods", len(objs))
			}
			p := objs[0].(*corev1.Pod)
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				return fmt.Errorf("pod %s is %s", p.Name, p.Status.Phase)
			}
			body, err := httpGet("http://" + p.Status.PodIP + ":8080/")
			if err != nil {
				return err
			}
			if strings.TrimSpace(body) != want {
				return fmt.Errorf("pod %s serves %q", p.Name, strings.TrimSpace(body))
			}
			return nil
		})
	}
	readsSecret("from Git")

	// No clear copy in the store's files, nor in the logs.
	db := filepath.Join(c.dataDir, "db")
	noClearCopy := func(when string) {
		t.Helper()
		found := grepFiles(t, db, password, b64)
		if len(found) > 0 {
			t.Fatalf("%s: the Secret's value in clear in the store's files: %v", when, found)
		}
		// The grep's control: the files hold sealed values.
		if len(grepFiles(t, db, encrypt.Prefix)) == 0 {
			t.Fatalf("%s: the store's files hold no sealed Secret: the grep proves nothing", when)
		}
		for _, log := range []string{filepath.Join(c.dataDir, "flotilla.log"), filepath.Join(c.dataDir, "audit.log"), c.logPath} {
			if found := grepFiles(t, log, password, b64); len(found) > 0 {
				t.Fatalf("%s: the Secret's value in a log: %v", when, found)
			}
		}
	}
	noClearCopy("after the sync")

	keyFile := filepath.Join(c.dataDir, secretsKeyFileName)
	before, err := encrypt.LoadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(keyFile); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file %s: %v, %v; want mode 0600", keyFile, info.Mode(), err)
	}

	// A user who may edit Secrets may not rotate the key.
	annKubeconfig := filepath.Join(t.TempDir(), "ann.kubeconfig")
	if out, err := exec.Command(flotillaBin, "kubeconfig", "--data-dir", c.dataDir, "--user", "ann", "-o", annKubeconfig).CombinedOutput(); err != nil {
		t.Fatalf("flotilla kubeconfig: %v\n%s", err, out)
	}
	c.eventually("ann's binding is applied", time.Minute, func() error {
		_, err := c.client.Get(t.Context(), "clusterrolebindings", "", "ann-edit")
		return err
	})
	out, err := exec.Command(flotillaBin, "--kubeconfig", annKubeconfig, "secrets", "rotate-key").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "forbidden") {
		t.Fatalf("rotate-key as ann (edit): %v\n%s", err, out)
	}

	// The rotation, on the running cluster.
	out, err = exec.Command(flotillaBin, "--kubeconfig", filepath.Join(c.dataDir, "kubeconfig.yaml"), "secrets", "rotate-key").CombinedOutput()
	t.Logf("flotilla secrets rotate-key:\n%s", out)
	if err != nil {
		t.Fatalf("flotilla secrets rotate-key: %v", err)
	}
	m := regexp.MustCompile(`new write key (\S+) \(retiring (\S+)\)`).FindSubmatch(out)
	if m == nil || string(m[2]) != before.WriteKeyID() || !regexp.MustCompile(`re-encrypted \d+/\d+ values`).Match(out) || !bytes.Contains(out, []byte("done:")) {
		t.Fatalf("rotate-key's output does not show its progress")
	}
	after, err := encrypt.LoadFile(keyFile)
	if err != nil || strings.Join(after.IDs(), ",") != string(m[1]) {
		t.Fatalf("key file after the rotation: %v, %v; want only %s", after.IDs(), err, m[1])
	}

	// A new pod reads the Secret, from the running cluster and after a
	// restart with the rotated key file.
	deleteReader := func() {
		t.Helper()
		objs, _, err := c.client.List(t.Context(), "pods", store.ListOptions{Namespace: "default", LabelSelector: "app=secret-reader"})
		if err != nil || len(objs) != 1 {
			t.Fatalf("list the reader: %d, %v", len(objs), err)
		}
		if _, err := c.client.Delete(t.Context(), "pods", "default", objs[0].GetName(), store.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deleteReader()
	readsSecret("after the rotation")
	if err := c.stop(); err != nil {
		t.Fatalf("stop flotilla up: %v", err)
	}
	noClearCopy("after the rotation and a stop")
	c.start()
	deleteReader()
	readsSecret("after a restart")
}

// grepFiles says which needles occur in the raw bytes of path (a file, or
// every file under a directory).
func grepFiles(t *testing.T, path string, needles ...string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(data, []byte(n)) {
				found = append(found, fmt.Sprintf("%q in %s", n, p))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
