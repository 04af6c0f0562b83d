package apiserver

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/flotilla-dev/flotilla/schema"
)

// kubectl asks for server-side printing with
// "Accept: application/json;as=Table;v=v1;g=meta.k8s.io,…,application/json".

// tableVersion returns "v1" or "v1beta1" when the client accepts a
// meta.k8s.io Table, else "".
func tableVersion(r *http.Request) string {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil || mt != "application/json" || params["as"] != "Table" || params["g"] != "meta.k8s.io" {
			continue
		}
		if v := params["v"]; v == "v1" || v == "v1beta1" {
			return v
		}
	}
	return ""
}

func tableContentType(v string) string { return "application/json;as=Table;v=" + v + ";g=meta.k8s.io" }

func writeTable(w http.ResponseWriter, code int, v string, t *metav1.Table) {
	data, err := json.Marshal(t)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, toStatus(err, target{}))
		return
	}
	w.Header().Set("Content-Type", tableContentType(v))
	w.WriteHeader(code)
	_, _ = w.Write(data)
	_, _ = w.Write([]byte("\n"))
}

// includeObject is the includeObject parameter: None, Metadata (default) or Object.
func includeObject(r *http.Request) string {
	switch v := r.URL.Query().Get("includeObject"); v {
	case "None", "Object":
		return v
	}
	return "Metadata"
}

// column is one printed column and how to fill it.
type column struct {
	name, typ string
	priority  int32 // 1: only with -o wide
	cell      func(schema.Object) any
}

