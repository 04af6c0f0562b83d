package reconciler

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// SimKubelet is a stand-in node agent for tests, benchmarks and e2e runs
// without Podman: it registers a Ready Node, renews its heartbeat, and marks
// every pod bound to it Running and Ready, with a pod IP, as soon as it sees
// it. It runs nothing.
// Zero values of the optional fields mean the defaults.
type SimKubelet struct {
	// Store is where the node and pod statuses are written. Required.
	Store store.Interface
	// NodeName is the node's name. Required.
	NodeName string
	// Labels are added to the node (kubernetes.io/hostname is always set).
	Labels map[string]string
	// CPU, Memory and Pods are the node's capacity and allocatable.
	// Defaults "4", "8Gi", "110".
	CPU, Memory, Pods string
	// StartDelay is how long a pod stays Pending before it is marked
	// Running and Ready. Default 0.
	StartDelay time.Duration
	// HeartbeatInterval is how often Run renews the node's Ready heartbeat,
	// as the agent does. Default 40s (the agent's); negative disables it
	// (a node whose agent has gone silent).
	HeartbeatInterval time.Duration
	// Logger receives the kubelet's logs. Default: discard.
	Logger *slog.Logger

	ipSeq      atomic.Uint32
	registered atomic.Bool
}

func (k *SimKubelet) log() *slog.Logger {
	if k.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return k.Logger.With("subsystem", "simkubelet", "node", k.NodeName)
}

// Node returns the Node object the kubelet registers.
func (k *SimKubelet) Node() *corev1.Node {
	q := func(s, def string) resource.Quantity {
		if s == "" {
			s = def
		}
		return resource.MustParse(s)
	}
	res := corev1.ResourceList{
		corev1.ResourceCPU:    q(k.CPU, "4"),
		corev1.ResourceMemory: q(k.Memory, "8Gi"),
		corev1.ResourcePods:   q(k.Pods, "110"),
	}
	labels := map[string]string{"kubernetes.io/hostname": k.NodeName, "kubernetes.io/os": "linux"}
	for l, v := range k.Labels {
		labels[l] = v
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: k.NodeName, Labels: labels},
		Status: corev1.NodeStatus{
			Capacity:    res,
			Allocatable: res.DeepCopy(),
			Phase:       corev1.NodeRunning,
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				Message: "simulated kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now,
			}},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: k.hostIP()}},
		},
	}
	n.APIVersion, n.Kind = "v1", "Node"
	return n
}

func (k *SimKubelet) octet() uint32 {
	h := fnv.New32a()
	h.Write([]byte(k.NodeName))
	return h.Sum32() % 250
}

func (k *SimKubelet) hostIP() string { return fmt.Sprintf("192.168.%d.%d", k.octet(), 1) }

func (k *SimKubelet) podIP() string {
	n := k.ipSeq.Add(1)
	return fmt.Sprintf("10.%d.%d.%d", 100+k.octet()%100, (n/250)%250, n%250+2)
}

// Register creates the Node, or marks an existing one Ready.
func (k *SimKubelet) Register(ctx context.Context) error {
	if k.Store == nil || k.NodeName == "" {
		return errors.New("simkubelet: Store and NodeName are required")
	}
	n := k.Node()
	out, err := k.Store.Create(ctx, n)
	if errors.Is(err, store.ErrExists) {
		out, err = k.Store.Get(ctx, "nodes", "", k.NodeName)
	}
	if err != nil {
		return fmt.Errorf("simkubelet: register node %s: %w", k.NodeName, err)
	}
	// The controllers write the new Node too (nodeipam gives it a pod
	// CIDR): a conflict is read again and retried, as an agent does.
	for try := 0; ; try++ {
		cur := out.(*corev1.Node)
		cur.Status = n.Status
		_, err = k.Store.UpdateStatus(ctx, cur)
		if !errors.Is(err, store.ErrConflict) || try == 10 {
			break
		}
		if out, err = k.Store.Get(ctx, "nodes", "", k.NodeName); err != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("simkubelet: node %s status: %w", k.NodeName, err)
	}
	k.registered.Store(true)
	return nil
}

