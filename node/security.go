package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// securityFor is container c's effective security context. Settings the
// node cannot apply are config errors, naming the field.
func securityFor(pod *corev1.Pod, c *corev1.Container) (runtimeapi.Security, error) {
	var s runtimeapi.Security
	psc := pod.Spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	csc := c.SecurityContext
	if csc == nil {
		csc = &corev1.SecurityContext{}
	}
	s.User = firstInt(csc.RunAsUser, psc.RunAsUser)
	s.Group = firstInt(csc.RunAsGroup, psc.RunAsGroup)
	s.SupplementalGroups = append(s.SupplementalGroups, psc.SupplementalGroups...)
	if psc.FSGroup != nil {
		s.SupplementalGroups = append(s.SupplementalGroups, *psc.FSGroup)
	}
	s.ReadOnlyRootFilesystem = csc.ReadOnlyRootFilesystem != nil && *csc.ReadOnlyRootFilesystem
	s.Privileged = csc.Privileged != nil && *csc.Privileged
	s.NoNewPrivileges = csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation
	if caps := csc.Capabilities; caps != nil {
		for _, cp := range caps.Add {
			s.CapAdd = append(s.CapAdd, string(cp))
		}
		for _, cp := range caps.Drop {
			s.CapDrop = append(s.CapDrop, string(cp))
		}
	}
	sp := csc.SeccompProfile
	if sp == nil {
		sp = psc.SeccompProfile
	}
	if sp != nil {
		switch sp.Type {
		case corev1.SeccompProfileTypeUnconfined:
			s.SeccompUnconfined = true
		case corev1.SeccompProfileTypeLocalhost:
			return s, &configError{fmt.Sprintf("container %s: seccompProfile type Localhost is not supported on this node: use RuntimeDefault", c.Name)}
		}
	}
	return s, nil
}

// errImageUserUnsupported: the runtime is not an ImageUserReader.
var errImageUserUnsupported = errors.New("the container runtime cannot tell an image's user")

func firstInt(vs ...*int64) *int64 {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}

// runAsNonRoot reports whether the pod or the container asks that the
// container not run as root.
func runAsNonRoot(pod *corev1.Pod, c *corev1.Container) bool {
	if c.SecurityContext != nil && c.SecurityContext.RunAsNonRoot != nil {
		return *c.SecurityContext.RunAsNonRoot
	}
	return pod.Spec.SecurityContext != nil && pod.Spec.SecurityContext.RunAsNonRoot != nil && *pod.Spec.SecurityContext.RunAsNonRoot
}

// verifyNonRoot is the kubelet's check of runAsNonRoot, with its
// messages: the user the container will run as — runAsUser, else the
// image's — must be a number other than 0.
func verifyNonRoot(pod *corev1.Pod, c *corev1.Container, s runtimeapi.Security, imageUser string) error {
	who := fmt.Sprintf("(pod: %q, container: %s)", pod.Namespace+"/"+pod.Name, c.Name)
	if s.User != nil {
		if *s.User == 0 {
			return &configError{"container's runAsUser breaks non-root policy " + who}
		}
		return nil
	}
	uid, numeric := imageUID(imageUser)
	switch {
	case !numeric:
		return &configError{fmt.Sprintf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root %s", imageUser, who)}
	case uid == 0:
		return &configError{"container has runAsNonRoot and image will run as root " + who}
	}
	return nil
}

// imageUID is the uid of an image's User ("" is root); numeric is false
// for a user name, which only the container's /etc/passwd resolves.
func imageUID(user string) (uid int64, numeric bool) {
	u, _, _ := strings.Cut(user, ":")
	if u == "" {
		return 0, true
	}
	n, err := strconv.ParseInt(u, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// security is container c's Security, verified against its image where
// runAsNonRoot or a group without a user needs the image's user.
func (w *podWorker) security(ctx context.Context, pod *corev1.Pod, c *corev1.Container) (runtimeapi.Security, string, error) {
	s, err := securityFor(pod, c)
	if err != nil {
		return s, "CreateContainerConfigError", err
	}
	nonRoot := runAsNonRoot(pod, c)
	if !nonRoot && (s.User != nil || s.Group == nil) {
		return s, "", nil
	}
	imageUser, err := "", errImageUserUnsupported
	if ur, ok := w.a.rt.(runtimeapi.ImageUserReader); ok {
		imageUser, err = ur.ImageUser(ctx, c.Image)
	}
	if errors.Is(err, errImageUserUnsupported) {
		return s, "CreateContainerConfigError", &configError{fmt.Sprintf("container %s: this node's runtime cannot tell an image's user, so runAsNonRoot and runAsGroup without runAsUser cannot be honoured", c.Name)}
	}
	if err != nil {
		return s, "CreateContainerError", fmt.Errorf("container %s: read the user of image %s: %w", c.Name, c.Image, err)
	}
	if nonRoot {
		if err := verifyNonRoot(pod, c, s, imageUser); err != nil {
			return s, "CreateContainerConfigError", err
		}
	}
	if s.User == nil && s.Group != nil {
		// The runtime takes a user with the group: the image's, as a
		// number (a name cannot go with a numeric group in every runtime).
		uid, numeric := imageUID(imageUser)
		if !numeric {
			return s, "CreateContainerConfigError", &configError{fmt.Sprintf("container %s: runAsGroup needs runAsUser, since image %s runs as user %q by name", c.Name, c.Image, imageUser)}
		}
		s.User = &uid
	}
	return s, "", nil
}
