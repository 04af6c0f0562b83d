package main

import (
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/netfabric/svcview"
	"github.com/flotilla-dev/flotilla/node"
	"github.com/flotilla-dev/flotilla/schema"
	"github.com/flotilla-dev/flotilla/volumes/pvbinding"
)

func newDescribeCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "describe TYPE NAME",
		Short: "Show an object in detail: spec, status, conditions, where it came from",
		Example: `  flotilla describe deployment hello
  flotilla describe pod hello-7d9c-x2x4q`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, c, ns, err := g.target(args[0])
			if err != nil {
				return err
			}
			obj, err := c.Get(cmd.Context(), k.Resource, ns, args[1])
			if err != nil {
				return notFoundHint(err, k, args[1], ns)
			}
			var related []schema.Object
			if svc, ok := obj.(*corev1.Service); ok {
				// A Service is described with its endpoints, as kubectl does.
				related, _, err = c.List(cmd.Context(), "endpointslices", store.ListOptions{Namespace: svc.Namespace,
					LabelSelector: discoveryv1.LabelServiceName + "=" + svc.Name})
				if err != nil {
					return fmt.Errorf("list the endpoints of service %s: %w", svc.Name, err)
				}
			}
			if n, ok := obj.(*corev1.Node); ok {
				// A Node is described with its heartbeat Lease, as kubectl does.
				if l, err := c.Get(cmd.Context(), "leases", node.LeaseNamespace, n.Name); err == nil {
					related = append(related, l)
				}
			}
			now := time.Now()
			describe(cmd.OutOrStdout(), obj, related, now)
			// The Events about it, as kubectl describe lists them.
			evs, _, err := c.List(cmd.Context(), "events", store.ListOptions{Namespace: obj.GetNamespace(), FieldSelector: eventSelector(obj)})
			if err != nil {
				return fmt.Errorf("list the events of %s %s: %w", k.Kind, obj.GetName(), err)
			}
			describeEvents(cmd.OutOrStdout(), evs, now)
			return nil
		},
	}
}

