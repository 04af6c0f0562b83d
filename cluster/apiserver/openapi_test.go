package apiserver_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	openapiv2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/runtime/schema"
	protomodels "k8s.io/kube-openapi/pkg/util/proto"

	"github.com/flotilla-dev/flotilla/cluster/store"
	flschema "github.com/flotilla-dev/flotilla/schema"
)

// TestKubectlExplain: kubectl (OpenAPI v3) explains every kind Flotilla
// serves from the published schemas, with the descriptions of the fields.
func TestKubectlExplain(t *testing.T) {
	e := newEnv(t, nil)
	k := newKubectl(t, e)
	expect(t, k.run(false, "explain", "deployment.spec.replicas"),
		"KIND:       Deployment", "FIELD: replicas <integer>", "Number of desired pods")
	expect(t, k.run(false, "explain", "deployment.spec.strategy"),
		"FIELD: strategy <Object>", "The deployment strategy to use",
		"rollingUpdate\t<Object>", "type\t<string>", `Type of deployment. Can be "Recreate" or "RollingUpdate"`)
	out := k.run(false, "explain", "deployment.spec.strategy.type")
	expect(t, out, "Recreate", "RollingUpdate")
	if k.minor() >= 28 { // kubectl 1.27 prints no enums
		expect(t, out, "ENUM:")
	}
	expect(t, k.run(false, "explain", "configmap.data"), "FIELD: data <map[string]string>", "Data contains the configuration data")
	expect(t, k.run(false, "explain", "pods.spec.containers.resources.limits"), "FIELD: limits <map[string]string>", "maximum amount of compute resources")
	for _, kind := range flschema.Kinds() {
		res := kind.Resource
		if kind.Group != "" {
			res += "." + kind.Group
		}
		expect(t, k.run(false, "explain", res), "KIND:       "+kind.Kind, "VERSION:    "+kind.Version, "DESCRIPTION:", "FIELDS:", "metadata\t<Object>")
	}
}

// TestOpenAPIV2 checks /openapi/v2 as JSON and as the protobuf document
// older kubectl asks for, parsed the way kubectl does (gnostic, then
// kube-openapi's models).
func TestOpenAPIV2(t *testing.T) {
	e := newEnv(t, nil)
	resp, body := e.do(t, "GET", "/openapi/v2", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("JSON: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var doc struct {
		Swagger     string                     `json:"swagger"`
		Definitions map[string]json.RawMessage `json:"definitions"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || doc.Swagger != "2.0" {
		t.Fatalf("JSON document: %v %q", err, doc.Swagger)
	}
	if len(doc.Definitions) != len(flschema.Kinds()) {
		t.Errorf("%d definitions for %d kinds", len(doc.Definitions), len(flschema.Kinds()))
	}

	resp, body = e.do(t, "GET", "/openapi/v2", "", "Accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf, application/json;q=0.9")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/com.github.proto-openapi.spec.v2.v1.0+protobuf" {
		t.Fatalf("protobuf: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var pb openapiv2.Document
	if err := proto.Unmarshal([]byte(body), &pb); err != nil {
		t.Fatalf("protobuf document: %v", err)
	}
	models, err := protomodels.NewOpenAPIData(&pb)
	if err != nil {
		t.Fatalf("kube-openapi models: %v", err)
	}
	found := map[schema.GroupVersionKind]bool{}
	for _, name := range models.ListModels() {
		m := models.LookupModel(name)
		for _, gvk := range gvksOf(m) {
			found[gvk] = true
		}
	}
	for _, k := range flschema.Kinds() {
		if !found[schema.GroupVersionKind{Group: k.Group, Version: k.Version, Kind: k.Kind}] {
			t.Errorf("no v2 model for %s", k.Kind)
		}
	}
	dep, _ := models.LookupModel("io.k8s.api.apps.v1.Deployment").(*protomodels.Kind)
	if dep == nil {
		t.Fatal("no Deployment model")
	}
	spec, _ := dep.Fields["spec"].(*protomodels.Kind)
	if spec == nil {
		t.Fatalf("Deployment spec: %#v", dep.Fields["spec"])
	}
	if r, _ := spec.Fields["replicas"].(*protomodels.Primitive); r == nil || r.Type != "integer" || !strings.Contains(r.GetDescription(), "Number of desired pods") {
		t.Errorf("spec.replicas: %#v", spec.Fields["replicas"])
	}

	// Cached by ETag; an Accept the server cannot answer is a 406 Status.
	resp, _ = e.do(t, "GET", "/openapi/v2", "", "If-None-Match", resp.Header.Get("ETag"), "Accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", resp.StatusCode)
	}
	resp, body = e.do(t, "GET", "/openapi/v2", "", "Accept", "text/html")
	if resp.StatusCode != http.StatusNotAcceptable || !strings.Contains(body, `"reason":"NotAcceptable"`) {
		t.Errorf("Accept text/html: %d %s", resp.StatusCode, body)
	}
}

func gvksOf(m protomodels.Schema) []schema.GroupVersionKind {
	var out []schema.GroupVersionKind
	list, _ := m.GetExtensions()["x-kubernetes-group-version-kind"].([]any)
	for _, x := range list {
		g, _ := x.(map[any]any)
		gs, _ := g["group"].(string)
		vs, _ := g["version"].(string)
		ks, _ := g["kind"].(string)
		out = append(out, schema.GroupVersionKind{Group: gs, Version: vs, Kind: ks})
	}
	return out
}

// BenchmarkOpenAPIRequest measures one request for a cached document over
// HTTPS (keep-alive), after a first request that builds them.
//
//	go test -run '^$' -bench OpenAPIRequest ./cluster/apiserver/
func BenchmarkOpenAPIRequest(b *testing.B) {
	e := newEnvOn(b, store.MemoryFor(b), nil)
	for _, c := range []struct{ name, path, accept string }{
		{"v3-apps", "/openapi/v3/apis/apps/v1", "application/json"},
		{"v3-index", "/openapi/v3", "application/json"},
		{"v2-protobuf", "/openapi/v2", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"},
	} {
		b.Run(c.name, func(b *testing.B) {
			start := time.Now()
			resp, body := e.do(b, "GET", c.path, "", "Accept", c.accept)
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("%d %s", resp.StatusCode, body)
			}
			first := time.Since(start)
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			for b.Loop() {
				e.do(b, "GET", c.path, "", "Accept", c.accept)
			}
			b.ReportMetric(float64(first.Microseconds()), "first-µs")
		})
	}
}
