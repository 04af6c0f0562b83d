package scheduler

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"github.com/flotilla-dev/flotilla/volumes/pvbinding"
)

// Storage is what the scheduler knows of persistent storage, for pods
// with persistentVolumeClaim volumes. Schedule does not modify it.
type Storage struct {
	// Claims by "namespace/name".
	Claims map[string]*corev1.PersistentVolumeClaim
	// Volumes by name.
	Volumes map[string]*corev1.PersistentVolume
	// Classes are every StorageClass (the default class is found among them).
	Classes []*storagev1.StorageClass
}

// VolumeSelection is a pod that fits on NodeName but has claims of a
// WaitForFirstConsumer class that are not bound yet. It is not bound:
// the controller records the node on each of Claims
// (volume.kubernetes.io/selected-node), the binder binds them there (an
// existing volume reachable from the node, else a new local volume on
// it), and a later pass binds the pod, by then to the node its volumes
// are on. As in Kubernetes, a pod is only bound once its volumes are.
type VolumeSelection struct {
	Pod      *corev1.Pod
	NodeName string
	Claims   []*corev1.PersistentVolumeClaim
}

// Volume filter reasons, as Kubernetes words them where it has words.
const (
	ReasonVolumeNodeAffinity = "node(s) had volume node affinity conflict"
	ReasonNoVolumes          = "node(s) didn't find available persistent volumes to bind"
	ReasonVolumeInUse        = "node(s) were not where a ReadWriteOnce claim of the pod is in use"
)

// claimUse counts the pods (bound, or placed in this pass) using a claim,
// per node index.
type claimUse struct {
	pods  int
	nodes map[int]int
}

// volState is the storage part of a snapshot.
type volState struct {
	st           *Storage
	defaultClass string
	volumes      []*corev1.PersistentVolume // sorted by name
	use          map[string]*claimUse       // claim key → users
	taken        map[string]bool            // volumes chosen for claims in this pass
}

func newVolState(st *Storage) *volState {
	v := &volState{st: st, use: map[string]*claimUse{}, taken: map[string]bool{}}
	if st == nil {
		return v
	}
	v.defaultClass = pvbinding.DefaultClass(st.Classes)
	for _, pv := range st.Volumes {
		v.volumes = append(v.volumes, pv)
	}
	sort.Slice(v.volumes, func(i, j int) bool { return v.volumes[i].Name < v.volumes[j].Name })
	return v
}

// claimsOf calls fn with the key and name of each persistentVolumeClaim
// volume of p.
func claimsOf(p *corev1.Pod, fn func(key, name string)) {
	for i := range p.Spec.Volumes {
		if c := p.Spec.Volumes[i].PersistentVolumeClaim; c != nil {
			fn(p.Namespace+"/"+c.ClaimName, c.ClaimName)
		}
	}
}

// used records that p uses its claims on node i.
func (v *volState) used(p *corev1.Pod, i int) {
	claimsOf(p, func(key, _ string) {
		u := v.use[key]
		if u == nil {
			u = &claimUse{nodes: map[int]int{}}
			v.use[key] = u
		}
		u.pods++
		u.nodes[i]++
	})
}

// podVolumes is what a pod's claims ask of a node.
type podVolumes struct {
	affinity []*corev1.NodeSelector // of the bound volumes
	sameNode []*claimUse            // ReadWriteOnce claims in use: only their nodes
	// waiting are the unbound claims of WaitForFirstConsumer classes.
	waiting []waitingClaim
	pin     string // a node already selected for a waiting claim: preferred
	// note is added to the message when the pod fits nowhere (why a
	// waiting claim cannot be provisioned).
	note string
}

type waitingClaim struct {
	claim     *corev1.PersistentVolumeClaim
	class     string
	provision bool // the local provisioner can create a volume on any node
}

// singleNode reports whether a claim may only be used from one node at a
// time: it asks for neither ReadWriteMany nor ReadOnlyMany.
func singleNode(c *corev1.PersistentVolumeClaim) bool {
	for _, m := range c.Spec.AccessModes {
		if m == corev1.ReadWriteMany || m == corev1.ReadOnlyMany {
			return false
		}
	}
	return true
}

func singlePod(c *corev1.PersistentVolumeClaim) bool {
	for _, m := range c.Spec.AccessModes {
		if m == corev1.ReadWriteOncePod {
			return true
		}
	}
	return false
}

