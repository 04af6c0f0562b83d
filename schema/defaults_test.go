package schema

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"sigs.k8s.io/yaml"
)

// The expected objects are what `kubectl get -o yaml` shows on a
// Kubernetes v1.32+ cluster for the same manifest (server-set metadata,
// status and cluster-specific allocations aside).
var defaultCases = []struct {
	name, in, want string
}{
	{"pod", `
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: web
    image: localhost/busybox:latest
    ports: [{containerPort: 8080}]
    resources: {limits: {memory: 64Mi}}
    env:
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    livenessProbe:
      httpGet: {port: 8080}
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 5
  - name: side
    image: registry.example:5000/tools/side:1.2
  - name: pinned
    image: busybox@sha256:2e3f1d3c1b6e3c0e4a2b1f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c
  - name: untagged
    image: busybox
  volumes:
  - name: scratch
  - name: config
    configMap: {name: settings}
  - name: creds
    secret: {secretName: creds}
  - name: host
    hostPath: {path: /srv}
`, `
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: web
    image: localhost/busybox:latest
    imagePullPolicy: Always
    ports: [{containerPort: 8080, protocol: TCP}]
    resources: {limits: {memory: 64Mi}, requests: {memory: 64Mi}}
    env:
    - name: NODE
      valueFrom: {fieldRef: {apiVersion: v1, fieldPath: spec.nodeName}}
    livenessProbe:
      httpGet: {path: /, port: 8080, scheme: HTTP}
      timeoutSeconds: 1
      periodSeconds: 10
      successThreshold: 1
      failureThreshold: 3
    readinessProbe:
      tcpSocket: {port: 8080}
      timeoutSeconds: 1
      periodSeconds: 5
      successThreshold: 1
      failureThreshold: 3
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
  - name: side
    image: registry.example:5000/tools/side:1.2
    imagePullPolicy: IfNotPresent
    resources: {}
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
  - name: pinned
    image: busybox@sha256:2e3f1d3c1b6e3c0e4a2b1f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c
    imagePullPolicy: IfNotPresent
    resources: {}
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
  - name: untagged
    image: busybox
    imagePullPolicy: Always
    resources: {}
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
  dnsPolicy: ClusterFirst
  enableServiceLinks: true
  restartPolicy: Always
  schedulerName: default-scheduler
  securityContext: {}
  terminationGracePeriodSeconds: 30
  volumes:
  - name: scratch
    emptyDir: {}
  - name: config
    configMap: {name: settings, defaultMode: 420}
  - name: creds
    secret: {secretName: creds, defaultMode: 420}
  - name: host
    hostPath: {path: /srv, type: ""}
status: {}
`},
	{"deployment", `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "nginx:1.27", resources: {limits: {cpu: "1"}}}]
`, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  revisionHistoryLimit: 10
  progressDeadlineSeconds: 600
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 25%}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: "nginx:1.27"
        imagePullPolicy: IfNotPresent
        resources: {limits: {cpu: "1"}}
        terminationMessagePath: /dev/termination-log
        terminationMessagePolicy: File
      dnsPolicy: ClusterFirst
      restartPolicy: Always
      schedulerName: default-scheduler
      securityContext: {}
      terminationGracePeriodSeconds: 30
status: {}
`},
	{"deployment recreate keeps no rolling update", `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  strategy: {type: Recreate}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1.27", imagePullPolicy: Never}]}
`, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  revisionHistoryLimit: 10
  progressDeadlineSeconds: 600
  strategy: {type: Recreate}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "nginx:1.27", imagePullPolicy: Never, resources: {}, terminationMessagePath: /dev/termination-log, terminationMessagePolicy: File}
      dnsPolicy: ClusterFirst
      restartPolicy: Always
      schedulerName: default-scheduler
      securityContext: {}
      terminationGracePeriodSeconds: 30
status: {}
`},
	{"replicaset", `
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
`, `
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "nginx:1.27", imagePullPolicy: IfNotPresent, resources: {}, terminationMessagePath: /dev/termination-log, terminationMessagePolicy: File}
      dnsPolicy: ClusterFirst
      restartPolicy: Always
      schedulerName: default-scheduler
      securityContext: {}
      terminationGracePeriodSeconds: 30
status: {replicas: 0}
`},
	{"statefulset", `
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: "postgres:17"}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
`, `
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 1
  revisionHistoryLimit: 10
  serviceName: db
  podManagementPolicy: OrderedReady
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {partition: 0}
  persistentVolumeClaimRetentionPolicy: {whenDeleted: Retain, whenScaled: Retain}
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - {name: db, image: "postgres:17", imagePullPolicy: IfNotPresent, resources: {}, terminationMessagePath: /dev/termination-log, terminationMessagePolicy: File}
      dnsPolicy: ClusterFirst
      restartPolicy: Always
      schedulerName: default-scheduler
      securityContext: {}
      terminationGracePeriodSeconds: 30
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, volumeMode: Filesystem}
    status: {}
status: {replicas: 0, availableReplicas: 0}
`},
	{"statefulset on delete", `
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  updateStrategy: {type: OnDelete}
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: "postgres:17"}], restartPolicy: Always, dnsPolicy: Default}
`, `
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 1
  revisionHistoryLimit: 10
  serviceName: db
  podManagementPolicy: Parallel
  updateStrategy: {type: OnDelete}
  persistentVolumeClaimRetentionPolicy: {whenDeleted: Retain, whenScaled: Retain}
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - {name: db, image: "postgres:17", imagePullPolicy: IfNotPresent, resources: {}, terminationMessagePath: /dev/termination-log, terminationMessagePolicy: File}
      dnsPolicy: Default
      restartPolicy: Always
      schedulerName: default-scheduler
      securityContext: {}
      terminationGracePeriodSeconds: 30
status: {replicas: 0, availableReplicas: 0}
`},
	{"service", `
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 8080}, {name: dns, port: 53, protocol: UDP, targetPort: dns}]
`, `
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: ClusterIP
  selector: {app: web}
  ports:
  - {port: 8080, protocol: TCP, targetPort: 8080}
  - {name: dns, port: 53, protocol: UDP, targetPort: dns}
  sessionAffinity: None
  internalTrafficPolicy: Cluster
  ipFamilyPolicy: SingleStack
status: {loadBalancer: {}}
`},
	{"service with a literal address", `
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}
`, `
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: ClusterIP
  clusterIP: 10.96.0.10
  ports: [{port: 80, protocol: TCP, targetPort: 80}]
  sessionAffinity: None
  internalTrafficPolicy: Cluster
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv4]
status: {loadBalancer: {}}
`},
	{"service load balancer with client affinity", `
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: LoadBalancer, sessionAffinity: ClientIP, ports: [{port: 80, targetPort: 0}]}
status: {loadBalancer: {ingress: [{ip: 192.168.1.240}]}}
`, `
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  ports: [{port: 80, protocol: TCP, targetPort: 80}]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 10800}}
  externalTrafficPolicy: Cluster
  internalTrafficPolicy: Cluster
  allocateLoadBalancerNodePorts: true
  ipFamilyPolicy: SingleStack
status: {loadBalancer: {ingress: [{ip: 192.168.1.240, ipMode: VIP}]}}
`},
	{"service external name", `
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {type: ExternalName, externalName: db.example.com}
`, `
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {type: ExternalName, externalName: db.example.com, sessionAffinity: None}
status: {loadBalancer: {}}
`},
	{"claim", `
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
`, `
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, volumeMode: Filesystem}
status: {phase: Pending}
`},
	{"volume", `
apiVersion: v1
kind: PersistentVolume
metadata: {name: local-1}
spec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], hostPath: {path: /mnt/data}}
`, `
apiVersion: v1
kind: PersistentVolume
metadata: {name: local-1}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: /mnt/data, type: ""}
  persistentVolumeReclaimPolicy: Retain
  volumeMode: Filesystem
status: {phase: Pending}
`},
	{"secret", `
apiVersion: v1
kind: Secret
metadata: {name: creds}
data: {password: aHVudGVyMg==}
`, `
apiVersion: v1
kind: Secret
metadata: {name: creds}
type: Opaque
data: {password: aHVudGVyMg==}
`},
	{"namespace", `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
`, `
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {kubernetes.io/metadata.name: shop}}
spec: {}
status: {phase: Active}
`},
	{"storage class", `
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: manual}
provisioner: kubernetes.io/no-provisioner
`, `
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: manual}
provisioner: kubernetes.io/no-provisioner
reclaimPolicy: Delete
volumeBindingMode: Immediate
`},
	{"role binding", `
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: "shop:readers", namespace: shop}
roleRef: {kind: Role, name: reader}
subjects:
- {kind: User, name: alice}
- {kind: Group, name: "system:authenticated"}
- {kind: ServiceAccount, name: ci}
- {kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}
`, `
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: "shop:readers", namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects:
- {kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}
- {kind: Group, name: "system:authenticated", apiGroup: rbac.authorization.k8s.io}
- {kind: ServiceAccount, name: ci}
- {kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}
`},
	{"cluster role binding", `
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "flotilla:viewers"}
roleRef: {kind: ClusterRole, name: view}
subjects:
- {kind: Group, name: viewers}
- {kind: ServiceAccount, name: ci, namespace: shop}
`, `
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "flotilla:viewers"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects:
- {kind: Group, name: viewers, apiGroup: rbac.authorization.k8s.io}
- {kind: ServiceAccount, name: ci, namespace: shop}
`},
	{"role has nothing to default", `
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: shop}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
`, `
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: shop}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
`},
	{"endpoint slice", `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc}
addressType: IPv4
endpoints: [{addresses: [10.244.0.5]}]
ports: [{port: 8080}]
`, `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc}
addressType: IPv4
endpoints: [{addresses: [10.244.0.5]}]
ports: [{name: "", port: 8080, protocol: TCP}]
`},
	{"endpoints", `
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 10.244.0.5}], ports: [{port: 8080}]}]
`, `
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 10.244.0.5}], ports: [{port: 8080, protocol: TCP}]}]
`},
	{"node", `
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {capacity: {cpu: "2", memory: 4Gi}}
`, `
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {}
status: {capacity: {cpu: "2", memory: 4Gi}, allocatable: {cpu: "2", memory: 4Gi}, daemonEndpoints: {kubeletEndpoint: {Port: 0}}, nodeInfo: {architecture: "", bootID: "", containerRuntimeVersion: "", kernelVersion: "", kubeProxyVersion: "", kubeletVersion: "", machineID: "", operatingSystem: "", osImage: "", systemUUID: ""}}
`},
	{"config map has nothing to default", `
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: b}
`, `
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: b}
`},
}

