package apiserver

import (
	"net"
	"net/http"
	"runtime"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"

	"github.com/flotilla-dev/flotilla/schema"
)

// KubernetesVersion is the Kubernetes API version whose subset Flotilla
// serves, as /version reports it.
const KubernetesVersion = "v1.32.0"

// Discovery answers in the legacy (unaggregated) form; client-go and kubectl
// fall back to it when the response is plain application/json.

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, version.Info{
		Major:      "1",
		Minor:      "32",
		GitVersion: KubernetesVersion + "+flotilla",
		Platform:   runtime.GOOS + "/" + runtime.GOARCH,
		GoVersion:  runtime.Version(),
		Compiler:   runtime.Compiler,
	})
}

func (s *Server) discoveryCore(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		s.writeError(w, r, methodNotAllowed(r.Method, r.URL.Path), target{})
		return
	}
	writeJSON(w, http.StatusOK, metav1.APIVersions{
		TypeMeta: metav1.TypeMeta{Kind: "APIVersions"},
		Versions: []string{"v1"},
		ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{
			{ClientCIDR: "0.0.0.0/0", ServerAddress: serverAddress(r)},
		},
	})
}

func serverAddress(r *http.Request) string {
	if host, port, err := net.SplitHostPort(r.Host); err == nil {
		return net.JoinHostPort(host, port)
	}
	return r.Host
}

// groupVersions lists the non-core group versions, in the order of
// schema.Kinds().
func groupVersions() []metav1.GroupVersionForDiscovery {
	var out []metav1.GroupVersionForDiscovery
	seen := map[string]bool{}
	for _, k := range schema.Kinds() {
		if k.Group == "" || seen[k.APIVersion()] {
			continue
		}
		seen[k.APIVersion()] = true
		out = append(out, metav1.GroupVersionForDiscovery{GroupVersion: k.APIVersion(), Version: k.Version})
	}
	out = append(out, metav1.GroupVersionForDiscovery{GroupVersion: eventsGroup + "/v1", Version: "v1"})
	return append(out, metricsGV) // not a kind of the store: resourcemetrics.go
}

func (s *Server) discoveryGroups(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		s.writeError(w, r, methodNotAllowed(r.Method, r.URL.Path), target{})
		return
	}
	list := metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
	for _, gv := range groupVersions() {
		group, _, _ := strings.Cut(gv.GroupVersion, "/")
		list.Groups = append(list.Groups, metav1.APIGroup{
			Name:             group,
			Versions:         []metav1.GroupVersionForDiscovery{gv},
			PreferredVersion: gv,
		})
	}
	writeJSON(w, http.StatusOK, list)
}

// discoveryGroup answers /apis/<group> with its one version.
func (s *Server) discoveryGroup(w http.ResponseWriter, r *http.Request, group string) {
	for _, gv := range groupVersions() {
		if strings.HasPrefix(gv.GroupVersion, group+"/") {
			writeJSON(w, http.StatusOK, metav1.APIGroup{
				TypeMeta:         metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"},
				Name:             group,
				Versions:         []metav1.GroupVersionForDiscovery{gv},
				PreferredVersion: gv,
			})
			return
		}
	}
	s.writeError(w, r, notFound("the server could not find the requested resource"), target{})
}

var (
	allVerbs    = metav1.Verbs{"create", "delete", "get", "list", "patch", "update", "watch"}
	statusVerbs = metav1.Verbs{"get", "patch", "update"}
)

// resourceList is the APIResourceList of one group version; ok is false if
// no kind is served there.
func resourceList(group, ver string) (metav1.APIResourceList, bool) {
	if group == eventsGroup && ver == "v1" {
		return eventsV1Resources(), true
	}
	gv := ver
	if group != "" {
		gv = group + "/" + ver
	}
	list := metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: gv,
	}
	for _, k := range schema.Kinds() {
		if k.Group != group || k.Version != ver {
			continue
		}
		list.APIResources = append(list.APIResources, metav1.APIResource{
			Name:         k.Resource,
			SingularName: strings.ToLower(k.Kind),
			Namespaced:   k.Namespaced,
			Kind:         k.Kind,
			Verbs:        allVerbs,
			ShortNames:   k.ShortNames,
			Categories:   categories(k),
		}, metav1.APIResource{
			Name:       k.Resource + "/status",
			Namespaced: k.Namespaced,
			Kind:       k.Kind,
			Verbs:      statusVerbs,
		})
		if k.Resource == "pods" {
			list.APIResources = append(list.APIResources, metav1.APIResource{
				Name: "pods/log", Namespaced: true, Kind: "Pod", Verbs: metav1.Verbs{"get"},
			})
		}
	}
	sort.SliceStable(list.APIResources, func(i, j int) bool {
		return list.APIResources[i].Name < list.APIResources[j].Name
	})
	return list, len(list.APIResources) > 0
}

// categories puts the workload kinds in "all", as Kubernetes does, so that
// `kubectl get all` works.
func categories(k schema.Kind) []string {
	switch k.Resource {
	case "pods", "services", "deployments", "replicasets", "statefulsets":
		return []string{"all"}
	}
	return nil
}
