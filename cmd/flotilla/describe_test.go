package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
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
