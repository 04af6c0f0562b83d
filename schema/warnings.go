package schema

import (
	"fmt"
	"strings"
	"sync"

	"cuelang.org/go/cue"
)

// unhonoured is a valid field that Flotilla accepts but does not act on
// yet. Such a field is a vet warning, never silently dropped.
type unhonoured struct {
	scope string // "pod" (a pod spec), "container", "volume" (one of a pod's), or a Kind (from the object's root)
	path  string // CUE path within the scope; "list[]." goes through every element of list
	why   string
}

var notHonouredOnce = sync.OnceValue(notHonoured)

// notHonoured is the one list of accepted-but-ignored fields: remove an
// entry when the part of Flotilla that honours it lands.
func notHonoured() []unhonoured {
	return append([]unhonoured{
		{"pod", "affinity", "the scheduler ignores affinity rules"},
		{"pod", "tolerations", "nodes have no taints; tolerations are ignored"},
		{"pod", "topologySpreadConstraints", "the scheduler does not spread by topology yet"},
		{"pod", "hostNetwork", "pods always get their own network namespace"},
		{"pod", "hostPID", "pods always get their own PID namespace"},
		{"pod", "hostIPC", "pods always get their own IPC namespace"},
		{"pod", "securityContext.seLinuxOptions", "SELinux labels are not applied"},
		{"pod", "securityContext.sysctls", "sysctls are not applied"},
		{"pod", "securityContext.windowsOptions", "this is a Linux node"},
		{"pod", "securityContext.appArmorProfile", "AppArmor profiles are not applied"},
		{"pod", "securityContext.seccompProfile.localhostProfile", "Localhost seccomp profiles are not supported: the pod does not start (use RuntimeDefault)"},
		{"pod", "priorityClassName", "there is no pod priority or preemption"},
		{"pod", "runtimeClassName", "every pod runs with the node's one runtime"},
		{"container", "securityContext.seLinuxOptions", "SELinux labels are not applied"},
		{"container", "securityContext.procMount", "the proc mount is always the default (masked) one"},
		{"container", "securityContext.windowsOptions", "this is a Linux node"},
		{"container", "securityContext.appArmorProfile", "AppArmor profiles are not applied"},
		{"container", "securityContext.seccompProfile.localhostProfile", "Localhost seccomp profiles are not supported: the container does not start (use RuntimeDefault)"},
		{"container", "lifecycle", "postStart and preStop hooks are not run yet"},
		{"container", "livenessProbe.grpc", "gRPC probes are not supported yet"},
		{"container", "readinessProbe.grpc", "gRPC probes are not supported yet"},
		{"container", "startupProbe.grpc", "gRPC probes are not supported yet"},
		{"StatefulSet", "spec.updateStrategy.rollingUpdate.maxUnavailable", "StatefulSet rolling updates replace one pod at a time"},
		{"Service", "spec.loadBalancerSourceRanges", "load balancer IPs are not filtered by source"},
		{"Service", "spec.externalTrafficPolicy", "external traffic is always spread over the cluster"},
		{"Service", "spec.internalTrafficPolicy", "internal traffic is always spread over the cluster"},
		{"StorageClass", "allowVolumeExpansion", "volumes are not expanded: a claim keeps the size it was bound with"},
		{"StorageClass", "mountOptions", "mount options are not applied"},
		{"StorageClass", "allowedTopologies", "local volumes are provisioned on the node the first pod using the claim is scheduled to"},
		{"StorageClass", "parameters", "the flotilla.dev/local-path provisioner takes no parameters"},
		{"PersistentVolume", "spec.mountOptions", "mount options are not applied"},
		{"PersistentVolumeClaim", "spec.dataSource", "volumes are not populated from a data source: they start empty"},
		{"PersistentVolumeClaim", "spec.dataSourceRef", "volumes are not populated from a data source: they start empty"},
	}, unmountableVolumes()...)
}

// unmountableVolumes are the volume types and parts the node agent cannot
// mount (volumes/): a pod that has one waits with
// CreateContainerConfigError.
func unmountableVolumes() []unhonoured {
	const why = "the node mounts only emptyDir, hostPath, configMap, secret, downwardAPI, projected and persistentVolumeClaim volumes: a pod with this one does not start"
	var out []unhonoured
	for _, t := range []string{"nfs", "iscsi", "glusterfs", "rbd", "cephfs", "csi", "ephemeral", "image", "gitRepo", "fc",
		"flexVolume", "cinder", "awsElasticBlockStore", "gcePersistentDisk", "azureDisk", "azureFile", "vsphereVolume",
		"portworxVolume", "quobyte", "scaleIO", "storageos", "flocker", "photonPersistentDisk"} {
		out = append(out, unhonoured{"volume", t, why})
	}
	return append(out,
		unhonoured{"volume", "downwardAPI.items[].resourceFieldRef", "resourceFieldRef is not supported in volumes yet: the pod does not start"},
		unhonoured{"volume", "projected.sources[].downwardAPI.items[].resourceFieldRef", "resourceFieldRef is not supported in volumes yet: the pod does not start"},
		unhonoured{"volume", "projected.sources[].serviceAccountToken", "there are no service account tokens: the pod does not start"},
		unhonoured{"volume", "projected.sources[].clusterTrustBundle", "cluster trust bundles are not supported: the pod does not start"},
		unhonoured{"container", "volumeMounts[].mountPropagation", "volume mounts are always private (no propagation)"},
	)
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
		for _, h := range lookupAll(base, u.path, prefix) {
			line, col := lineCol(h.v.Pos())
			ps = append(ps, Problem{File: file, Line: line, Column: col, Field: h.field, Warning: true,
				Reason: fmt.Sprintf("accepted but not honoured yet: %s", u.why)})
		}
	}
	podPath := podSpecPath(k)
	pod := data.LookupPath(cuePath(podPath))
	for _, u := range notHonouredOnce() {
		switch u.scope {
		case k.Kind:
			warn(data, "", u)
		case "pod":
			if podPath != "" && pod.Exists() {
				warn(pod, podPath, u)
			}
		case "volume":
			if podPath == "" || !pod.Exists() {
				continue
			}
			iter, err := pod.LookupPath(cuePath("volumes")).List()
			if err != nil {
				continue
			}
			for i := 0; iter.Next(); i++ {
				warn(iter.Value(), fmt.Sprintf("%s.volumes[%d]", podPath, i), u)
			}
		case "container":
			if podPath == "" || !pod.Exists() {
				continue
			}
			for _, list := range []string{"containers", "initContainers"} {
				iter, err := pod.LookupPath(cuePath(list)).List()
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

// found is a value lookupAll found, with its path written out.
type found struct {
	v     cue.Value
	field string
}

// lookupAll finds path below v; "list[]." in path goes through every
// element of list. prefix is v's own path ("" at the root).
func lookupAll(v cue.Value, path, prefix string) []found {
	join := func(p string) string {
		if prefix == "" {
			return p
		}
		return prefix + "." + p
	}
	list, rest, ok := strings.Cut(path, "[].")
	if !ok {
		x := v.LookupPath(cuePath(path))
		if !x.Exists() {
			return nil
		}
		return []found{{x, join(path)}}
	}
	iter, err := v.LookupPath(cuePath(list)).List()
	if err != nil {
		return nil
	}
	var out []found
	for i := 0; iter.Next(); i++ {
		out = append(out, lookupAll(iter.Value(), rest, fmt.Sprintf("%s[%d]", join(list), i))...)
	}
	return out
}
