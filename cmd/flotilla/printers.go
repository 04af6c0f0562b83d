package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/flotilla-dev/flotilla/schema"
)

// table prints objects of one kind as kubectl does: upper-case headers,
// columns aligned, NAMESPACE first when listing all namespaces.
type table struct {
	allNamespaces bool
	wide          bool
	now           time.Time
}

// columns returns the headers and a row function for a kind.
func (t table) columns(kind string) ([]string, func(schema.Object) []string) {
	age := func(o schema.Object) string { return t.age(o.GetCreationTimestamp()) }
	switch kind {
	case "Pod":
		h := []string{"NAME", "READY", "STATUS", "RESTARTS", "AGE"}
		if t.wide {
			h = append(h, "IP", "NODE")
		}
		return h, func(o schema.Object) []string {
			p := o.(*corev1.Pod)
			ready, restarts := 0, int32(0)
			for _, cs := range p.Status.ContainerStatuses {
				if cs.Ready {
					ready++
				}
				restarts += cs.RestartCount
			}
			row := []string{p.Name, fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers)), podStatus(p), fmt.Sprint(restarts), age(o)}
			if t.wide {
				row = append(row, orNone(p.Status.PodIP), orNone(p.Spec.NodeName))
			}
			return row
		}
	case "Deployment":
		h := []string{"NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"}
		if t.wide {
			h = append(h, "CONTAINERS", "IMAGES", "SELECTOR")
		}
		return h, func(o schema.Object) []string {
			d := o.(*appsv1.Deployment)
			row := []string{d.Name, fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, replicas(d.Spec.Replicas)),
				fmt.Sprint(d.Status.UpdatedReplicas), fmt.Sprint(d.Status.AvailableReplicas), age(o)}
			if t.wide {
				names, images := containerColumns(d.Spec.Template.Spec)
				row = append(row, names, images, metav1.FormatLabelSelector(d.Spec.Selector))
			}
			return row
		}
	case "ReplicaSet":
		h := []string{"NAME", "DESIRED", "CURRENT", "READY", "AGE"}
		if t.wide {
			h = append(h, "CONTAINERS", "IMAGES", "SELECTOR")
		}
		return h, func(o schema.Object) []string {
			r := o.(*appsv1.ReplicaSet)
			row := []string{r.Name, fmt.Sprint(replicas(r.Spec.Replicas)), fmt.Sprint(r.Status.Replicas), fmt.Sprint(r.Status.ReadyReplicas), age(o)}
			if t.wide {
				names, images := containerColumns(r.Spec.Template.Spec)
				row = append(row, names, images, metav1.FormatLabelSelector(r.Spec.Selector))
			}
			return row
		}
	case "StatefulSet":
		return []string{"NAME", "READY", "AGE"}, func(o schema.Object) []string {
			s := o.(*appsv1.StatefulSet)
			return []string{s.Name, fmt.Sprintf("%d/%d", s.Status.ReadyReplicas, replicas(s.Spec.Replicas)), age(o)}
		}
	case "Node":
		h := []string{"NAME", "STATUS", "ROLES", "AGE", "VERSION"}
		if t.wide {
			h = append(h, "INTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME")
		}
		return h, func(o schema.Object) []string {
			n := o.(*corev1.Node)
			row := []string{n.Name, nodeStatus(n), nodeRoles(n), age(o), orNone(n.Status.NodeInfo.KubeletVersion)}
			if t.wide {
				ip := "<none>"
				for _, a := range n.Status.Addresses {
					if a.Type == corev1.NodeInternalIP {
						ip = a.Address
					}
				}
				row = append(row, ip, orNone(n.Status.NodeInfo.OSImage), orNone(n.Status.NodeInfo.KernelVersion), orNone(n.Status.NodeInfo.ContainerRuntimeVersion))
			}
			return row
		}
	case "Service":
		return []string{"NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"}, func(o schema.Object) []string {
			s := o.(*corev1.Service)
			var ports []string
			for _, p := range s.Spec.Ports {
				port := fmt.Sprintf("%d", p.Port)
				if p.NodePort != 0 {
					port += fmt.Sprintf(":%d", p.NodePort)
				}
				ports = append(ports, port+"/"+string(orDefault(string(p.Protocol), "TCP")))
			}
			ext := "<none>"
			if s.Spec.Type == corev1.ServiceTypeExternalName {
				ext = s.Spec.ExternalName
			}
			var ips []string
			for _, in := range s.Status.LoadBalancer.Ingress {
				ips = append(ips, in.IP)
			}
			if len(ips) > 0 {
				ext = strings.Join(ips, ",")
			} else if s.Spec.Type == corev1.ServiceTypeLoadBalancer {
				ext = "<pending>"
			}
			return []string{s.Name, string(orDefault(string(s.Spec.Type), "ClusterIP")), orNone(s.Spec.ClusterIP), ext, orNone(strings.Join(ports, ",")), age(o)}
		}
	case "ConfigMap":
		return []string{"NAME", "DATA", "AGE"}, func(o schema.Object) []string {
			c := o.(*corev1.ConfigMap)
			return []string{c.Name, fmt.Sprint(len(c.Data) + len(c.BinaryData)), age(o)}
		}
	case "Secret":
		return []string{"NAME", "TYPE", "DATA", "AGE"}, func(o schema.Object) []string {
			s := o.(*corev1.Secret)
			return []string{s.Name, string(orDefault(string(s.Type), "Opaque")), fmt.Sprint(len(s.Data) + len(s.StringData)), age(o)}
		}
	case "PersistentVolume":
		return []string{"NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "AGE"}, func(o schema.Object) []string {
			v := o.(*corev1.PersistentVolume)
			c := v.Spec.Capacity[corev1.ResourceStorage]
			claim := ""
			if ref := v.Spec.ClaimRef; ref != nil {
				claim = ref.Namespace + "/" + ref.Name
			}
			return []string{v.Name, c.String(), accessModes(v.Spec.AccessModes), string(v.Spec.PersistentVolumeReclaimPolicy), string(v.Status.Phase), claim, age(o)}
		}
	case "PersistentVolumeClaim":
		return []string{"NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "AGE"}, func(o schema.Object) []string {
			c := o.(*corev1.PersistentVolumeClaim)
			q := c.Status.Capacity[corev1.ResourceStorage]
			capacity := ""
			if !q.IsZero() {
				capacity = q.String()
			}
			return []string{c.Name, string(c.Status.Phase), c.Spec.VolumeName, capacity, accessModes(c.Status.AccessModes), age(o)}
		}
	case "Ingress":
		return []string{"NAME", "HOSTS", "ADDRESS", "PORTS", "AGE"}, func(o schema.Object) []string {
			in := o.(*networkingv1.Ingress)
			var hosts []string
			for _, r := range in.Spec.Rules {
				hosts = append(hosts, orDefault(r.Host, "*"))
			}
			var addrs []string
			for _, lb := range in.Status.LoadBalancer.Ingress {
				addrs = append(addrs, lb.IP)
			}
			return []string{in.Name, orDefault(strings.Join(hosts, ","), "*"), strings.Join(addrs, ","), "80", age(o)}
		}
	case "SyncStatus":
		return []string{"NAME", "RESULT", "LIVE COMMIT", "AGE"}, func(o schema.Object) []string {
			s := o.(*schema.SyncStatus)
			return []string{s.Name, string(s.Status.Result), shortCommit(s.Status.LastAppliedCommit), age(o)}
		}
	}
	return []string{"NAME", "AGE"}, func(o schema.Object) []string { return []string{o.GetName(), age(o)} }
}

