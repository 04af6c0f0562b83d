package schema

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// TestRBACValidation: the RBAC kinds are judged as Kubernetes judges them,
// by Load (a commit) and ValidateObject (an API request) alike. The bad
// catalogue (testdata/bad) has one file per typical mistake; these are the
// edges.
func TestRBACValidation(t *testing.T) {
	const (
		role    = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n"
		cRole   = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
		binding = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: b}\n"
		cBind   = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: b}\n"
		ref     = "roleRef: {kind: ClusterRole, name: view}\n"
		rule    = "rules: [{apiGroups: [\"\"], resources: [pods], verbs: [get]}]\n"
	)
	for _, tc := range []struct {
		name, doc string
		want      []string // "field: reason prefix", sorted; none for a valid object
	}{
		{"names are path segments", role + "metadata: {name: \"system:controller:web\"}\n" + rule, nil},
		{"dots that are not . or ..", role + "metadata: {name: \"...\"}\n", nil},
		{"name .", role + "metadata: {name: .}\n", []string{`metadata.name: invalid value "." (out of bound a path segment name`}},
		{"name ..", cRole + "metadata: {name: ..}\n", []string{`metadata.name: invalid value ".." (out of bound a path segment name`}},
		{"name with %", role + "metadata: {name: \"100%\"}\n", []string{`metadata.name: invalid value "100%" (out of bound a path segment name`}},
		{"no name", role + "metadata: {namespace: shop}\n", []string{"metadata.name: field is required but not present"}},
		{"a role without rules", role + "metadata: {name: r}\n", nil},
		{"empty verbs", role + "metadata: {name: r}\nrules: [{apiGroups: [\"\"], resources: [pods], verbs: []}]\n",
			[]string{"rules[0].verbs: a rule needs at least one verb"}},
		{"a rule with verbs only", cRole + "metadata: {name: r}\nrules: [{verbs: [get]}]\n",
			[]string{"rules[0].apiGroups: a resource rule needs at least one API group", "rules[0].resources: a resource rule needs at least one resource"}},
		{"resource names and URLs", cRole + "metadata: {name: r}\nrules: [{resourceNames: [x], nonResourceURLs: [/x], verbs: [get]}]\n",
			[]string{"rules[0].nonResourceURLs: a rule has either nonResourceURLs or"}},
		{"a role with URLs and resources", role + "metadata: {name: r}\nrules: [{apiGroups: [\"\"], resources: [pods], nonResourceURLs: [/x], verbs: [get]}]\n",
			[]string{"rules[0].nonResourceURLs: a Role cannot grant nonResourceURLs: they are not in a namespace (use a ClusterRole); a rule has either"}},
		{"a cluster role with URLs", cRole + "metadata: {name: r}\nrules: [{nonResourceURLs: [/healthz, /metrics/*], verbs: [get]}]\n", nil},
		{"a cluster role has no namespace", cRole + "metadata: {name: r, namespace: shop}\n",
			[]string{"metadata.namespace: this kind is cluster-scoped: it takes no namespace"}},
		{"aggregation", cRole + "metadata: {name: r}\naggregationRule: {clusterRoleSelectors: [{matchLabels: {a: b}}]}\n", nil},
		{"aggregation without selectors", cRole + "metadata: {name: r}\naggregationRule: {}\n",
			[]string{"aggregationRule.clusterRoleSelectors: an aggregationRule needs at least one clusterRoleSelector"}},
		{"empty apiGroups are defaulted", binding + "roleRef: {apiGroup: \"\", kind: Role, name: r}\nsubjects: [{kind: User, name: a, apiGroup: \"\"}]\n", nil},
		{"a service account of this namespace", binding + ref + "subjects: [{kind: ServiceAccount, name: web}]\n", nil},
		{"no roleRef", binding + "subjects: [{kind: User, name: a}]\n",
			[]string{"roleRef.kind: field is required but not present", "roleRef.name: field is required but not present"}},
		{"roleRef in another group", binding + "roleRef: {apiGroup: apps, kind: Role, name: r}\n",
			[]string{`roleRef.apiGroup: invalid value "apps" (want one of: "", "rbac.authorization.k8s.io")`}},
		{"roleRef name", binding + "roleRef: {kind: Role, name: a/b}\n",
			[]string{`roleRef.name: invalid value "a/b" (out of bound a path segment name`}},
		{"a subject without a name", binding + ref + "subjects: [{kind: Group}]\n",
			[]string{"subjects[0].name: field is required but not present"}},
		{"a service account in the RBAC group", binding + ref + "subjects: [{kind: ServiceAccount, name: web, apiGroup: rbac.authorization.k8s.io}]\n",
			[]string{`subjects[0].apiGroup: conflicting values "" and "rbac.authorization.k8s.io"`}},
		{"a user in another group", binding + ref + "subjects: [{kind: User, name: a, apiGroup: apps}]\n",
			[]string{`subjects[0].apiGroup: invalid value "apps" (want one of: "", "rbac.authorization.k8s.io")`}},
		{"a cluster binding's service account", cBind + ref + "subjects: [{kind: ServiceAccount, name: web, namespace: shop}, {kind: User, name: \"system:admin\"}]\n", nil},
		{"a cluster binding of a role", cBind + "roleRef: {kind: Role, name: r}\n",
			[]string{"roleRef.kind: a ClusterRoleBinding grants a ClusterRole only"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := validator(t)
			_, ps := v.Load(fstest.MapFS{"rbac.yaml": {Data: []byte(tc.doc)}})
			got := fieldReasons(ps)
			if !matchPrefixes(got, tc.want) {
				t.Errorf("Load:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
			obj, err := strictDecode([]byte(tc.doc))
			if err != nil {
				t.Fatalf("strict decode: %v", err)
			}
			if api := fieldReasons(v.ValidateObject(obj)); !slices.Equal(api, got) {
				t.Errorf("ValidateObject:\n  %s\nLoad:\n  %s", strings.Join(api, "\n  "), strings.Join(got, "\n  "))
			}
		})
	}
}

// matchPrefixes says whether each of got starts with the want of its place.
func matchPrefixes(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !strings.HasPrefix(got[i], want[i]) {
			return false
		}
	}
	return true
}