// SetReady sets the node's Ready condition (to test NotReady handling).
func (k *SimKubelet) SetReady(ctx context.Context, ready bool) error {
	o, err := k.Store.Get(ctx, "nodes", "", k.NodeName)
	if err != nil {
		return fmt.Errorf("simkubelet: node %s: %w", k.NodeName, err)
	}
	n := o.(*corev1.Node)
	status, reason := corev1.ConditionTrue, "KubeletReady"
	if !ready {
		status, reason = corev1.ConditionFalse, "KubeletNotReady"
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	for i := range n.Status.Conditions {
		if c := &n.Status.Conditions[i]; c.Type == corev1.NodeReady && c.Status != status {
			c.Status, c.Reason, c.LastTransitionTime, c.LastHeartbeatTime = status, reason, now, now
		}
	}
	if _, err := k.Store.UpdateStatus(ctx, n); err != nil {
		return fmt.Errorf("simkubelet: node %s status: %w", k.NodeName, err)
	}
	return nil
}

// Heartbeat renews the node's Ready heartbeat, as the agent does: a Ready
// condition that the server set to Unknown becomes True again; one that
// SetReady made False stays False. A conflicting write is retried.
func (k *SimKubelet) Heartbeat(ctx context.Context) error {
	var err error
	for try := 0; try < 5; try++ {
		if err = k.heartbeat(ctx); !errors.Is(err, store.ErrConflict) {
			break
		}
	}
	return err
}

func (k *SimKubelet) heartbeat(ctx context.Context) error {
	o, err := k.Store.Get(ctx, "nodes", "", k.NodeName)
	if err != nil {
		return fmt.Errorf("simkubelet: node %s: %w", k.NodeName, err)
	}
	n := o.(*corev1.Node)
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	for i := range n.Status.Conditions {
		c := &n.Status.Conditions[i]
		if c.Type != corev1.NodeReady {
			continue
		}
		c.LastHeartbeatTime = now
		if c.Status == corev1.ConditionUnknown {
			c.Status, c.Reason, c.Message, c.LastTransitionTime = corev1.ConditionTrue, "KubeletReady", "simulated kubelet is posting ready status", now
		}
	}
	if _, err := k.Store.UpdateStatus(ctx, n); err != nil {
		return fmt.Errorf("simkubelet: node %s heartbeat: %w", k.NodeName, err)
	}
	return nil
}

func (k *SimKubelet) heartbeats(ctx context.Context, log *slog.Logger) {
	every := k.HeartbeatInterval
	if every == 0 {
		every = 40 * time.Second
	}
	if every < 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := k.Heartbeat(ctx); err != nil && ctx.Err() == nil {
				log.Debug("heartbeat failed", "err", err)
			}
		}
	}
}

// Run registers the node (unless Register already did), then renews its
// heartbeat and watches the pods bound to it, marking each Running and
// Ready, until ctx ends.
func (k *SimKubelet) Run(ctx context.Context) error {
	if !k.registered.Load() {
		if err := k.Register(ctx); err != nil {
			return err
		}
	}
	log := k.log()
	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	defer func() { stopHB(); <-hbDone }()
	go func() {
		defer close(hbDone)
		k.heartbeats(hbCtx, log)
	}()
	opts := store.ListOptions{FieldSelector: "spec.nodeName=" + k.NodeName}
	for ctx.Err() == nil {
		objs, rev, err := k.Store.List(ctx, "pods", opts)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, store.ErrClosed) {
				return nil
			}
			log.Warn("list pods failed", "err", err)
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		for _, o := range objs {
			k.start(ctx, log, o)
		}
		ch, err := k.Store.Watch(ctx, "pods", opts, rev)
		if err != nil {
			if errors.Is(err, store.ErrClosed) {
				return nil
			}
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		for ev := range ch {
			if ev.Type != store.Deleted {
				k.start(ctx, log, ev.Object)
			}
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// start marks pod Running and Ready if it is bound here and is not yet.
func (k *SimKubelet) start(ctx context.Context, log *slog.Logger, obj schema.Object) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName != k.NodeName || p.DeletionTimestamp != nil || podRunningReady(p) ||
		p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return
	}
	if k.StartDelay > 0 {
		sleep(ctx, k.StartDelay)
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	p = schema.Copy(p)
	p.Status.Phase = corev1.PodRunning
	p.Status.HostIP = k.hostIP()
	p.Status.HostIPs = []corev1.HostIP{{IP: p.Status.HostIP}}
	if p.Status.PodIP == "" {
		p.Status.PodIP = k.podIP()
		p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
	}
	if p.Status.StartTime == nil {
		p.Status.StartTime = &now
	}
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	p.Status.ContainerStatuses = nil
	for _, c := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: true, Started: ptrTrue(),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	if _, err := k.Store.UpdateStatus(ctx, p); err != nil {
		if !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
			// ErrConflict: a newer version of the pod is on its way to us.
			log.Debug("mark pod running failed", "pod", p.Namespace+"/"+p.Name, "err", err)
		}
		return
	}
	log.Debug("pod running", "pod", p.Namespace+"/"+p.Name, "ip", p.Status.PodIP)
}

func ptrTrue() *bool { t := true; return &t }

func podRunningReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
