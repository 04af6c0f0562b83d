package schema

import (
	"reflect"
	"strings"
	"testing"
)

// path follows properties (and items for "[]") through a schema.
func schemaAt(s map[string]any, path ...string) map[string]any {
	for _, p := range path {
		if p == "[]" {
			s, _ = s["items"].(map[string]any)
			continue
		}
		props, _ := s["properties"].(map[string]any)
		s, _ = props[p].(map[string]any)
	}
	return s
}

func TestOpenAPISchemas(t *testing.T) {
	all, err := OpenAPISchemas()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(Kinds()) {
		t.Fatalf("%d schemas for %d kinds", len(all), len(Kinds()))
	}
	by := map[string]KindSchema{}
	for _, ks := range all {
		by[ks.Kind.Kind] = ks
		gvk, _ := ks.Schema["x-kubernetes-group-version-kind"].([]map[string]string)
		if len(gvk) != 1 || gvk[0]["kind"] != ks.Kind.Kind || gvk[0]["group"] != ks.Kind.Group {
			t.Errorf("%s: x-kubernetes-group-version-kind %v", ks.Kind.Kind, gvk)
		}
		if schemaAt(ks.Schema, "metadata", "name")["type"] != "string" || ks.Schema["description"] == "" {
			t.Errorf("%s: no metadata.name or description: %v", ks.Kind.Kind, ks.Schema["description"])
		}
		if ks.Kind.FromGit && !ks.FromCUE {
			t.Errorf("%s is validated by CUE but its schema is not from CUE", ks.Kind.Kind)
		}
	}
	d := by["Deployment"]
	if d.Name != "io.k8s.api.apps.v1.Deployment" {
		t.Errorf("name %q", d.Name)
	}
	if !reflect.DeepEqual(d.Schema["required"], []string{"metadata"}) {
		t.Errorf("Deployment required %v (flotilla.cue: metadata!)", d.Schema["required"])
	}
	r := schemaAt(d.Schema, "spec", "replicas")
	if r["type"] != "integer" || r["format"] != "int32" || !strings.Contains(r["description"].(string), "Number of desired pods") {
		t.Errorf("spec.replicas: %v", r)
	}
	// Narrowed by Flotilla's CUE (the generated type is any string).
	if e := schemaAt(d.Schema, "spec", "strategy", "type")["enum"]; !reflect.DeepEqual(e, []any{"RollingUpdate", "Recreate"}) {
		t.Errorf("spec.strategy.type enum %v", e)
	}
	ms := schemaAt(d.Schema, "spec", "strategy", "rollingUpdate", "maxSurge")
	if ms["x-kubernetes-int-or-string"] != true {
		t.Errorf("maxSurge: %v", ms)
	}
	if strings.Contains(schemaAt(d.Schema, "spec", "strategy", "rollingUpdate")["description"].(string), "---") {
		t.Error("private doc after --- published")
	}
	lim := schemaAt(d.Schema, "spec", "template", "spec", "containers", "[]", "resources", "limits")
	if ap, _ := lim["additionalProperties"].(map[string]any); ap["type"] != "string" {
		t.Errorf("limits: %v", lim)
	}
	if ap, _ := schemaAt(by["ConfigMap"].Schema, "data")["additionalProperties"].(map[string]any); ap["type"] != "string" {
		t.Errorf("ConfigMap data: %v", schemaAt(by["ConfigMap"].Schema, "data"))
	}
	// A kind with no CUE of its own: described from its Go type.
	if l := schemaAt(by["Lease"].Schema, "spec", "holderIdentity"); l["type"] != "string" || l["description"] == nil {
		t.Errorf("Lease holderIdentity: %v", l)
	}
}

// BenchmarkOpenAPISchemas measures the first build of the schemas (the
// CUE walk; OpenAPISchemas does it once per process).
//
//	go test -run '^$' -bench OpenAPISchemas -benchtime 5x ./schema/
func BenchmarkOpenAPISchemas(b *testing.B) {
	for b.Loop() {
		if _, err := buildOpenAPISchemas(); err != nil {
			b.Fatal(err)
		}
	}
}
