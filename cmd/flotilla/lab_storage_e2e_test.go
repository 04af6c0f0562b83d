package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// statefulYAML is shared/conformance/k8s-examples/web-statefulset.yaml with
// the image swapped for the local busybox (httpd serving the claim), as the
// issue says, plus a client pod to look names up from.
const statefulYAML = `apiVersion: v1
kind: Service
metadata:
  name: nginx
  labels:
    app: nginx
spec:
  ports:
  - port: 80
    name: web
  clusterIP: None
  selector:
    app: nginx
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: "nginx"
  replicas: 2
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: localhost/busybox:latest
        imagePullPolicy: IfNotPresent
        command: ["/bin/sh", "-c", "trap 'exit 0' TERM; httpd -f -p 80 -h /usr/share/nginx/html & wait"]
        ports:
        - containerPort: 80
          name: web
        volumeMounts:
        - name: www
          mountPath: /usr/share/nginx/html
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: [ "ReadWriteOnce" ]
      resources:
        requests:
          storage: 1Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: lookup
spec:
  containers:
    - name: sh
      image: localhost/busybox:latest
      imagePullPolicy: IfNotPresent
      command: ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 36000 & wait"]
`

// volumesYAML: two containers sharing an emptyDir, a configMap volume, a
// claim nothing can satisfy, and a claim with no class that a pod uses.
const volumesYAML = `apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: "hello 1"
---
apiVersion: v1
kind: Pod
metadata:
  name: shared
spec:
  containers:
    - name: writer
      image: localhost/busybox:latest
      imagePullPolicy: IfNotPresent
      command: ["/bin/sh", "-c", "trap 'exit 0' TERM; echo written-by-writer > /cache/note; sleep 36000 & wait"]
      volumeMounts:
        - {name: cache, mountPath: /cache}
    - name: reader
      image: localhost/busybox:latest
      imagePullPolicy: IfNotPresent
      command: ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 36000 & wait"]
      volumeMounts:
        - {name: cache, mountPath: /cache}
        - {name: settings, mountPath: /etc/settings}
  volumes:
    - name: cache
      emptyDir: {}
    - name: settings
      configMap:
        name: settings
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: too-big
spec:
  storageClassName: manual
  accessModes: ["ReadWriteOnce"]
  resources:
    requests:
      storage: 30Gi
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: scratch
spec:
  accessModes: ["ReadWriteOnce"]
  resources:
    requests:
      storage: 100Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: scratch-user
spec:
  containers:
    - name: sh
      image: localhost/busybox:latest
      imagePullPolicy: IfNotPresent
      command: ["/bin/sh", "-c", "trap 'exit 0' TERM; echo kept > /data/file; sleep 36000 & wait"]
      volumeMounts:
        - {name: data, mountPath: /data}
  volumes:
    - name: data
      persistentVolumeClaim:
        claimName: scratch
`