// prepare gathers what p's claims ask; a non-empty fail is a reason that
// holds on every node (a claim missing or not bound), and the pod is not
// placed.
func (v *volState) prepare(p *corev1.Pod) (pv *podVolumes, fail string) {
	has := false
	for i := range p.Spec.Volumes {
		if p.Spec.Volumes[i].PersistentVolumeClaim != nil {
			has = true
			break
		}
	}
	if !has {
		return nil, "" // the common case: no allocation
	}
	pv = &podVolumes{}
	var missing, immediate []string
	var problems []string
	claimsOf(p, func(key, name string) {
		var c *corev1.PersistentVolumeClaim
		if v.st != nil {
			c = v.st.Claims[key]
		}
		if c == nil {
			missing = append(missing, name)
			return
		}
		u := v.use[key]
		if singlePod(c) && u != nil && u.pods > 0 {
			problems = append(problems, fmt.Sprintf("persistentvolumeclaim %q is ReadWriteOncePod and already in use by another pod", name))
			return
		}
		if singleNode(c) && u != nil && len(u.nodes) > 0 {
			pv.sameNode = append(pv.sameNode, u)
		}
		if vn := c.Spec.VolumeName; vn != "" {
			vol := v.st.Volumes[vn]
			if vol == nil {
				problems = append(problems, fmt.Sprintf("persistentvolumeclaim %q is bound to persistentvolume %q, which does not exist", name, vn))
				return
			}
			if vol.Spec.NodeAffinity != nil && vol.Spec.NodeAffinity.Required != nil {
				pv.affinity = append(pv.affinity, vol.Spec.NodeAffinity.Required)
			}
			return
		}
		class := pvbinding.ClaimClass(c, v.defaultClass)
		sc := pvbinding.FindClass(v.st.Classes, class)
		if !pvbinding.WaitForFirstConsumer(sc) {
			immediate = append(immediate, name)
			return
		}
		w := waitingClaim{claim: c, class: class}
		if sc.Provisioner == pvbinding.LocalProvisioner {
			if err := pvbinding.CheckLocal(c, sc); err != nil {
				pv.note = fmt.Sprintf("persistentvolumeclaim %q: %v", name, err)
			} else {
				w.provision = true
			}
		}
		pv.waiting = append(pv.waiting, w)
		if sel := c.Annotations[pvbinding.AnnSelectedNode]; sel != "" && pv.pin == "" {
			pv.pin = sel
		}
	})
	switch {
	case len(missing) > 0:
		quoted := make([]string, len(missing))
		for i, m := range missing {
			quoted[i] = fmt.Sprintf("%q", m)
		}
		return nil, fmt.Sprintf("persistentvolumeclaim %s not found", strings.Join(quoted, ", "))
	case len(problems) > 0:
		return nil, strings.Join(problems, "; ")
	case len(immediate) > 0:
		return nil, fmt.Sprintf("pod has unbound immediate PersistentVolumeClaims (%s: describe the claim for why)", strings.Join(immediate, ", "))
	}
	if len(pv.affinity) == 0 && len(pv.sameNode) == 0 && len(pv.waiting) == 0 {
		return nil, ""
	}
	return pv, ""
}

// volumeReason is why node i cannot host a pod with volumes pv, "" when
// it can.
func (v *volState) volumeReason(n *nodeState, i int, pv *podVolumes) string {
	for _, sel := range pv.affinity {
		if !pvbinding.NodeSelectorMatches(sel, n.name, n.labels) {
			return ReasonVolumeNodeAffinity
		}
	}
	for _, u := range pv.sameNode {
		if u.nodes[i] == 0 {
			return ReasonVolumeInUse
		}
	}
	if len(pv.waiting) > 0 {
		node := n.asNode()
		for _, w := range pv.waiting {
			if w.provision {
				continue
			}
			if vol, _ := pvbinding.FindVolume(w.claim, w.class, v.volumes, node, v.taken); vol == nil {
				return ReasonNoVolumes
			}
		}
	}
	return ""
}

// placed records p on node i: its claims are in use there, and the
// existing volumes its waiting claims will bind to are taken.
func (v *volState) placed(p *corev1.Pod, i int, n *nodeState, pv *podVolumes) {
	v.used(p, i)
	if pv == nil {
		return
	}
	node := n.asNode()
	for _, w := range pv.waiting {
		if vol, _ := pvbinding.FindVolume(w.claim, w.class, v.volumes, node, v.taken); vol != nil {
			v.taken[vol.Name] = true
		}
	}
}

// asNode is the part of a Node that volume rules read: name and labels.
func (n *nodeState) asNode() *corev1.Node {
	nd := &corev1.Node{}
	nd.Name, nd.Labels = n.name, n.labels
	return nd
}
