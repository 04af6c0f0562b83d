package schema

import (
	"fmt"

	"cuelang.org/go/cue"
)

// unhonoured is a valid field that Flotilla accepts but does not act on
// yet. Such a field is a vet warning, never silently dropped.
type unhonoured struct {
	scope string // "pod" (a pod spec), "container", or a Kind (from the object's root)
	path  string // CUE path within the scope
	why   string
}

// notHonoured is the one list of accepted-but-ignored fields: remove an
// entry when the part of Flotilla that honours it lands.
func notHonoured() []unhonoured {
	return []unhonoured{
		{"pod", "affinity", "the scheduler ignores affinity rules"},
		{"pod", "tolerations", "nodes have no taints; tolerations are ignored"},
		{"pod", "topologySpreadConstraints", "the scheduler does not spread by topology yet"},
		{"pod", "hostNetwork", "pods always get their own network namespace"},
		{"pod", "hostPID", "pods always get their own PID namespace"},
		{"pod", "hostIPC", "pods always get their own IPC namespace"},
		{"pod", "securityContext", "pod security contexts are not applied yet"},
		{"pod", "initContainers", "init containers are not run yet"},
		{"pod", "priorityClassName", "there is no pod priority or preemption"},
		{"pod", "runtimeClassName", "every pod runs with the node's one runtime"},
		{"container", "securityContext", "container security contexts are not applied yet"},
		{"container", "lifecycle", "postStart and preStop hooks are not run yet"},
		{"container", "livenessProbe.grpc", "gRPC probes are not supported yet"},
		{"container", "readinessProbe.grpc", "gRPC probes are not supported yet"},
		{"container", "startupProbe.grpc", "gRPC probes are not supported yet"},
		{"Service", "spec.loadBalancerSourceRanges", "load balancer IPs are not filtered by source"},
		{"Service", "spec.externalTrafficPolicy", "external traffic is always spread over the cluster"},
		{"Service", "spec.internalTrafficPolicy", "internal traffic is always spread over the cluster"},
	}
}

// podSpecPath is where a kind keeps its pod spec, "" when it has none.
func podSpecPath(k Kind) string {
	switch k.Kind {
	case "Pod":
		return "spec"
	case "Deployment", "ReplicaSet", "StatefulSet":
		return "spec.template.spec"
	}
	return ""
}

// notHonouredWarnings finds the fields of notHonoured in one valid-looking
// document.
func notHonouredWarnings(file string, k Kind, data cue.Value) Problems {
	var ps Problems
	warn := func(base cue.Value, prefix string, u unhonoured) {
		x := base.LookupPath(cue.ParsePath(u.path))
		if !x.Exists() {
			return
		}
		line, col := lineCol(x.Pos())
		field := u.path
		if prefix != "" {
			field = prefix + "." + u.path
		}
		ps = append(ps, Problem{File: file, Line: line, Column: col, Field: field, Warning: true,
			Reason: fmt.Sprintf("accepted but not honoured yet: %s", u.why)})
	}
	podPath := podSpecPath(k)
	pod := data.LookupPath(cue.ParsePath(podPath))
	for _, u := range notHonoured() {
		switch u.scope {
		case k.Kind:
			warn(data, "", u)
		case "pod":
			if podPath != "" && pod.Exists() {
				warn(pod, podPath, u)
			}
		case "container":
			if podPath == "" || !pod.Exists() {
				continue
			}
			for _, list := range []string{"containers", "initContainers"} {
				iter, err := pod.LookupPath(cue.ParsePath(list)).List()
				if err != nil {
					continue
				}
				for i := 0; iter.Next(); i++ {
					warn(iter.Value(), fmt.Sprintf("%s.%s[%d]", podPath, list, i), u)
				}
			}
		}
	}
	return ps
}
