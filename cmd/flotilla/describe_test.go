package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/flotilla-dev/flotilla/schema"
)

func TestDescribeService(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.0.12", Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: 30080, Protocol: corev1.ProtocolTCP}}}}
	var out bytes.Buffer
	describe(&out, svc, nil, time.Now())
	for _, want := range []string{"IP:", "10.96.0.12", "NodePort:", "http  30080/TCP", "Endpoints:", "<none> (no running pod matches the selector app=web)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("describe of a service selecting nothing lacks %q:\n%s", want, out.String())
		}
	}

	yes, no := true, false
	name, port := "http", int32(8080)
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-x", Namespace: "default"},
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.1.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}},
			{Addresses: []string{"10.244.2.9"}, Conditions: discoveryv1.EndpointConditions{Ready: &no}},
		}}
	out.Reset()
	describe(&out, svc, []schema.Object{slice}, time.Now())
	if !strings.Contains(out.String(), "10.244.1.5:8080 (not ready: 10.244.2.9:8080)") {
		t.Errorf("endpoints not shown:\n%s", out.String())
	}
}

func TestDescribeClaim(t *testing.T) {
	manual := "manual"
	c := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "big", Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &manual, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("30Gi")}}},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending, Conditions: []corev1.PersistentVolumeClaimCondition{{
			Type: "Bound", Status: corev1.ConditionFalse, Reason: "FailedBinding", Message: "no persistent volume satisfies the claim: 1 too small (at most 20Gi)"}}}}
	var out bytes.Buffer
	describe(&out, c, nil, time.Now())
	for _, want := range []string{"StorageClass:", "manual", "Status:", "Pending", "Volume:", "<none>", "Request:", "30Gi",
		"Reason:", "FailedBinding: no persistent volume satisfies the claim: 1 too small (at most 20Gi)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("describe of a pending claim lacks %q:\n%s", want, out.String())
		}
	}
	c.Spec.VolumeName = "pv-1"
	c.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound, Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("50Gi")}}
	out.Reset()
	describe(&out, c, nil, time.Now())
	for _, want := range []string{"Bound", "pv-1", "Capacity:", "50Gi", "ReadWriteOnce"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("describe of a bound claim lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "Reason:") {
		t.Errorf("a bound claim shows a reason:\n%s", out.String())
	}
}

// TestDescribeNodeShowsLease: a Node is described with its heartbeat
// Lease's holder and renewal, or <unset> without one.
func TestDescribeNodeShowsLease(t *testing.T) {
	now := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24"}}
	var out bytes.Buffer
	describe(&out, n, nil, now)
	flat := func() string { return strings.Join(strings.Fields(out.String()), " ") }
	if !strings.Contains(flat(), "HolderIdentity: <unset> RenewTime: <unset>") {
		t.Errorf("describe node without a lease:\n%s", out.String())
	}
	holder, renew := "node1", metav1.NewMicroTime(now.Add(-7*time.Second))
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "node1", Namespace: "kube-node-lease"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, RenewTime: &renew}}
	out.Reset()
	describe(&out, n, []schema.Object{lease}, now)
	if !strings.Contains(flat(), "HolderIdentity: node1 RenewTime: Sun, 06 Dec 2026 02:59:53 UTC (7s ago)") {
		t.Errorf("describe node with its lease:\n%s", out.String())
	}
	n.Status.NodeInfo = corev1.NodeSystemInfo{KernelVersion: "6.18.0", OSImage: "Debian GNU/Linux 12 (bookworm)", ContainerRuntimeVersion: "podman://4.9.5"}
	out.Reset()
	describe(&out, n, nil, now)
	if !strings.Contains(flat(), "Kernel Version: 6.18.0 OS Image: Debian GNU/Linux 12 (bookworm)") || !strings.Contains(flat(), "Container Runtime Version: podman://4.9.5") {
		t.Errorf("describe node's system info:\n%s", out.String())
	}
}
