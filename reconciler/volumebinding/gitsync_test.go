package volumebinding

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/schema"
	"github.com/flotilla-dev/flotilla/volumes/pvbinding"
)

// The PersistentVolume and claim of the Kubernetes mysql example
// (shared/conformance/k8s-examples/mysql-pv.yaml), with a label to change.
func mysqlPV(version string) string {
	return `apiVersion: v1
kind: PersistentVolume
metadata:
  name: mysql-pv-volume
  labels: {type: local, version: ` + version + `}
spec:
  storageClassName: manual
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: /mnt/data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: mysql-pv-claim
  labels: {version: ` + version + `}
spec:
  storageClassName: manual
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 20Gi}
`
}

// TestBindingSurvivesGitCommits: a volume and a claim from Git are bound
// by the binder; a later commit that changes both (the sync writes their
// spec whole, as Git has it) keeps the binding, with the binder stopped
// so that nothing heals it behind the test's back; an unchanged commit
// writes nothing.
func TestBindingSurvivesGitCommits(t *testing.T) {
	v, err := schema.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "repo")
	if err := gitsync.InitLocalRepo(dir, nil); err != nil {
		t.Fatal(err)
	}
	st := store.MemoryFor(t)
	syncer, err := gitsync.New(gitsync.Config{URL: dir, WorkDir: filepath.Join(t.TempDir(), "clone"), Store: st, Loader: v,
		Admit: gitsync.ChainAdmit(AdmitGit), Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	sync := func(want schema.SyncResult) {
		t.Helper()
		body, err := syncer.SyncNow(t.Context())
		if body.Result != want {
			t.Fatalf("sync = %s (%v), want %s: %s", body.Result, err, want, body.Message)
		}
	}
	commit(t, dir, "mysql", map[string]string{"mysql.yaml": mysqlPV("v1")})
	sync(schema.SyncApplied)
	bd := run(t, st, Config{})
	if got := bound(t, st, "mysql-pv-claim"); got != "mysql-pv-volume" {
		t.Fatalf("bound to %s", got)
	}
	bd.Quiesce(t)
	bd.stop()
	claimUID := getClaim(t, st, "mysql-pv-claim").UID

	commit(t, dir, "relabel", map[string]string{"mysql.yaml": mysqlPV("v2")})
	sync(schema.SyncApplied)
	c := getClaim(t, st, "mysql-pv-claim")
	pv, err := getVolume(st, "mysql-pv-volume")
	if err != nil {
		t.Fatal(err)
	}
	if c.Labels["version"] != "v2" || pv.Labels["version"] != "v2" {
		t.Fatalf("the commit was not applied: %v %v", c.Labels, pv.Labels)
	}
	if c.Spec.VolumeName != "mysql-pv-volume" || pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != claimUID ||
		c.Status.Phase != corev1.ClaimBound || pv.Status.Phase != corev1.VolumeBound {
		t.Errorf("binding lost: claim volumeName %q phase %s; volume claimRef %+v phase %s", c.Spec.VolumeName, c.Status.Phase, pv.Spec.ClaimRef, pv.Status.Phase)
	}
	if c.Annotations[pvbinding.AnnBindCompleted] != "yes" {
		t.Errorf("claim annotations %v", c.Annotations)
	}
	rev := st.Revision()
	sync(schema.SyncUnchanged)
	run(t, st, Config{}).idle(t, 10)
	if st.Revision() != rev {
		t.Errorf("revision %d → %d after an unchanged sync and a binder restart", rev, st.Revision())
	}
}

// TestAdmitGit: the stored binding is carried over when Git's object has
// none; a binding Git sets wins; creates and deletes are untouched.
func TestAdmitGit(t *testing.T) {
	stored := &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{ClaimRef: &corev1.ObjectReference{Namespace: "default", Name: "c", UID: "u1"}}}
	fromGit := &corev1.PersistentVolume{}
	preBound := &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{ClaimRef: &corev1.ObjectReference{Namespace: "default", Name: "other"}}}
	storedClaim := &corev1.PersistentVolumeClaim{Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "v1"}}
	gitClaim := &corev1.PersistentVolumeClaim{}
	newClaim := &corev1.PersistentVolumeClaim{}
	objs := []gitsync.Admission{
		{Resource: "persistentvolumes", Object: fromGit, Stored: stored},
		{Resource: "persistentvolumes", Object: preBound, Stored: stored},
		{Resource: "persistentvolumeclaims", Object: gitClaim, Stored: storedClaim},
		{Resource: "persistentvolumeclaims", Object: newClaim},
		{Resource: "persistentvolumeclaims", Stored: storedClaim},
	}
	ps, err := AdmitGit(nil, objs)
	if err != nil || len(ps) != 0 {
		t.Fatal(ps, err)
	}
	if fromGit.Spec.ClaimRef == nil || fromGit.Spec.ClaimRef.UID != "u1" || fromGit.Spec.ClaimRef == stored.Spec.ClaimRef {
		t.Errorf("volume claimRef %+v (want a copy of the stored one)", fromGit.Spec.ClaimRef)
	}
	if preBound.Spec.ClaimRef.Name != "other" || gitClaim.Spec.VolumeName != "v1" || newClaim.Spec.VolumeName != "" {
		t.Errorf("pre-bound %+v, claim %q, new claim %q", preBound.Spec.ClaimRef, gitClaim.Spec.VolumeName, newClaim.Spec.VolumeName)
	}
}

// commit writes files to the repository at dir and commits them.
func commit(t *testing.T, dir, msg string, files map[string]string) {
	t.Helper()
	repo, err := git.PlainOpen(dir)
	if err != nil {
		t.Fatal(err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := wt.Add(name); err != nil {
			t.Fatal(err)
		}
	}
	sig := &object.Signature{Name: "T", Email: "t@example.com", When: time.Now()}
	if _, err := wt.Commit(msg, &git.CommitOptions{Author: sig}); err != nil {
		t.Fatal(err)
	}
}