// TestLabStorage is issue 5's acceptance through the real binary on a
// 3-node lab.
func TestLabStorage(t *testing.T) {
	l := newLab(t, 3)
	mysqlPV, err := os.ReadFile(filepath.Join("testdata", "mysql-pv.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	l.commit("mysql-pv.yaml", string(mysqlPV), "the conformance PV and claim")
	l.commit("volumes.yaml", volumesYAML, "volumes")
	l.commit("web.yaml", statefulYAML, "the conformance StatefulSet, on busybox")

	// web-0 comes up first; web-1 only once web-0 is Ready.
	l.eventually("web-0 and web-1 Running and Ready, in order, each with its claim Bound", 3*time.Minute, func() error {
		// Only a pod the API says is not there counts as absent: a
		// failed read (a slow API under make test's load) is asked again.
		w0, err0 := l.getPod("web-0")
		w1, err1 := l.getPod("web-1")
		if err := errors.Join(err0, err1); err != nil {
			return err
		}
		if w1 != nil && (w0 == nil || !podIsReady(w0) && w0.Status.Phase != corev1.PodRunning) {
			t.Fatalf("web-1 exists while web-0 is not Running and Ready")
		}
		if w0 == nil || w1 == nil || !podIsReady(w0) || !podIsReady(w1) {
			return fmt.Errorf("web-0 %v, web-1 %v", phase(w0), phase(w1))
		}
		for _, c := range []string{"www-web-0", "www-web-1"} {
			if ph := l.claimPhase(c); ph != corev1.ClaimBound {
				return fmt.Errorf("claim %s is %q", c, ph)
			}
		}
		return nil
	})

	// Data written by web-1 outlives web-1.
	w1 := l.pod("web-1")
	if out, err := l.execInPod("web-1", "echo from-web-1 > /usr/share/nginx/html/data.txt"); err != nil {
		t.Fatalf("write in web-1: %v: %s", err, out)
	}
	if out, err := exec.Command(flotillaBin, "--kubeconfig", filepath.Join(l.dir, "kubeconfig.yaml"), "delete", "pod", "web-1").CombinedOutput(); err != nil {
		t.Fatalf("delete pod web-1: %v: %s", err, out)
	}
	l.readBack("web-1 recreated with its data", w1.UID)

	// Scale to 1 and back: the claim stays and is attached again.
	sts := strings.Replace(statefulYAML, "replicas: 2", "replicas: 1", 1)
	l.commit("web.yaml", sts, "scale web to 1")
	l.eventually("web-1 gone, its claim kept", 2*time.Minute, func() error {
		if p := l.tryPod("web-1"); p != nil {
			return fmt.Errorf("web-1 still there (%s)", phase(p))
		}
		if ph := l.claimPhase("www-web-1"); ph != corev1.ClaimBound {
			return fmt.Errorf("claim www-web-1 is %q", ph)
		}
		return nil
	})
	l.commit("web.yaml", statefulYAML, "scale web back to 2")
	l.readBack("web-1 back with its data", "")

	// The headless service names each pod.
	w0 := l.pod("web-0")
	// busybox's nslookup does not apply the search list to a name with a
	// dot, so it gets the full name; ping resolves the short one through
	// the pod's resolv.conf (search default.svc.cluster.local …, ndots:5).
	l.eventually("web-0.nginx resolves to web-0 from another pod", time.Minute, func() error {
		out, err := l.execInPod("lookup", "nslookup web-0.nginx.default.svc.cluster.local; ping -c 1 -W 2 web-0.nginx")
		if err != nil || !strings.Contains(out, "Address: "+w0.Status.PodIP) || !strings.Contains(out, "("+w0.Status.PodIP+")") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})

	// Claims: the conformance claim binds to its volume; 30Gi stays Pending
	// with a reason; a claim with no class gets a local volume.
	l.eventually("mysql-pv-claim Bound to mysql-pv-volume", time.Minute, func() error {
		obj, err := l.client.Get(context.Background(), "persistentvolumeclaims", "default", "mysql-pv-claim")
		if err != nil {
			return err
		}
		c := obj.(*corev1.PersistentVolumeClaim)
		if c.Status.Phase != corev1.ClaimBound || c.Spec.VolumeName != "mysql-pv-volume" {
			return fmt.Errorf("%s, volume %q", c.Status.Phase, c.Spec.VolumeName)
		}
		return nil
	})
	if ph := l.claimPhase("too-big"); ph != corev1.ClaimPending {
		t.Errorf("the 30Gi claim is %q, want Pending", ph)
	}
	out, err := exec.Command(flotillaBin, "--kubeconfig", filepath.Join(l.dir, "kubeconfig.yaml"), "describe", "pvc", "too-big").CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?i)no .*volume|nothing|no persistent`).Match(out) {
		t.Errorf("describe pvc too-big gives no reason (%v):\n%s", err, out)
	}
	l.eventually("the classless claim is provisioned and its pod writes to it", 2*time.Minute, func() error {
		if ph := l.claimPhase("scratch"); ph != corev1.ClaimBound {
			return fmt.Errorf("claim scratch is %q", ph)
		}
		p := l.tryPod("scratch-user")
		if p == nil || p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("scratch-user %s", phase(p))
		}
		out, err := l.execInPod("scratch-user", "cat /data/file")
		if err != nil || strings.TrimSpace(out) != "kept" {
			return fmt.Errorf("%q, %v", out, err)
		}
		return nil
	})

	// An emptyDir shared by two containers; a configMap volume follows Git.
	l.eventually("the reader sees the writer's file and the ConfigMap", 2*time.Minute, func() error {
		p := l.tryPod("shared")
		if p == nil || p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("shared %s", phase(p))
		}
		out, err := l.execInContainer(p, "reader", "cat /cache/note /etc/settings/greeting")
		if err != nil || !strings.Contains(out, "written-by-writer") || !strings.Contains(out, "hello 1") {
			return fmt.Errorf("%q, %v", out, err)
		}
		return nil
	})
	shared := l.pod("shared")
	l.commit("volumes.yaml", strings.Replace(volumesYAML, `greeting: "hello 1"`, `greeting: "hello 2"`, 1), "a new greeting")
	l.eventually("the configMap file changed in place", 2*time.Minute, func() error {
		out, err := l.execInContainer(shared, "reader", "cat /etc/settings/greeting")
		if err != nil || strings.TrimSpace(out) != "hello 2" {
			return fmt.Errorf("%q, %v", out, err)
		}
		return nil
	})
	if p := l.pod("shared"); p.UID != shared.UID || podRestarts(p) != 0 {
		t.Errorf("the pod was replaced or restarted for a ConfigMap change")
	}

	// web-1's node dies: no second web-1 while the node is only unreachable;
	// once the operator deletes the Node, web-1 is recreated and, its volume
	// being local to the dead node, waits Pending with a reason.
	w1 = l.pod("web-1")
	dead := w1.Spec.NodeName
	l.lab("kill", dead)
	l.eventually(dead+" NotReady", time.Minute, func() error {
		if ready, err := l.nodeReady(dead); err != nil || ready {
			return fmt.Errorf("ready=%v err=%v", ready, err)
		}
		return nil
	})
	deadline := time.Now().Add(40 * time.Second) // past the 30 s eviction timeout
	for time.Now().Before(deadline) {
		if p := l.tryPod("web-1"); p == nil || p.UID != w1.UID {
			t.Fatalf("web-1 was replaced while %s is only unreachable", dead)
		}
		time.Sleep(2 * time.Second)
	}
	if out, err := exec.Command(flotillaBin, "--kubeconfig", filepath.Join(l.dir, "kubeconfig.yaml"), "delete", "node", dead).CombinedOutput(); err != nil {
		t.Fatalf("delete node %s: %v: %s", dead, err, out)
	}
	l.eventually("web-1 recreated, Pending with a reason: its volume is on "+dead, 2*time.Minute, func() error {
		p := l.tryPod("web-1")
		if p == nil || p.UID == w1.UID {
			return fmt.Errorf("not recreated yet")
		}
		if p.Spec.NodeName != "" || p.Status.Phase != corev1.PodPending {
			return fmt.Errorf("web-1 is on %q, %s", p.Spec.NodeName, p.Status.Phase)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message != "" {
				t.Logf("web-1 Pending: %s: %s", c.Reason, c.Message)
				return nil
			}
		}
		return fmt.Errorf("no reason in %+v", p.Status.Conditions)
	})
}

// readBack waits for web-1 (another pod than old, if given) to run and
// serve the data written before.
func (l *labCluster) readBack(what string, old types.UID) {
	l.t.Helper()
	l.eventually(what, 3*time.Minute, func() error {
		p := l.tryPod("web-1")
		if p == nil || !podIsReady(p) || (old != "" && p.UID == old) {
			return fmt.Errorf("web-1 %s", phase(p))
		}
		out, err := l.execInPod("web-1", "cat /usr/share/nginx/html/data.txt")
		if err != nil || strings.TrimSpace(out) != "from-web-1" {
			return fmt.Errorf("%q, %v", out, err)
		}
		return nil
	})
}

// getPod returns the pod, nil if it does not exist, or the error of a
// failed read.
func (l *labCluster) getPod(name string) (*corev1.Pod, error) {
	obj, err := l.client.Get(context.Background(), "pods", "default", name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return obj.(*corev1.Pod), nil
}

func (l *labCluster) tryPod(name string) *corev1.Pod {
	obj, err := l.client.Get(context.Background(), "pods", "default", name)
	if err != nil {
		return nil
	}
	return obj.(*corev1.Pod)
}

func phase(p *corev1.Pod) string {
	if p == nil {
		return "absent"
	}
	return fmt.Sprintf("%s on %q ready=%v", p.Status.Phase, p.Spec.NodeName, podIsReady(p))
}

func (l *labCluster) claimPhase(name string) corev1.PersistentVolumeClaimPhase {
	obj, err := l.client.Get(context.Background(), "persistentvolumeclaims", "default", name)
	if err != nil {
		return ""
	}
	return obj.(*corev1.PersistentVolumeClaim).Status.Phase
}

func podRestarts(p *corev1.Pod) int32 {
	var n int32
	for _, cs := range p.Status.ContainerStatuses {
		n += cs.RestartCount
	}
	return n
}

// execInContainer runs a script in one container of a pod, on its node.
func (l *labCluster) execInContainer(p *corev1.Pod, container, script string) (string, error) {
	l.t.Helper()
	ctr := l.containerOf(p, container)
	out, err := l.podmanCmd(p.Spec.NodeName, "exec", ctr, "sh", "-c", script).CombinedOutput()
	return string(out), err
}
