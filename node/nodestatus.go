package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// MaxPods is the pod capacity the agent advertises.
const MaxPods = 110

// nodeLoop registers the Node and keeps its status fresh: it writes only when
// the wanted status differs from the stored one, or when the Ready
// heartbeat is older than HeartbeatInterval. An idle node writes once per
// heartbeat.
func (a *Agent) nodeLoop(ctx context.Context) {
	check := a.cfg.HeartbeatInterval / 4
	for {
		if err := a.syncNode(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("node status sync failed", "err", err)
			check = min(check, 5*time.Second)
		} else {
			check = a.cfg.HeartbeatInterval / 4
		}
		select {
		case <-ctx.Done():
			return
		case <-a.nodeNow: // the runtime went down or came back
		case <-a.clock.After(check):
		case <-a.diskChanged():
		}
	}
}

// NodeLabels are the well-known labels of a node, as the kubelet sets
// them: kubernetes.io/hostname (what node selectors and local volumes'
// node affinity match), kubernetes.io/os and kubernetes.io/arch.
func NodeLabels(name string) map[string]string {
	return map[string]string{corev1.LabelHostname: name, corev1.LabelOSStable: "linux", corev1.LabelArchStable: runtime.GOARCH}
}

// missingLabels are the entries of want that have is missing or differs on.
func missingLabels(have, want map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range want {
		if have[k] != v {
			out[k] = v
		}
	}
	return out
}

// syncNode creates the Node if missing and writes its status if needed.
func (a *Agent) syncNode(ctx context.Context) error {
	obj, err := a.cfg.Store.Get(ctx, "nodes", "", a.cfg.NodeName)
	if errors.Is(err, store.ErrNotFound) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Labels: NodeLabels(a.cfg.NodeName)}}
		if obj, err = a.cfg.Store.Create(ctx, n); err != nil && !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("register node %s: %w", a.cfg.NodeName, err)
		}
		if err != nil {
			obj, err = a.cfg.Store.Get(ctx, "nodes", "", a.cfg.NodeName)
		}
		a.log.Info("node registered")
	}
	if err != nil {
		return fmt.Errorf("read node %s: %w", a.cfg.NodeName, err)
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return fmt.Errorf("read node %s: unexpected %T", a.cfg.NodeName, obj)
	}
	if missing := missingLabels(n.Labels, NodeLabels(a.cfg.NodeName)); len(missing) > 0 {
		// A Node registered by someone else (the CLI's registration, an
		// older agent) gets the well-known labels that node selectors and
		// local volumes' node affinity match on.
		n = schema.Copy(n)
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		for k, v := range missing {
			n.Labels[k] = v
		}
		if obj, err = a.cfg.Store.Update(ctx, n); err != nil {
			return fmt.Errorf("label node %s: %w", a.cfg.NodeName, err)
		}
		n = obj.(*corev1.Node)
	}
	a.runtimeVersion(ctx) // asked until the runtime answers once
	want := a.nodeStatus(n.Status, a.clock.Now())
	if equality.Semantic.DeepEqual(want, n.Status) {
		return nil
	}
	n = schema.Copy(n)
	n.Status = want
	if _, err := a.cfg.Store.UpdateStatus(ctx, n); err != nil {
		return fmt.Errorf("update status of node %s: %w", a.cfg.NodeName, err)
	}
	return nil
}

// nodeStatus computes the wanted Node status from the old one: the Ready
// heartbeat time moves only when it is older than HeartbeatInterval or the
// condition changes, so most calls return old unchanged.
func (a *Agent) nodeStatus(old corev1.NodeStatus, now time.Time) corev1.NodeStatus {
	st := *old.DeepCopy()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(memTotal(), resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(MaxPods, resource.DecimalSI),
	}
	st.Capacity = capacity
	st.Allocatable = capacity.DeepCopy()
	hostname, _ := os.Hostname()
	st.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: a.cfg.NodeIP.String()}}
	if hostname != "" {
		st.Addresses = append(st.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: hostname})
	}
	info := hostInfo()
	st.NodeInfo.KernelVersion, st.NodeInfo.OSImage = info.KernelVersion, info.OSImage
	st.NodeInfo.BootID, st.NodeInfo.MachineID, st.NodeInfo.SystemUUID = info.BootID, info.MachineID, info.SystemUUID
	st.NodeInfo.OperatingSystem = "linux"
	st.NodeInfo.Architecture = runtime.GOARCH
	st.NodeInfo.KubeletVersion = "flotilla"
	st.NodeInfo.ContainerRuntimeVersion = a.rtVersionOr("podman")
	st.Phase = ""

	nowT := metav1.NewTime(now).Rfc3339Copy()
	var ready *corev1.NodeCondition
	for i := range st.Conditions {
		if st.Conditions[i].Type == corev1.NodeReady {
			ready = &st.Conditions[i]
		}
	}
	if ready == nil {
		st.Conditions = append(st.Conditions, corev1.NodeCondition{Type: corev1.NodeReady})
		ready = &st.Conditions[len(st.Conditions)-1]
	}
	ok, reason, msg := a.readyCondition()
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	if ready.Status != status || ready.Reason != reason || ready.Message != msg {
		if ready.Status != status {
			ready.LastTransitionTime = nowT
		}
		ready.Status, ready.Reason, ready.Message = status, reason, msg
		ready.LastHeartbeatTime = nowT
	}
	if now.Sub(ready.LastHeartbeatTime.Time) >= a.cfg.HeartbeatInterval {
		ready.LastHeartbeatTime = nowT
	}
	a.setDiskCondition(&st, ready.LastHeartbeatTime)
	return st
}

// memTotal is MemTotal from /proc/meminfo in bytes (0 if unreadable).
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}
