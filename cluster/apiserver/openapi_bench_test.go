package apiserver

import "testing"

// BenchmarkOpenAPIDocuments measures the serialisation of every OpenAPI
// document (v3 per group version, v2 JSON and protobuf) from the schemas,
// the part of the first build after schema.OpenAPISchemas' CUE walk.
//
//	go test -run '^$' -bench OpenAPIDocuments -benchtime 5x ./cluster/apiserver/
func BenchmarkOpenAPIDocuments(b *testing.B) {
	for b.Loop() {
		if _, err := buildOpenAPI(); err != nil {
			b.Fatal(err)
		}
	}
}
