package node

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"
)

// The node's last known pods: what the agent runs when it starts and no
// server answers (every server down, the node rebooted; k3s #4113).
//
// Each time the pods of this node, as the store gives them, change in what
// the agent runs them from (their metadata and spec, not their status), the
// agent writes them to PodDir/.last-known-pods.json. An agent whose first
// list fails and which finds the file takes those pods as the store's: their
// workers adopt the runtime's pods (which a killed node's runtime keeps,
// exited) and start their containers as the restart policy says, on the
// network and volumes the node recorded. Nothing is removed while the agent
// runs from the file: a runtime pod the file does not know waits for the
// store, and no pod status is written until it answers a list. When the
// store answers, its list replaces the file's: a pod deleted meanwhile is
// stopped then, and no pod is created twice (the workers adopt by UID).
// An agent that knows at start that no server answers runs from the file
// at once (Config.StartFromLastKnown), not after a list that failed.

// lastKnownFile is the file's name in PodDir.
const lastKnownFile = ".last-known-pods.json"

// lastKnown is the record's content.
type lastKnown struct {
	Node string        `json:"node"`
	Pods []*corev1.Pod `json:"pods"`
}

// sameRun reports whether pod b is run from what a was: the same metadata
// the record keeps and the same spec (status and resourceVersion aside).
func sameRun(a, b *corev1.Pod) bool {
	return a != nil && b != nil && a.UID == b.UID && maps.Equal(a.Labels, b.Labels) &&
		maps.Equal(a.Annotations, b.Annotations) && a.DeletionTimestamp.Equal(b.DeletionTimestamp) &&
		apiequality.Semantic.DeepEqual(a.Spec, b.Spec)
}

// rememberPodsLocked writes the node's pods to the file if what they are
// run from changed (callers skip it for a pod that changed only in status,
// see sameRun); a.mu is held.
func (a *Agent) rememberPodsLocked() {
	rec := lastKnown{Node: a.cfg.NodeName}
	for _, p := range a.pods {
		c := p.DeepCopy()
		c.Status = corev1.PodStatus{}
		c.ManagedFields = nil
		c.ResourceVersion = ""
		rec.Pods = append(rec.Pods, c)
	}
	slices.SortFunc(rec.Pods, func(x, y *corev1.Pod) int {
		if x.UID < y.UID {
			return -1
		}
		if x.UID > y.UID {
			return 1
		}
		return 0
	})
	data, err := json.Marshal(rec)
	if err != nil {
		a.log.Warn("record the node's pods", "err", err)
		return
	}
	sum := sha256.Sum256(data)
	if sum == a.lastKnownSum {
		return
	}
	if err := os.MkdirAll(a.cfg.PodDir, 0o755); err == nil {
		err = atomicfile.WriteFile(filepath.Join(a.cfg.PodDir, lastKnownFile), data, 0o600)
	}
	if err != nil {
		a.log.Warn("record the node's pods", "err", err)
		return
	}
	a.lastKnownSum = sum
}

// readLastKnown reads the node's last known pods; none (and no error) when
// the file does not exist.
func (a *Agent) readLastKnown() ([]*corev1.Pod, error) {
	data, err := os.ReadFile(filepath.Join(a.cfg.PodDir, lastKnownFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec lastKnown
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", lastKnownFile, err)
	}
	if rec.Node != a.cfg.NodeName {
		return nil, fmt.Errorf("%s is of node %q, not %q", lastKnownFile, rec.Node, a.cfg.NodeName)
	}
	return rec.Pods, nil
}

// runFromLastKnown starts the workers of the node's last known pods, when
// the store has not answered yet; it reports whether it did.
func (a *Agent) runFromLastKnown(ctx context.Context) bool {
	pods, err := a.readLastKnown()
	if err != nil {
		a.log.Warn("cannot read the node's last known pods", "err", err)
		return false
	}
	if len(pods) == 0 {
		return false
	}
	running, err := a.rt.ListPods(ctx)
	if err != nil {
		a.runtimeCallFailed(err)
		a.log.Warn("list runtime pods", "err", err)
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.listRev != 0 || len(a.pods) > 0 {
		return false // the store answered meanwhile
	}
	a.runtimeByUID = map[string][]string{}
	for _, p := range running {
		a.runtimeByUID[p.UID] = append(a.runtimeByUID[p.UID], p.ID)
	}
	a.runtimeListed = true
	a.lastRuntimeList = a.clock.Now()
	a.fromFile = true
	for _, p := range pods {
		uid := string(p.UID)
		a.pods[uid] = p
		w := a.ensureWorkerLocked(ctx, p)
		w.offer(a.runtimeByUID[uid])
		w.poke()
	}
	a.log.Warn("the store does not answer: running this node's last known pods until it does", "pods", len(pods))
	return true
}