// describe writes an object as `kubectl describe` lays it out; related
// are the objects shown with it (a Service's EndpointSlices).
func describe(w io.Writer, obj schema.Object, related []schema.Object, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	defer tw.Flush()
	p := func(indent int, label string, value any) {
		fmt.Fprintf(tw, "%s%s:\t%v\n", strings.Repeat("  ", indent), label, value)
	}
	p(0, "Name", obj.GetName())
	if obj.GetNamespace() != "" {
		p(0, "Namespace", obj.GetNamespace())
	}
	p(0, "CreationTimestamp", obj.GetCreationTimestamp().Format(time.RFC1123Z))
	p(0, "Labels", mapLines(obj.GetLabels()))
	p(0, "Annotations", mapLines(obj.GetAnnotations()))
	if src := obj.GetAnnotations()[schema.AnnotationSource]; src != "" {
		p(0, "Source", src+" (in Git: change it there)")
	}
	for _, ref := range obj.GetOwnerReferences() {
		p(0, "Controlled By", ref.Kind+"/"+ref.Name)
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		p(0, "Node", orNone(o.Spec.NodeName))
		if o.Status.StartTime != nil {
			p(0, "Start Time", o.Status.StartTime.Format(time.RFC1123Z))
		}
		p(0, "Status", podStatus(o))
		p(0, "IP", orNone(o.Status.PodIP))
		fmt.Fprintln(tw, "Containers:")
		statuses := map[string]corev1.ContainerStatus{}
		for _, cs := range o.Status.ContainerStatuses {
			statuses[cs.Name] = cs
		}
		for _, c := range o.Spec.Containers {
			fmt.Fprintf(tw, "  %s:\n", c.Name)
			cs := statuses[c.Name]
			p(2, "Container ID", orNone(cs.ContainerID))
			p(2, "Image", c.Image)
			if len(c.Command) > 0 {
				p(2, "Command", strings.Join(c.Command, " "))
			}
			if len(c.Args) > 0 {
				p(2, "Args", strings.ReplaceAll(strings.Join(c.Args, " "), "\n", "; "))
			}
			p(2, "State", containerState(cs.State))
			if cs.LastTerminationState.Terminated != nil {
				p(2, "Last State", containerState(cs.LastTerminationState))
			}
			p(2, "Ready", cs.Ready)
			p(2, "Restart Count", cs.RestartCount)
			for _, e := range c.Env {
				v := e.Value
				if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
					v = fmt.Sprintf("<set to the key '%s' of config map '%s'>", e.ValueFrom.ConfigMapKeyRef.Key, e.ValueFrom.ConfigMapKeyRef.Name)
				} else if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					v = fmt.Sprintf("<set to the key '%s' in secret '%s'>", e.ValueFrom.SecretKeyRef.Key, e.ValueFrom.SecretKeyRef.Name)
				}
				p(2, "Env "+e.Name, v)
			}
		}
		conditions(tw, podConditions(o.Status.Conditions))
	case *appsv1.Deployment:
		p(0, "Selector", metav1.FormatLabelSelector(o.Spec.Selector))
		s := o.Status
		p(0, "Replicas", fmt.Sprintf("%d desired | %d updated | %d total | %d available | %d unavailable",
			replicas(o.Spec.Replicas), s.UpdatedReplicas, s.Replicas, s.AvailableReplicas, s.UnavailableReplicas))
		p(0, "StrategyType", orDefault(string(o.Spec.Strategy.Type), "RollingUpdate"))
		if msg, _ := rolloutProgress(o); msg != "" {
			p(0, "Rollout", msg)
		}
		names, images := containerColumns(o.Spec.Template.Spec)
		p(0, "Containers", names+" ("+images+")")
		var cs [][2]string
		for _, c := range s.Conditions {
			cs = append(cs, [2]string{string(c.Type), fmt.Sprintf("%s\t%s\t%s", c.Status, c.Reason, c.Message)})
		}
		conditions(tw, cs)
	case *corev1.Node:
		p(0, "Status", apiserver.NodeStatus(o))
		for _, a := range o.Status.Addresses {
			p(0, string(a.Type), a.Address)
		}
		p(0, "Capacity", resourceLine(o.Status.Capacity))
		p(0, "Allocatable", resourceLine(o.Status.Allocatable))
		p(0, "Pod CIDR", orNone(o.Spec.PodCIDR))
		p(0, "Lease", "")
		lease := &coordinationv1.Lease{}
		for _, r := range related {
			if l, ok := r.(*coordinationv1.Lease); ok {
				lease = l
			}
		}
		holder, renew := "<unset>", "<unset>"
		if lease.Spec.HolderIdentity != nil {
			holder = *lease.Spec.HolderIdentity
		}
		if lease.Spec.RenewTime != nil {
			renew = fmt.Sprintf("%s (%s ago)", lease.Spec.RenewTime.UTC().Format(time.RFC1123), now.Sub(lease.Spec.RenewTime.Time).Round(time.Second))
		}
		p(1, "HolderIdentity", holder)
		p(1, "RenewTime", renew)
		var cs [][2]string
		for _, c := range o.Status.Conditions {
			cs = append(cs, [2]string{string(c.Type), fmt.Sprintf("%s\t%s\t%s", c.Status, c.Reason, c.Message)})
		}
		conditions(tw, cs)
		info := o.Status.NodeInfo
		p(0, "System Info", "")
		for _, kv := range [][2]string{{"Machine ID", info.MachineID}, {"Boot ID", info.BootID},
			{"Kernel Version", info.KernelVersion}, {"OS Image", info.OSImage}, {"Operating System", info.OperatingSystem},
			{"Architecture", info.Architecture}, {"Container Runtime Version", info.ContainerRuntimeVersion},
			{"Kubelet Version", info.KubeletVersion}} {
			p(1, kv[0], kv[1])
		}
	case *corev1.Service:
		describeService(p, o, related)
	case *corev1.PersistentVolumeClaim:
		describeClaim(p, tw, o)
	case *corev1.PersistentVolume:
		describeVolume(p, o)
	default:
		tw.Flush()
		fmt.Fprintln(w, "Spec and status:")
		_ = printOne(w, obj, "yaml")
	}
}

