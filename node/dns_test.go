package node

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

func TestPodDNS(t *testing.T) {
	two := "2"
	cluster := &runtimeapi.DNSConfig{Nameservers: []string{"10.244.1.1"}, Searches: []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"}, Options: []string{"ndots:5"}}
	for _, tc := range []struct {
		name       string
		spec       corev1.PodSpec
		clusterDNS string
		want       *runtimeapi.DNSConfig
	}{
		{"default policy is ClusterFirst", corev1.PodSpec{}, "10.244.1.1", cluster},
		{"ClusterFirst without cluster DNS falls back to the node's", corev1.PodSpec{DNSPolicy: corev1.DNSClusterFirst}, "", nil},
		{"Default keeps the node's", corev1.PodSpec{DNSPolicy: corev1.DNSDefault}, "10.244.1.1", nil},
		{"None takes only dnsConfig", corev1.PodSpec{DNSPolicy: corev1.DNSNone, DNSConfig: &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.53"}}},
			"10.244.1.1", &runtimeapi.DNSConfig{Nameservers: []string{"192.0.2.53"}, Searches: []string{}, Options: []string{}}},
		{"dnsConfig appends, and its ndots wins", corev1.PodSpec{DNSConfig: &corev1.PodDNSConfig{Searches: []string{"corp.example"},
			Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &two}, {Name: "edns0"}}}}, "10.244.1.1",
			&runtimeapi.DNSConfig{Nameservers: []string{"10.244.1.1"}, Searches: []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"}, Options: []string{"ndots:2", "edns0"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: tc.spec}
			pod.Namespace = "shop"
			got := podDNS(pod, tc.clusterDNS, "")
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("podDNS = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPodHostname(t *testing.T) {
	pod := &corev1.Pod{}
	pod.Name = "web-0"
	if got := podHostname(pod); got != "web-0" {
		t.Errorf("hostname = %q, want the pod name", got)
	}
	pod.Spec.Hostname = "db"
	if got := podHostname(pod); got != "db" {
		t.Errorf("hostname = %q, want spec.hostname", got)
	}
}