// toTable prints objs as kubectl's server-side table; withColumns false
// leaves out the column definitions (watch events after the first).
func toTable(k schema.Kind, objs []schema.Object, include string, withColumns bool, now time.Time) *metav1.Table {
	cols := columnsFor(k.Resource, now)
	t := &metav1.Table{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "Table"}, Rows: []metav1.TableRow{}}
	if withColumns {
		t.ColumnDefinitions = append(t.ColumnDefinitions, metav1.TableColumnDefinition{
			Name: "Name", Type: "string", Format: "name", Description: "Name must be unique within a namespace."})
		for _, c := range cols {
			t.ColumnDefinitions = append(t.ColumnDefinitions, metav1.TableColumnDefinition{
				Name: c.name, Type: c.typ, Priority: c.priority})
		}
	}
	for _, obj := range objs {
		row := metav1.TableRow{Cells: []any{obj.GetName()}}
		for _, c := range cols {
			row.Cells = append(row.Cells, c.cell(obj))
		}
		switch include {
		case "Object":
			if data, err := schema.Encode(obj); err == nil {
				row.Object = runtime.RawExtension{Raw: data}
			}
		case "Metadata":
			pom := metav1.PartialObjectMetadata{
				TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"},
			}
			if acc, ok := obj.(metav1.ObjectMetaAccessor); ok {
				if om, ok := acc.GetObjectMeta().(*metav1.ObjectMeta); ok {
					om.DeepCopyInto(&pom.ObjectMeta)
				}
			}
			if data, err := json.Marshal(pom); err == nil {
				row.Object = runtime.RawExtension{Raw: data}
			}
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

func age(now time.Time) column {
	return column{name: "Age", typ: "string", cell: func(o schema.Object) any {
		ts := o.GetCreationTimestamp()
		if ts.IsZero() {
			return "<unknown>"
		}
		return duration.HumanDuration(now.Sub(ts.Time))
	}}
}

func str(name string, prio int32, f func(schema.Object) string) column {
	return column{name: name, typ: "string", priority: prio, cell: func(o schema.Object) any { return f(o) }}
}

func num(name string, f func(schema.Object) int64) column {
	return column{name: name, typ: "integer", cell: func(o schema.Object) any { return f(o) }}
}

func orUnknown(s string) string {
	if s == "" {
		return "<unknown>"
	}
	return s
}

// containerNames and containerImages are kubectl's wide CONTAINERS and
// IMAGES of a workload.
func containerNames(spec corev1.PodSpec) string {
	names := make([]string, len(spec.Containers))
	for i, c := range spec.Containers {
		names[i] = c.Name
	}
	return strings.Join(names, ",")
}

func containerImages(spec corev1.PodSpec) string {
	images := make([]string, len(spec.Containers))
	for i, c := range spec.Containers {
		images[i] = c.Image
	}
	return strings.Join(images, ",")
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func columnsFor(resource string, now time.Time) []column {
	a := age(now)
	switch resource {
	case "pods":
		p := func(o schema.Object) *corev1.Pod { return o.(*corev1.Pod) }
		return []column{
			str("Ready", 0, func(o schema.Object) string { return podReady(p(o)) }),
			str("Status", 0, func(o schema.Object) string { return podStatus(p(o)) }),
			num("Restarts", func(o schema.Object) int64 { return podRestarts(p(o)) }), a,
			str("IP", 1, func(o schema.Object) string { return orNone(p(o).Status.PodIP) }),
			str("Node", 1, func(o schema.Object) string { return orNone(p(o).Spec.NodeName) }),
		}
	case "deployments":
		d := func(o schema.Object) *appsv1.Deployment { return o.(*appsv1.Deployment) }
		return []column{
			str("Ready", 0, func(o schema.Object) string {
				return fmt.Sprintf("%d/%d", d(o).Status.ReadyReplicas, replicas(d(o).Spec.Replicas))
			}),
			num("Up-to-date", func(o schema.Object) int64 { return int64(d(o).Status.UpdatedReplicas) }),
			num("Available", func(o schema.Object) int64 { return int64(d(o).Status.AvailableReplicas) }), a,
			str("Containers", 1, func(o schema.Object) string { return containerNames(d(o).Spec.Template.Spec) }),
			str("Images", 1, func(o schema.Object) string { return containerImages(d(o).Spec.Template.Spec) }),
			str("Selector", 1, func(o schema.Object) string { return metav1.FormatLabelSelector(d(o).Spec.Selector) }),
		}
	case "replicasets":
		rs := func(o schema.Object) *appsv1.ReplicaSet { return o.(*appsv1.ReplicaSet) }
		return []column{
			num("Desired", func(o schema.Object) int64 { return int64(replicas(rs(o).Spec.Replicas)) }),
			num("Current", func(o schema.Object) int64 { return int64(rs(o).Status.Replicas) }),
			num("Ready", func(o schema.Object) int64 { return int64(rs(o).Status.ReadyReplicas) }), a,
			str("Containers", 1, func(o schema.Object) string { return containerNames(rs(o).Spec.Template.Spec) }),
			str("Images", 1, func(o schema.Object) string { return containerImages(rs(o).Spec.Template.Spec) }),
			str("Selector", 1, func(o schema.Object) string { return metav1.FormatLabelSelector(rs(o).Spec.Selector) }),
		}
	case "statefulsets":
		ss := func(o schema.Object) *appsv1.StatefulSet { return o.(*appsv1.StatefulSet) }
		return []column{str("Ready", 0, func(o schema.Object) string {
			return fmt.Sprintf("%d/%d", ss(o).Status.ReadyReplicas, replicas(ss(o).Spec.Replicas))
		}), a,
			str("Containers", 1, func(o schema.Object) string { return containerNames(ss(o).Spec.Template.Spec) }),
			str("Images", 1, func(o schema.Object) string { return containerImages(ss(o).Spec.Template.Spec) }),
		}
	case "services":
		svc := func(o schema.Object) *corev1.Service { return o.(*corev1.Service) }
		return []column{
			str("Type", 0, func(o schema.Object) string {
				if t := svc(o).Spec.Type; t != "" {
					return string(t)
				}
				return string(corev1.ServiceTypeClusterIP)
			}),
			str("Cluster-IP", 0, func(o schema.Object) string { return orNone(svc(o).Spec.ClusterIP) }),
			str("External-IP", 0, func(o schema.Object) string { return serviceExternal(svc(o)) }),
			str("Port(s)", 0, func(o schema.Object) string { return servicePorts(svc(o)) }), a,
			str("Selector", 1, func(o schema.Object) string {
				if len(svc(o).Spec.Selector) == 0 {
					return "<none>"
				}
				return labels.Set(svc(o).Spec.Selector).String()
			}),
		}
	case "nodes":
		n := func(o schema.Object) *corev1.Node { return o.(*corev1.Node) }
		return []column{
			str("Status", 0, func(o schema.Object) string { return nodeStatus(n(o)) }),
			str("Roles", 0, func(o schema.Object) string { return nodeRoles(n(o)) }), a,
			str("Version", 0, func(o schema.Object) string { return n(o).Status.NodeInfo.KubeletVersion }),
			str("Internal-IP", 1, func(o schema.Object) string { return nodeAddress(n(o), corev1.NodeInternalIP) }),
			str("External-IP", 1, func(o schema.Object) string { return nodeAddress(n(o), corev1.NodeExternalIP) }),
			str("OS-Image", 1, func(o schema.Object) string { return orUnknown(n(o).Status.NodeInfo.OSImage) }),
			str("Kernel-Version", 1, func(o schema.Object) string { return orUnknown(n(o).Status.NodeInfo.KernelVersion) }),
			str("Container-Runtime", 1, func(o schema.Object) string { return orUnknown(n(o).Status.NodeInfo.ContainerRuntimeVersion) }),
		}
	case "namespaces":
		return []column{str("Status", 0, func(o schema.Object) string {
			if ph := o.(*corev1.Namespace).Status.Phase; ph != "" {
				return string(ph)
			}
			return "Active"
		}), a}
	case "configmaps":
		return []column{num("Data", func(o schema.Object) int64 {
			cm := o.(*corev1.ConfigMap)
			return int64(len(cm.Data) + len(cm.BinaryData))
		}), a}
	case "secrets":
		return []column{
			str("Type", 0, func(o schema.Object) string { return string(o.(*corev1.Secret).Type) }),
			num("Data", func(o schema.Object) int64 { return int64(len(o.(*corev1.Secret).Data)) }), a,
		}
	case "persistentvolumeclaims":
		c := func(o schema.Object) *corev1.PersistentVolumeClaim { return o.(*corev1.PersistentVolumeClaim) }
		return []column{
			str("Status", 0, func(o schema.Object) string { return string(c(o).Status.Phase) }),
			str("Volume", 0, func(o schema.Object) string { return c(o).Spec.VolumeName }),
			str("Capacity", 0, func(o schema.Object) string { return quantity(c(o).Status.Capacity) }), a,
		}
	case "persistentvolumes":
		v := func(o schema.Object) *corev1.PersistentVolume { return o.(*corev1.PersistentVolume) }
		return []column{
			str("Capacity", 0, func(o schema.Object) string { return quantity(v(o).Spec.Capacity) }),
			str("Status", 0, func(o schema.Object) string { return string(v(o).Status.Phase) }),
			str("Claim", 0, func(o schema.Object) string {
				if ref := v(o).Spec.ClaimRef; ref != nil {
					return ref.Namespace + "/" + ref.Name
				}
				return ""
			}), a,
		}
	case "endpoints":
		return []column{str("Endpoints", 0, func(o schema.Object) string { return endpoints(o.(*corev1.Endpoints)) }), a}
	case "events":
		e := func(o schema.Object) *corev1.Event { return o.(*corev1.Event) }
		return []column{
			str("Type", 0, func(o schema.Object) string { return e(o).Type }),
			str("Reason", 0, func(o schema.Object) string { return e(o).Reason }),
			str("Object", 0, func(o schema.Object) string {
				return strings.ToLower(e(o).InvolvedObject.Kind) + "/" + e(o).InvolvedObject.Name
			}),
			str("Message", 0, func(o schema.Object) string { return e(o).Message }), a,
		}
	case "ingresses":
		in := func(o schema.Object) *networkingv1.Ingress { return o.(*networkingv1.Ingress) }
		return []column{
			str("Class", 0, func(o schema.Object) string {
				if c := in(o).Spec.IngressClassName; c != nil {
					return *c
				}
				return "<none>"
			}),
			str("Hosts", 0, func(o schema.Object) string { return ingressHosts(in(o)) }),
			str("Ports", 0, func(o schema.Object) string {
				if len(in(o).Spec.TLS) > 0 {
					return "80, 443"
				}
				return "80"
			}), a,
		}
	case "endpointslices":
		es := func(o schema.Object) *discoveryv1.EndpointSlice { return o.(*discoveryv1.EndpointSlice) }
		return []column{
			str("AddressType", 0, func(o schema.Object) string { return string(es(o).AddressType) }),
			str("Ports", 0, func(o schema.Object) string { return slicePorts(es(o)) }),
			str("Endpoints", 0, func(o schema.Object) string { return sliceEndpoints(es(o)) }), a,
		}
	case "syncstatuses":
		st := func(o schema.Object) *schema.SyncStatus { return o.(*schema.SyncStatus) }
		return []column{
			str("Commit", 0, func(o schema.Object) string { return short(st(o).Status.LastAppliedCommit) }),
			str("Result", 0, func(o schema.Object) string { return string(st(o).Status.Result) }),
			str("Message", 0, func(o schema.Object) string { return st(o).Status.Message }), a,
		}
	}
	return []column{a}
}

func replicas(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

func podReady(p *corev1.Pod) string {
	ready := 0
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Ready {
			ready++
		}
	}
	return fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers))
}

// podStatus follows kubectl's printer in outline: the phase, overridden by
// the pod's reason, a container's waiting or terminated reason, or
// Terminating.
func podStatus(p *corev1.Pod) string {
	reason := string(p.Status.Phase)
	if p.Status.Reason != "" {
		reason = p.Status.Reason
	}
	// as kubectl: the first init container that has not completed names
	// the status (Init:Error, Init:CrashLoopBackOff, else Init:i/N)
	initializing := false
	for i, cs := range p.Status.InitContainerStatuses {
		switch {
		case cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0:
			continue
		case cs.State.Terminated != nil && cs.State.Terminated.Reason != "":
			reason = "Init:" + cs.State.Terminated.Reason
		case cs.State.Terminated != nil && cs.State.Terminated.Signal != 0:
			reason = fmt.Sprintf("Init:Signal:%d", cs.State.Terminated.Signal)
		case cs.State.Terminated != nil:
			reason = fmt.Sprintf("Init:ExitCode:%d", cs.State.Terminated.ExitCode)
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "" && cs.State.Waiting.Reason != "PodInitializing":
			reason = "Init:" + cs.State.Waiting.Reason
		default:
			reason = fmt.Sprintf("Init:%d/%d", i, len(p.Spec.InitContainers))
		}
		initializing = true
		break
	}
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case initializing:
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
			reason = cs.State.Waiting.Reason
		case cs.State.Terminated != nil && cs.State.Terminated.Reason != "":
			reason = cs.State.Terminated.Reason
		}
	}
	if p.DeletionTimestamp != nil {
		reason = "Terminating"
	}
	if reason == "" {
		reason = string(corev1.PodPending)
	}
	return reason
}

