package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/netfabric"
)

// servicesYAML is what TestLabServices commits: a web Deployment behind a
// ClusterIP, a NodePort, a LoadBalancer and a headless Service, an api
// Deployment, an ExternalName, an Ingress with two hosts and two paths
// each, and one client pod pinned to every node.
const servicesYAML = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: localhost/busybox:latest
          imagePullPolicy: IfNotPresent
          command: ["/bin/sh", "-c", "trap 'exit 0' TERM; mkdir -p /www; hostname > /www/index.html; cp /www/index.html /www/web; touch /tmp/ready; httpd -f -p 8080 -h /www & wait"]
          ports:
            - {name: http, containerPort: 8080}
          readinessProbe:
            exec:
              command: ["test", "-f", "/tmp/ready"]
            periodSeconds: 1
            failureThreshold: 1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  replicas: 1
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
        - name: api
          image: localhost/busybox:latest
          imagePullPolicy: IfNotPresent
          command: ["/bin/sh", "-c", "trap 'exit 0' TERM; mkdir -p /www; hostname > /www/index.html; cp /www/index.html /www/api; httpd -f -p 8080 -h /www & wait"]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: http}
---
apiVersion: v1
kind: Service
metadata:
  name: web-np
spec:
  type: NodePort
  selector: {app: web}
  ports:
    - {port: 80, targetPort: 8080, nodePort: 30080}