func decodeYAML(t *testing.T, in string) Object {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(strings.TrimSpace(in)))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := DecodeAny(js)
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// canonical is an object's JSON as a generic value, without the empty
// creationTimestamp every encoded object carries.
func canonical(t *testing.T, obj Object) any {
	t.Helper()
	data, err := Encode(obj)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	stripNulls(v)
	return v
}

func stripNulls(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if e == nil {
				delete(v, k)
				continue
			}
			stripNulls(e)
		}
	case []any:
		for _, e := range v {
			stripNulls(e)
		}
	}
}

func TestSetDefaults(t *testing.T) {
	for _, c := range defaultCases {
		t.Run(c.name, func(t *testing.T) {
			obj := decodeYAML(t, c.in)
			SetDefaults(obj)
			got, want := canonical(t, obj), canonical(t, decodeYAML(t, c.want))
			if !reflect.DeepEqual(got, want) {
				g, _ := yaml.Marshal(got)
				w, _ := yaml.Marshal(want)
				t.Fatalf("defaulted:\n%s\nwant:\n%s", g, w)
			}
			again := Copy(obj)
			SetDefaults(again)
			if !reflect.DeepEqual(canonical(t, again), got) {
				t.Fatal("defaulting twice changed the object")
			}
		})
	}
}

