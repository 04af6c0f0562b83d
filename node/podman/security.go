package podman

import (
	"strconv"
	"strings"

	"github.com/containers/podman/v4/pkg/specgen"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// applySecurity sets a container's security context on its spec. With no
// seccomp setting the Podman service applies its default profile: every
// container runs under RuntimeDefault unless the pod asks for Unconfined
// (which Pod Security's baseline level refuses).
func applySecurity(sg *specgen.SpecGenerator, s runtimeapi.Security) {
	switch {
	case s.User != nil && s.Group != nil:
		sg.User = strconv.FormatInt(*s.User, 10) + ":" + strconv.FormatInt(*s.Group, 10)
	case s.User != nil:
		sg.User = strconv.FormatInt(*s.User, 10)
	}
	for _, g := range s.SupplementalGroups {
		sg.Groups = append(sg.Groups, strconv.FormatInt(g, 10))
	}
	sg.ReadOnlyFilesystem = s.ReadOnlyRootFilesystem
	sg.Privileged = s.Privileged
	sg.NoNewPrivileges = s.NoNewPrivileges
	sg.CapAdd = capNames(s.CapAdd)
	sg.CapDrop = capNames(s.CapDrop)
	if s.SeccompUnconfined {
		sg.SeccompProfilePath = "unconfined"
	}
}

// capNames are Kubernetes' capability names ("NET_ADMIN") as Podman's
// ("CAP_NET_ADMIN"); "ALL" stays.
func capNames(caps []string) []string {
	out := make([]string, 0, len(caps))
	for _, c := range caps {
		c = strings.ToUpper(c)
		if c != "ALL" && !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		out = append(out, c)
	}
	return out
}