---
apiVersion: v1
kind: Service
metadata:
  name: web-lb
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
    - {port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web-headless
spec:
  clusterIP: None
  selector: {app: web}
  ports:
    - {name: http, port: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: api
spec:
  selector: {app: api}
  ports:
    - {port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  type: ExternalName
  externalName: db.example.org
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: two-hosts
spec:
  rules:
    - host: a.test
      http:
        paths:
          - {path: /web, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
          - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
    - host: b.test
      http:
        paths:
          - {path: /web, pathType: Exact, backend: {service: {name: web, port: {name: http}}}}
          - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
`

// clientPod is a pod pinned to a node that the test runs wget in.
func clientPod(node string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata:
  name: client-%[1]s
  labels: {app: client}
spec:
  nodeName: %[1]s
  containers:
    - name: sh
      image: localhost/busybox:latest
      imagePullPolicy: IfNotPresent
      command: ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 36000 & wait"]
`, node)
}

// TestLabServices is issue 4's acceptance through the real binary on a
// 3-node lab: Services by name and VIP from a pod on every node, readiness
// taking a pod out of rotation and back, NodePort and LoadBalancer from a
// machine outside the cluster (the lab's client namespace), the load
// balancer address moving when its node dies, ExternalName and headless
// DNS answers, and an Ingress routing two hosts and two paths (and 503 for
// a service that does not exist, from the conformance example).
func TestLabServices(t *testing.T) {
	l := newLab(t, 3)
	fanout, err := os.ReadFile(filepath.Join("..", "..", "netfabric", "ingress", "testdata", "simple-fanout-ingress.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	l.commit("fanout.yaml", string(fanout), "the conformance fan-out ingress (its services do not exist)")
	l.commit("services.yaml", servicesYAML+clientPod("node1")+clientPod("node2")+clientPod("node3"), "services")

	var web, api []*corev1.Pod
	l.eventually("3 web, 1 api and 3 client pods Running and Ready", 3*time.Minute, func() error {
		web, api = nil, nil
		clients := 0
		for _, p := range l.pods() {
			if p.Status.Phase != corev1.PodRunning || !podIsReady(p) {
				continue
			}
			switch p.Labels["app"] {
			case "web":
				web = append(web, p)
			case "api":
				api = append(api, p)
			case "client":
				clients++
			}
		}
		if len(web) != 3 || len(api) != 1 || clients != 3 {
			return fmt.Errorf("%d web, %d api, %d clients", len(web), len(api), clients)
		}
		return nil
	})
	webNames := podNames(web)

	// By name and by full name, through the VIP, from a pod on every node:
	// every replica answers.
	for _, node := range []string{"node1", "node2", "node3"} {
		l.eventually("every web replica answers http://web/ and http://web.default.svc.cluster.local/ from "+node, 2*time.Minute, func() error {
			out, err := l.execInPod("client-"+node,
				"for i in $(seq 15); do timeout 5 wget -qO- http://web/; timeout 5 wget -qO- http://web.default.svc.cluster.local:80/; done")
			if got := answers(out); !slices.Equal(got, webNames) {
				return fmt.Errorf("answers %v (want %v); %v: %s", got, webNames, err, out)
			}
			return nil
		})
	}

	// A replica failing readiness leaves the rotation, and comes back.
	w := web[0]
	ctr := l.containerOf(w, "web")
	l.podman(w.Spec.NodeName, "exec", ctr, "rm", "/tmp/ready")
	l.eventually(w.Name+" out of rotation", time.Minute, func() error {
		out, err := l.execInPod("client-node1", "for i in $(seq 20); do timeout 5 wget -qO- http://web/; done")
		if got := answers(out); len(got) != 2 || slices.Contains(got, w.Name) {
			return fmt.Errorf("answers %v; %v", got, err)
		}
		return nil
	})
	l.podman(w.Spec.NodeName, "exec", ctr, "touch", "/tmp/ready")
	l.eventually(w.Name+" back in rotation", time.Minute, func() error {
		out, err := l.execInPod("client-node1", "for i in $(seq 20); do timeout 5 wget -qO- http://web/; done")
		if got := answers(out); !slices.Equal(got, webNames) {
			return fmt.Errorf("answers %v; %v", got, err)
		}
		return nil
	})

	// DNS as Kubernetes answers it: headless → the ready pods' addresses,
	// ExternalName → a CNAME, a named port → SRV.
	clientNS := podNetNS(t, l.node("node2"), l.pod("client-node2"))
	dnsServer := l.clusterDNS("node2")
	var webIPs []string
	for _, p := range web {
		webIPs = append(webIPs, p.Status.PodIP)
	}
	sort.Strings(webIPs)
	l.eventually("headless, ExternalName and SRV answers", time.Minute, func() error {
		a, err := dnsQuery(clientNS, dnsServer, "web-headless.default.svc.cluster.local.", mdns.TypeA)
		if err != nil {
			return err
		}
		var ips []string
		for _, rr := range a.Answer {
			if r, ok := rr.(*mdns.A); ok {
				ips = append(ips, r.A.String())
			}
		}
		sort.Strings(ips)
		if !slices.Equal(ips, webIPs) {
			return fmt.Errorf("headless A = %v, want %v", ips, webIPs)
		}
		c, err := dnsQuery(clientNS, dnsServer, "db.default.svc.cluster.local.", mdns.TypeCNAME)
		if err != nil {
			return err
		}
		if len(c.Answer) != 1 || c.Answer[0].(*mdns.CNAME).Target != "db.example.org." {
			return fmt.Errorf("ExternalName answer %v", c.Answer)
		}
		srv, err := dnsQuery(clientNS, dnsServer, "_http._tcp.web.default.svc.cluster.local.", mdns.TypeSRV)
		if err != nil {
			return err
		}
		if len(srv.Answer) != 1 || srv.Answer[0].(*mdns.SRV).Port != 80 || srv.Answer[0].(*mdns.SRV).Target != "web.default.svc.cluster.local." {
			return fmt.Errorf("SRV answer %v", srv.Answer)
		}
		nx, err := dnsQuery(clientNS, dnsServer, "nope.default.svc.cluster.local.", mdns.TypeA)
		if err != nil {
			return err
		}
		if nx.Rcode != mdns.RcodeNameError {
			return fmt.Errorf("a missing service answers %s, want NXDOMAIN", mdns.RcodeToString[nx.Rcode])
		}
		return nil
	})

	// NodePort, from outside the cluster, on every node's address.
	for _, node := range []string{"node1", "node2", "node3"} {
		url := "http://" + l.node(node).IP + ":30080/"
		l.eventually("NodePort "+url+" from the client namespace", time.Minute, func() error {
			out, err := l.clientWget(url)
			if err != nil || !slices.Contains(webNames, strings.TrimSpace(out)) {
				return fmt.Errorf("%q, %v", out, err)
			}
			return nil
		})
	}

	// The Ingress: two hosts, two paths each, on any node's port 80.
	node1 := l.node("node1").IP
	for _, c := range []struct{ host, path, want string }{
		{"a.test", "/web", "web"}, {"a.test", "/api", "api"},
		{"b.test", "/web", "web"}, {"b.test", "/", "api"},
	} {
		l.eventually("ingress "+c.host+c.path, time.Minute, func() error {
			out, err := l.clientWget("http://"+node1+c.path, "--header", "Host: "+c.host)
			got := strings.TrimSpace(out)
			if err != nil || !strings.HasPrefix(got, c.want+"-") {
				return fmt.Errorf("%q, %v; want a %s pod", got, err, c.want)
			}
			return nil
		})
	}
	out, err := l.clientWget("http://"+node1+"/foo", "--header", "Host: foo.bar.com")
	if err == nil || !strings.Contains(out, "503") {
		t.Errorf("ingress to a missing service: %q, %v; want 503", out, err)
	}

	// The LoadBalancer address answers from outside; its node dies, another
	// node takes it over and it answers again.
	var lbIP string
	l.eventually("web-lb has an address", time.Minute, func() error {
		obj, err := l.client.Get(context.Background(), "services", "default", "web-lb")
		if err != nil {
			return err
		}
		if ing := obj.(*corev1.Service).Status.LoadBalancer.Ingress; len(ing) == 1 {
			lbIP = ing[0].IP
			return nil
		}
		return fmt.Errorf("no load balancer ingress yet")
	})
	l.eventually("the LoadBalancer address answers", time.Minute, func() error {
		out, err := l.clientWget("http://" + lbIP + "/")
		if err != nil || !slices.Contains(webNames, strings.TrimSpace(out)) {
			return fmt.Errorf("%q, %v", out, err)
		}
		return nil
	})
	holders := l.lbHolders(lbIP)
	if len(holders) != 1 {
		t.Fatalf("%s is held by %v, want one node", lbIP, holders)
	}
	holder := holders[0]
	t.Logf("%s holds %s; killing it", holder, lbIP)
	l.lab("kill", holder)
	l.eventually("the LoadBalancer address moved and answers again", 2*time.Minute, func() error {
		// The dead node's namespace keeps its address, unplugged.
		if h := slices.DeleteFunc(l.lbHolders(lbIP), func(n string) bool { return n == holder }); len(h) != 1 {
			return fmt.Errorf("held by %v besides %s", h, holder)
		}
		for range 5 {
			out, err := l.clientWget("http://" + lbIP + "/")
			if err != nil || strings.TrimSpace(out) == "" {
				return fmt.Errorf("%q, %v", out, err)
			}
		}
		return nil
	})
}

func podIsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podNames(pods []*corev1.Pod) []string {
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return names
}

// answers are the distinct non-empty lines of out, sorted.
func answers(out string) []string {
	seen := map[string]bool{}
	var got []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !seen[line] && !strings.Contains(line, " ") {
			seen[line] = true
			got = append(got, line)
		}
	}
	sort.Strings(got)
	return got
}

func (l *labCluster) pod(name string) *corev1.Pod {
	l.t.Helper()
	obj, err := l.client.Get(context.Background(), "pods", "default", name)
	if err != nil {
		l.t.Fatal(err)
	}
	return obj.(*corev1.Pod)
}

// containerOf is the Podman ID of a pod's container.
func (l *labCluster) containerOf(p *corev1.Pod, container string) string {
	l.t.Helper()
	ids := strings.Fields(l.podman(p.Spec.NodeName, "ps", "--filter", "label=flotilla.dev/pod-uid="+string(p.UID),
		"--filter", "label=flotilla.dev/container="+container, "--format", "{{.ID}}"))
	if len(ids) != 1 {
		l.t.Fatalf("pod %s: containers %v", p.Name, ids)
	}
	return ids[0]
}

// execInPod runs a shell script in a pod's first container, through its
// node's Podman; the output is returned even when the script fails.
func (l *labCluster) execInPod(pod, script string) (string, error) {
	l.t.Helper()
	p := l.tryPod(pod)
	if p == nil {
		return "", fmt.Errorf("no pod %s", pod)
	}
	return l.execInContainer(p, p.Spec.Containers[0].Name, script)
}

// clientWget fetches url with the host's busybox from the lab's client
// namespace: a machine on the node network that is no node.
func (l *labCluster) clientWget(url string, args ...string) (string, error) {
	argv := append([]string{"lab", "exec", "client", "--dir", l.dir, "--", "timeout", "5", "busybox", "wget", "-qO-"}, args...)
	out, err := exec.Command(flotillaBin, append(argv, url)...).CombinedOutput()
	return string(out), err
}

// clusterDNS is the node's cluster DNS address: its pod bridge's, the
// first address of its pod CIDR.
func (l *labCluster) clusterDNS(node string) string {
	l.t.Helper()
	obj, err := l.client.Get(context.Background(), "nodes", "", node)
	if err != nil {
		l.t.Fatal(err)
	}
	ip, _, err := net.ParseCIDR(obj.(*corev1.Node).Spec.PodCIDR)
	if err != nil {
		l.t.Fatal(err)
	}
	ip = ip.To4()
	ip[3]++
	return net.JoinHostPort(ip.String(), "53")
}

// lbHolders are the nodes whose eth0 carries ip.
func (l *labCluster) lbHolders(ip string) []string {
	var nodes []string
	for _, node := range []string{"node1", "node2", "node3"} {
		out, _ := exec.Command("ip", "-n", l.labNetNS(node), "-4", "addr", "show", "dev", "eth0").Output()
		if strings.Contains(string(out), " "+ip+"/32 ") {
			nodes = append(nodes, node)
		}
	}
	return nodes
}

func (l *labCluster) labNetNS(node string) string {
	return strings.TrimSuffix(l.node(node).NetNSPrefix, "-")
}

// dnsQuery asks server a question from inside the network namespace at
// path, as a pod would.
func dnsQuery(path, server, name string, qtype uint16) (*mdns.Msg, error) {
	var m *mdns.Msg
	err := netfabric.InNetNS(path, func() error {
		c := &mdns.Client{Timeout: 3 * time.Second}
		q := new(mdns.Msg)
		q.SetQuestion(name, qtype)
		var err error
		m, _, err = c.Exchange(q, server)
		return err
	})
	return m, err
}