func podConditions(cs []corev1.PodCondition) [][2]string {
	var out [][2]string
	for _, c := range cs {
		out = append(out, [2]string{string(c.Type), fmt.Sprintf("%s\t%s\t%s", c.Status, c.Reason, c.Message)})
	}
	return out
}

func conditions(w io.Writer, cs [][2]string) {
	if len(cs) == 0 {
		return
	}
	fmt.Fprintln(w, "Conditions:")
	fmt.Fprintln(w, "  Type\tStatus\tReason\tMessage")
	for _, c := range cs {
		fmt.Fprintf(w, "  %s\t%s\n", c[0], c[1])
	}
}

func containerState(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "Running since " + s.Running.StartedAt.Format(time.RFC1123Z)
	case s.Waiting != nil:
		return strings.TrimSpace("Waiting " + s.Waiting.Reason + " " + s.Waiting.Message)
	case s.Terminated != nil:
		return fmt.Sprintf("Terminated %s (exit code %d)", s.Terminated.Reason, s.Terminated.ExitCode)
	}
	return "<none>"
}

func mapLines(m map[string]string) string {
	if len(m) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, "\n\t")
}

func resourceLine(rl corev1.ResourceList) string {
	var parts []string
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourcePods} {
		if q, ok := rl[name]; ok {
			parts = append(parts, fmt.Sprintf("%s=%s", name, q.String()))
		}
	}
	return strings.Join(parts, " ")
}

// describeService prints a Service's addresses, ports and endpoints; a
// service whose selector matches no ready pod says so.
func describeService(p func(int, string, any), svc *corev1.Service, related []schema.Object) {
	p(0, "Selector", orNone(labels.SelectorFromSet(svc.Spec.Selector).String()))
	p(0, "Type", orDefault(string(svc.Spec.Type), string(corev1.ServiceTypeClusterIP)))
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		p(0, "External Name", svc.Spec.ExternalName)
		return
	}
	p(0, "IP", orNone(svc.Spec.ClusterIP))
	if lb := apiserver.ServiceExternal(svc); lb != "<none>" {
		p(0, "LoadBalancer Ingress", lb)
	}
	if svc.Spec.SessionAffinity != "" {
		p(0, "Session Affinity", svc.Spec.SessionAffinity)
	}
	for _, sp := range svc.Spec.Ports {
		name := orDefault(sp.Name, "<unset>")
		p(0, "Port", fmt.Sprintf("%s  %d/%s", name, sp.Port, orDefault(string(sp.Protocol), "TCP")))
		p(0, "TargetPort", orDefault(sp.TargetPort.String(), strconv.Itoa(int(sp.Port))))
		if sp.NodePort != 0 {
			p(0, "NodePort", fmt.Sprintf("%s  %d/%s", name, sp.NodePort, orDefault(string(sp.Protocol), "TCP")))
		}
		var ready, notReady []string
		for _, o := range related {
			es, ok := o.(*discoveryv1.EndpointSlice)
			if !ok {
				continue
			}
			for _, ep := range es.Ports {
				if ep.Name == nil || *ep.Name != sp.Name || ep.Port == nil {
					continue
				}
				for _, e := range es.Endpoints {
					for _, a := range e.Addresses {
						addr := net.JoinHostPort(a, strconv.Itoa(int(*ep.Port)))
						if svcview.EndpointReady(e) {
							ready = append(ready, addr)
						} else {
							notReady = append(notReady, addr)
						}
					}
				}
			}
		}
		switch {
		case len(svc.Spec.Selector) == 0:
			p(0, "Endpoints", "<none> (the service has no selector)")
		case len(ready) == 0 && len(notReady) == 0:
			p(0, "Endpoints", "<none> (no running pod matches the selector "+labels.SelectorFromSet(svc.Spec.Selector).String()+")")
		case len(ready) == 0:
			p(0, "Endpoints", fmt.Sprintf("<none> ready; not ready: %s", strings.Join(notReady, ",")))
		default:
			line := strings.Join(ready, ",")
			if len(notReady) > 0 {
				line += fmt.Sprintf(" (not ready: %s)", strings.Join(notReady, ","))
			}
			p(0, "Endpoints", line)
		}
	}
}