// TestImageTag reads tags as Kubernetes' imagePullPolicy default does.
func TestImageTag(t *testing.T) {
	for image, want := range map[string]string{
		"busybox":                       "latest",
		"busybox:latest":                "latest",
		"localhost/busybox:latest":      "latest",
		"localhost:5000/busybox":        "latest",
		"localhost:5000/busybox:1.36":   "1.36",
		"busybox@sha256:abc":            "",
		"busybox:1.36@sha256:abc":       "1.36",
		"registry.example/a/b/c:v2-rc1": "v2-rc1",
	} {
		if got := imageTag(image); got != want {
			t.Errorf("imageTag(%q) = %q, want %q", image, got, want)
		}
	}
}

// TestDefaultsStayValid: every good manifest, defaulted, still passes the
// CUE schema, so that the API (which validates after defaults) refuses
// exactly what a commit (validated before them) refuses.
func TestDefaultsStayValid(t *testing.T) {
	v := validator(t)
	ms, ps := v.LoadDir("testdata/good")
	if ps.Err() != nil {
		t.Fatal(ps.Err())
	}
	fsys := fstest.MapFS{}
	for i, m := range ms {
		obj := Copy(m.Object)
		SetDefaults(obj)
		fsys[fmt.Sprintf("%03d-%s.json", i, obj.GetName())] = &fstest.MapFile{Data: manifestJSON(t, obj)}
	}
	for _, c := range defaultCases {
		obj := decodeYAML(t, c.in)
		k, _ := KindOf(obj)
		if !k.FromGit {
			continue
		}
		SetDefaults(obj)
		if k.Namespaced {
			obj.SetNamespace("case-" + strings.ReplaceAll(c.name, " ", "-"))
		} else {
			obj.SetName(obj.GetName() + "-case")
			SetDefaults(obj) // the namespace's name label follows
		}
		fsys["case-"+strings.ReplaceAll(c.name, " ", "-")+".json"] = &fstest.MapFile{Data: manifestJSON(t, obj)}
	}
	if _, ps := v.Load(fsys); ps.Err() != nil {
		t.Fatalf("defaulted objects are refused:\n%v", ps.Err())
	}
}

// manifestJSON is obj's JSON without nulls, as ValidateObject judges it:
// Go writes a nil list whose field has no omitempty (a Role's rules) as
// null, which the API reads as absent.
func manifestJSON(t *testing.T, obj Object) []byte {
	t.Helper()
	data, err := json.Marshal(canonical(t, obj))
	if err != nil {
		t.Fatal(err)
	}
	return data
}
