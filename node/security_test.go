package node

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// The pod's and the container's security contexts merge as the kubelet
// merges them, the container's winning; fsGroup joins the supplemental
// groups.
func TestSecurityForMerges(t *testing.T) {
	pod := newPod("p", corev1.Container{Name: "c", Image: testImage, SecurityContext: &corev1.SecurityContext{
		RunAsUser:                ptr(int64(1001)),
		ReadOnlyRootFilesystem:   ptr(true),
		AllowPrivilegeEscalation: ptr(false),
		Capabilities:             &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}, Drop: []corev1.Capability{"ALL"}},
	}})
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(3000)),
		SupplementalGroups: []int64{4000}, FSGroup: ptr(int64(2000)),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}
	s, err := securityFor(pod, &pod.Spec.Containers[0])
	if err != nil {
		t.Fatal(err)
	}
	if *s.User != 1001 || *s.Group != 3000 || len(s.SupplementalGroups) != 2 || s.SupplementalGroups[1] != 2000 ||
		!s.ReadOnlyRootFilesystem || !s.NoNewPrivileges || s.Privileged || !s.SeccompUnconfined ||
		strings.Join(s.CapAdd, ",") != "NET_BIND_SERVICE" || strings.Join(s.CapDrop, ",") != "ALL" {
		t.Fatalf("security %+v", s)
	}
	pod.Spec.Containers[0].SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptr("x.json")}
	if _, err := securityFor(pod, &pod.Spec.Containers[0]); err == nil || !strings.Contains(err.Error(), "Localhost") {
		t.Fatalf("Localhost seccomp: %v", err)
	}
}

// runAsNonRoot is verified against runAsUser, else the image's user, with
// the kubelet's messages.
func TestVerifyNonRoot(t *testing.T) {
	pod := newPod("p")
	c := &pod.Spec.Containers[0]
	for _, tc := range []struct {
		user      *int64
		imageUser string
		want      string // "" allowed
	}{
		{nil, "", "image will run as root"},
		{nil, "0:0", "image will run as root"},
		{nil, "root", "non-numeric user (root)"},
		{nil, "1000", ""},
		{nil, "65534:65534", ""},
		{ptr(int64(0)), "1000", "runAsUser breaks non-root policy"},
		{ptr(int64(1000)), "", ""},
	} {
		err := verifyNonRoot(pod, c, runtimeapi.Security{User: tc.user}, tc.imageUser)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("user %v image %q: %v", tc.user, tc.imageUser, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("user %v image %q: %v, want %q", tc.user, tc.imageUser, err, tc.want)
		}
	}
}

// A runAsNonRoot pod whose image runs as root waits with
// CreateContainerConfigError and is never started; with a non-root image
// it runs, with the image's user and the group asked.
func TestRunAsNonRootRefusesRootImage(t *testing.T) {
	pod := newPod("p")
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr(true), RunAsGroup: ptr(int64(50))}
	s := newSyncHarness(t, pod)
	st := s.sync(t)
	if len(st.ContainerStatuses) != 1 || st.ContainerStatuses[0].State.Waiting == nil ||
		st.ContainerStatuses[0].State.Waiting.Reason != "CreateContainerConfigError" ||
		!strings.Contains(st.ContainerStatuses[0].State.Waiting.Message, "container has runAsNonRoot and image will run as root") {
		t.Fatalf("status %+v", st.ContainerStatuses)
	}
	if n := s.rt.CountCalls("RunPod"); n != 0 {
		t.Fatalf("RunPod called %d times for a root image with runAsNonRoot", n)
	}
	s.rt.SetImageUser(testImage, "1000")
	s.clk.Step(s.a.cfg.SyncInterval + 1) // a config error is retried at resync pace
	s.sync(t)
	pods, _ := s.rt.ListPods(t.Context())
	if len(pods) != 1 {
		t.Fatalf("runtime pods %v", pods)
	}
	spec, _ := s.rt.Spec(pods[0].ID)
	if sec := spec.Containers[0].Security; sec.User == nil || *sec.User != 1000 || *sec.Group != 50 {
		t.Fatalf("security %+v, want user 1000 (the image's) and group 50", sec)
	}
}