// describeClaim prints a claim's binding, and why it is not bound (the
// binder's Bound=False condition).
func describeClaim(p func(int, string, any), tw io.Writer, c *corev1.PersistentVolumeClaim) {
	class := "<unset> (the default class)"
	if c.Spec.StorageClassName != nil {
		class = orDefault(*c.Spec.StorageClassName, `"" (none)`)
	}
	p(0, "StorageClass", class)
	p(0, "Status", orDefault(string(c.Status.Phase), string(corev1.ClaimPending)))
	p(0, "Volume", orNone(c.Spec.VolumeName))
	req := c.Spec.Resources.Requests[corev1.ResourceStorage]
	p(0, "Request", req.String())
	if capa, ok := c.Status.Capacity[corev1.ResourceStorage]; ok {
		p(0, "Capacity", capa.String())
	} else {
		p(0, "Capacity", "<none>")
	}
	p(0, "Access Modes", accessModes(c.Spec.AccessModes))
	if n := c.Annotations[pvbinding.AnnSelectedNode]; n != "" {
		p(0, "Selected Node", n)
	}
	var cs [][2]string
	for _, cond := range c.Status.Conditions {
		if cond.Type == pvbinding.ConditionBound && cond.Status == corev1.ConditionFalse {
			p(0, "Reason", cond.Reason+": "+cond.Message)
		}
		cs = append(cs, [2]string{string(cond.Type), fmt.Sprintf("%s\t%s\t%s", cond.Status, cond.Reason, cond.Message)})
	}
	conditions(tw, cs)
}

// describeVolume prints a volume's source, binding and reclaim.
func describeVolume(p func(int, string, any), v *corev1.PersistentVolume) {
	p(0, "StorageClass", orNone(v.Spec.StorageClassName))
	p(0, "Status", orDefault(string(v.Status.Phase), string(corev1.VolumePending)))
	claim := "<none>"
	if ref := v.Spec.ClaimRef; ref != nil {
		claim = ref.Namespace + "/" + ref.Name
	}
	p(0, "Claim", claim)
	p(0, "Reclaim Policy", pvbinding.ReclaimPolicy(v))
	capa := v.Spec.Capacity[corev1.ResourceStorage]
	p(0, "Capacity", capa.String())
	p(0, "Access Modes", accessModes(v.Spec.AccessModes))
	if na := v.Spec.NodeAffinity; na != nil && na.Required != nil {
		var terms []string
		for _, t := range na.Required.NodeSelectorTerms {
			var reqs []string
			for _, r := range t.MatchExpressions {
				reqs = append(reqs, fmt.Sprintf("%s %s [%s]", r.Key, r.Operator, strings.Join(r.Values, ", ")))
			}
			terms = append(terms, strings.Join(reqs, ", "))
		}
		p(0, "Node Affinity", strings.Join(terms, "\n\t"))
	}
	switch {
	case v.Spec.Local != nil:
		p(0, "Source", "local directory "+v.Spec.Local.Path)
	case v.Spec.HostPath != nil:
		p(0, "Source", "hostPath "+v.Spec.HostPath.Path)
	}
	if v.Status.Message != "" {
		p(0, "Message", strings.TrimSpace(v.Status.Reason+": "+v.Status.Message))
	}
}

func accessModes(ms []corev1.PersistentVolumeAccessMode) string {
	if len(ms) == 0 {
		return "<none>"
	}
	ss := make([]string, len(ms))
	for i, m := range ms {
		ss[i] = string(m)
	}
	return strings.Join(ss, ",")
}
