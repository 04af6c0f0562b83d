package schema

import (
	"strings"
	"testing"
	"testing/fstest"
)

// TestVolumeWarnings: volumes the node cannot mount are named, down to the
// list element; the ones it mounts, and init containers, are not.
func TestVolumeWarnings(t *testing.T) {
	files := fstest.MapFS{"p.yaml": {Data: []byte(`apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  initContainers: [{name: init, image: b}]
  containers:
  - name: a
    image: b
    volumeMounts:
    - {name: e, mountPath: /e, mountPropagation: HostToContainer}
  volumes:
  - {name: e, emptyDir: {medium: Memory, sizeLimit: 1Mi}}
  - {name: h, hostPath: {path: /srv, type: DirectoryOrCreate}}
  - {name: c, configMap: {name: c, items: [{key: k, path: p, mode: 0400}]}}
  - {name: pvc, persistentVolumeClaim: {claimName: data}}
  - {name: n, nfs: {server: x, path: /y}}
  - name: pr
    projected:
      sources:
      - secret: {name: s}
      - serviceAccountToken: {path: token}
`)}}
	ms, ps := validator(t).Load(files)
	if len(ms) != 1 {
		t.Fatalf("got %d objects:\n%s", len(ms), problemLines(ps))
	}
	want := []string{
		"p.yaml:10:32: warning: spec.containers[0].volumeMounts[0].mountPropagation: accepted but not honoured yet",
		"p.yaml:16:15: warning: spec.volumes[4].nfs: accepted but not honoured yet: the node mounts only",
		"p.yaml:21:9: warning: spec.volumes[5].projected.sources[1].serviceAccountToken: accepted but not honoured yet: there are no service account tokens",
	}
	if len(ps) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(ps), len(want), problemLines(ps))
	}
	for i, w := range want {
		if got := ps[i].String(); !strings.HasPrefix(got, w) {
			t.Errorf("problem %d:\ngot  %s\nwant %s...", i, got, w)
		}
	}
}