// print writes a table of objects of one kind; prefix ("deployment.apps/")
// is put before names when several kinds are shown, as `get all` does.
func (t table) print(w io.Writer, kind, prefix string, objs []schema.Object) error {
	headers, row := t.columns(kind)
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	if t.allNamespaces {
		headers = append([]string{"NAMESPACE"}, headers...)
	}
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, o := range objs {
		r := row(o)
		r[0] = prefix + r[0]
		if t.allNamespaces {
			r = append([]string{o.GetNamespace()}, r...)
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func (t table) age(ts metav1.Time) string {
	if ts.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(t.now.Sub(ts.Time))
}

// podStatus is kubectl's STATUS column: the reason a container is waiting
// or terminated, Terminating, or the phase.
func podStatus(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "Terminating"
	}
	reason := string(p.Status.Phase)
	if p.Status.Reason != "" {
		reason = p.Status.Reason
	}
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
			return cs.State.Waiting.Reason
		case cs.State.Terminated != nil && cs.State.Terminated.Reason != "" && p.Status.Phase == corev1.PodRunning:
			return cs.State.Terminated.Reason
		}
	}
	if reason == "" {
		reason = "Pending"
	}
	return reason
}

func nodeStatus(n *corev1.Node) string {
	status := "Unknown"
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				status = "Ready"
			} else {
				status = "NotReady"
			}
		}
	}
	if n.Spec.Unschedulable {
		status += ",SchedulingDisabled"
	}
	return status
}

func nodeRoles(n *corev1.Node) string {
	var roles []string
	for k := range n.Labels {
		if r, ok := strings.CutPrefix(k, "node-role.kubernetes.io/"); ok {
			roles = append(roles, r)
		}
	}
	sort.Strings(roles)
	return orNone(strings.Join(roles, ","))
}

func containerColumns(spec corev1.PodSpec) (names, images string) {
	var n, i []string
	for _, c := range spec.Containers {
		n = append(n, c.Name)
		i = append(i, c.Image)
	}
	return strings.Join(n, ","), strings.Join(i, ",")
}

func accessModes(modes []corev1.PersistentVolumeAccessMode) string {
	short := map[corev1.PersistentVolumeAccessMode]string{
		corev1.ReadWriteOnce: "RWO", corev1.ReadOnlyMany: "ROX", corev1.ReadWriteMany: "RWX", corev1.ReadWriteOncePod: "RWOP",
	}
	var out []string
	for _, m := range modes {
		out = append(out, short[m])
	}
	return strings.Join(out, ",")
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

func orNone(s string) string { return orDefault(s, "<none>") }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func shortCommit(c string) string {
	if len(c) > 7 {
		return c[:7]
	}
	return orNone(c)
}