func podRestarts(p *corev1.Pod) int64 {
	var n int64
	for _, cs := range p.Status.ContainerStatuses {
		n += int64(cs.RestartCount)
	}
	return n
}

func nodeStatus(n *corev1.Node) string {
	status := "Unknown"
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			status = "NotReady"
			if c.Status == corev1.ConditionTrue {
				status = "Ready"
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
	for l := range n.Labels {
		if role, ok := strings.CutPrefix(l, "node-role.kubernetes.io/"); ok && role != "" {
			roles = append(roles, role)
		}
	}
	sort.Strings(roles)
	return orNone(strings.Join(roles, ","))
}

func nodeAddress(n *corev1.Node, t corev1.NodeAddressType) string {
	for _, a := range n.Status.Addresses {
		if a.Type == t {
			return a.Address
		}
	}
	return "<none>"
}

func serviceExternal(s *corev1.Service) string {
	ips := append([]string(nil), s.Spec.ExternalIPs...)
	for _, in := range s.Status.LoadBalancer.Ingress {
		ips = append(ips, in.IP+in.Hostname)
	}
	if len(ips) == 0 && s.Spec.Type == corev1.ServiceTypeLoadBalancer {
		return "<pending>"
	}
	return orNone(strings.Join(ips, ","))
}

func servicePorts(s *corev1.Service) string {
	var ports []string
	for _, p := range s.Spec.Ports {
		v := strconv.Itoa(int(p.Port))
		if p.NodePort != 0 {
			v += ":" + strconv.Itoa(int(p.NodePort))
		}
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		ports = append(ports, v+"/"+string(proto))
	}
	return orNone(strings.Join(ports, ","))
}

func quantity(rl corev1.ResourceList) string {
	if q, ok := rl[corev1.ResourceStorage]; ok {
		return q.String()
	}
	return ""
}

func endpoints(e *corev1.Endpoints) string {
	var eps []string
	for _, ss := range e.Subsets {
		for _, a := range ss.Addresses {
			for _, p := range ss.Ports {
				eps = append(eps, a.IP+":"+strconv.Itoa(int(p.Port)))
			}
		}
	}
	if len(eps) > 3 {
		return strings.Join(eps[:3], ",") + fmt.Sprintf(" + %d more...", len(eps)-3)
	}
	return orNone(strings.Join(eps, ","))
}

func slicePorts(es *discoveryv1.EndpointSlice) string {
	var ports []string
	for _, p := range es.Ports {
		if p.Port != nil {
			ports = append(ports, strconv.Itoa(int(*p.Port)))
		}
	}
	return orNone(strings.Join(ports, ","))
}

// sliceEndpoints lists the ready endpoints' addresses, as kubectl does
// (the first three, then a count).
func sliceEndpoints(es *discoveryv1.EndpointSlice) string {
	var addrs []string
	for _, ep := range es.Endpoints {
		if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
			addrs = append(addrs, ep.Addresses...)
		}
	}
	if len(addrs) > 3 {
		return strings.Join(addrs[:3], ",") + fmt.Sprintf(" + %d more...", len(addrs)-3)
	}
	return orNone(strings.Join(addrs, ","))
}

func ingressHosts(in *networkingv1.Ingress) string {
	var hosts []string
	for _, r := range in.Spec.Rules {
		if r.Host != "" {
			hosts = append(hosts, r.Host)
		}
	}
	if len(hosts) == 0 {
		return "*"
	}
	return strings.Join(hosts, ",")
}

// Table is the server-side printing of objs as kubectl shows them: the
// column definitions (Priority 1: only with -o wide), then one row per
// object in the order given, its cells in column order. The flotilla CLI
// prints the same table, so the two never disagree.
func Table(k schema.Kind, objs []schema.Object, now time.Time) *metav1.Table {
	return toTable(k, objs, "None", true, now)
}

// PodStatus is kubectl's STATUS of a pod.
func PodStatus(p *corev1.Pod) string { return podStatus(p) }

// ServiceExternal is the EXTERNAL-IP column of a Service: its load
// balancer addresses and external IPs, "<pending>" for a LoadBalancer that
// has none yet, "<none>" otherwise.
func ServiceExternal(s *corev1.Service) string { return serviceExternal(s) }

// NodeStatus is kubectl's STATUS of a node.
func NodeStatus(n *corev1.Node) string { return nodeStatus(n) }
