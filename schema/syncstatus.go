package schema

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// FlotillaGroup is the API group of Flotilla's own kinds and the prefix of
// its labels and annotations.
const FlotillaGroup = "flotilla.dev"

// Labels and annotations Flotilla sets on objects.
const (
	// AnnotationManagedBy marks an object that an applied commit created.
	// Only such objects are pruned when they leave the repository, and the API
	// server refuses writes to them (Git is their source of truth).
	AnnotationManagedBy = "flotilla.dev/managed-by"
	// ManagedByGit is the value of AnnotationManagedBy for objects from Git.
	ManagedByGit = "gitsync"
	// AnnotationAppliedHash holds the hash of the manifest as Git last set it,
	// so that an object is rewritten only when Git's own fields change.
	AnnotationAppliedHash = "flotilla.dev/applied-hash"
	// AnnotationSource is "path/in/repo.yaml:LINE" of the manifest.
	AnnotationSource = "flotilla.dev/source"
)

// SyncStatusName is the name of the one SyncStatus object of a cluster.
const SyncStatusName = "default"

// SyncStatus is the state of the Git sync, shown by `flotilla status`.
// It is cluster-scoped; there is one, named SyncStatusName.
type SyncStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              SyncSpec       `json:"spec"`
	Status            SyncStatusBody `json:"status"`
}

// SyncSpec says what is synced.
type SyncSpec struct {
	URL    string `json:"url"`              // credentials stripped
	Branch string `json:"branch,omitempty"` // default: the remote HEAD
	Path   string `json:"path,omitempty"`   // sub-path in the repository
}

// SyncResult classes the outcome of the last sync attempt.
type SyncResult string

const (
	SyncApplied     SyncResult = "Applied"     // the commit is live
	SyncUnchanged   SyncResult = "Unchanged"   // nothing new to apply
	SyncRefused     SyncResult = "Refused"     // invalid commit; stalled until a new commit
	SyncFetchFailed SyncResult = "FetchFailed" // transient; retried on the next poll
)

// SyncStatusBody is what the last sync attempt found.
type SyncStatusBody struct {
	// LastAppliedCommit is the commit whose manifests are live.
	LastAppliedCommit string `json:"lastAppliedCommit,omitempty"`
	// LastAppliedMessage is that commit's subject line.
	LastAppliedMessage string       `json:"lastAppliedMessage,omitempty"`
	LastAppliedTime    *metav1.Time `json:"lastAppliedTime,omitempty"`
	// LastAttemptedCommit is the newest commit seen, applied or not.
	LastAttemptedCommit string       `json:"lastAttemptedCommit,omitempty"`
	LastAttemptTime     *metav1.Time `json:"lastAttemptTime,omitempty"`
	Result              SyncResult   `json:"result,omitempty"`
	// Message says why, in a sentence (the fetch error, "3 problems", …).
	Message string `json:"message,omitempty"`
	// Problems lists every error and warning of the last attempted commit.
	Problems []Problem `json:"problems,omitempty"`
	// Objects counts the objects the live commit owns.
	Objects int `json:"objects,omitempty"`
	// Conditions say why, as Flux's do: Ready (the live commit matches the
	// branch head), Stalled (the head is refused and waits for a new
	// commit), Reconciling (a retry or a sync is under way), each with a
	// reason (gitsync.Reason*).
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// DeepCopyObject implements runtime.Object.
func (s *SyncStatus) DeepCopyObject() runtime.Object {
	if s == nil {
		return nil
	}
	out := new(SyncStatus)
	out.TypeMeta = s.TypeMeta
	s.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Spec = s.Spec
	out.Status = s.Status
	if s.Status.LastAppliedTime != nil {
		out.Status.LastAppliedTime = s.Status.LastAppliedTime.DeepCopy()
	}
	if s.Status.LastAttemptTime != nil {
		out.Status.LastAttemptTime = s.Status.LastAttemptTime.DeepCopy()
	}
	out.Status.Problems = append([]Problem(nil), s.Status.Problems...)
	if s.Status.Conditions != nil {
		out.Status.Conditions = make([]metav1.Condition, len(s.Status.Conditions))
		for i := range s.Status.Conditions {
			s.Status.Conditions[i].DeepCopyInto(&out.Status.Conditions[i])
		}
	}
	return out
}

// SystemAnnotation says whether an annotation key is in a domain that the
// cluster's controllers write (*kubernetes.io/, *k8s.io/, *flotilla.dev/),
// such as deployment.kubernetes.io/revision: Git's updates keep such
// annotations, and the cluster may change them on objects Git owns.
func SystemAnnotation(key string) bool {
	i := strings.IndexByte(key, '/')
	if i < 0 {
		return false
	}
	domain := key[:i]
	for _, d := range []string{"kubernetes.io", "k8s.io", FlotillaGroup} {
		if domain == d || strings.HasSuffix(domain, "."+d) {
			return true
		}
	}
	return false
}
