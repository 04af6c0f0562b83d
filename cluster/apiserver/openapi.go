package apiserver

import (
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"

	openapiv2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-dev/flotilla/schema"
)

// The OpenAPI publication: v3 per group version (/openapi/v3 and
// /openapi/v3/apis/<group>/<version>; kubectl 1.24+ explain, and the
// fieldValidation check of create/replace/apply) and v2 as one document
// (/openapi/v2, JSON or gnostic's protobuf; older kubectl validate and
// compute apply patches with it). The schemas are schema.OpenAPISchemas:
// walked from the CUE definitions that validate the objects. Every
// document is built once, on the first request that needs one, and then
// served from memory.

const (
	// openAPIV2Protobuf is the media type of the protobuf v2 document, as
	// clients ask for it and as Kubernetes labels the answer.
	openAPIV2Protobuf       = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
	openAPIV2ProtobufAnswer = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
)

// openAPIDocs are the serialised documents.
type openAPIDocs struct {
	v3      map[string][]byte // by group version path ("apis/apps/v1")
	v3Index []byte            // the /openapi/v3 discovery document
	v2JSON  []byte
	v2Proto []byte
}

var openAPI = sync.OnceValues(buildOpenAPI)

// openAPIPath is the key of a group version in the /openapi/v3 index.
func openAPIPath(k schema.Kind) string {
	if k.Group == "" {
		return "api/" + k.Version
	}
	return "apis/" + k.Group + "/" + k.Version
}

// kindPath is the path of one object of kind k, with OpenAPI parameters.
func kindPath(k schema.Kind) string {
	p := "/" + openAPIPath(k) + "/"
	if k.Namespaced {
		p += "namespaces/{namespace}/"
	}
	return p + k.Resource + "/{name}"
}

// writeOperation describes PUT and PATCH of a kind: kubectl reads from it
// that the server validates fields itself (the fieldValidation parameter)
// and then sends fieldValidation=Strict instead of validating client-side.
func writeOperation(k schema.Kind, v2 bool, ref string) map[string]any {
	param := func(name string) map[string]any {
		p := map[string]any{"name": name, "in": "query", "uniqueItems": true}
		if v2 {
			p["type"] = "string"
		} else {
			p["schema"] = map[string]string{"type": "string"}
		}
		return p
	}
	ok := map[string]any{"description": "OK"}
	if v2 {
		ok["schema"] = map[string]string{"$ref": ref}
	} else {
		ok["content"] = map[string]any{"application/json": map[string]any{"schema": map[string]string{"$ref": ref}}}
	}
	return map[string]any{
		"operationId": "patch" + k.Kind,
		"x-kubernetes-group-version-kind": map[string]string{
			"group": k.Group, "version": k.Version, "kind": k.Kind},
		"parameters": []map[string]any{param("fieldValidation"), param("fieldManager"), param("dryRun")},
		"responses":  map[string]any{"200": ok},
	}
}

func buildOpenAPI() (*openAPIDocs, error) {
	kinds, err := schema.OpenAPISchemas()
	if err != nil {
		return nil, err
	}
	info := map[string]string{"title": "Flotilla", "version": KubernetesVersion}
	type gvDoc struct{ paths, schemas map[string]any }
	v3 := map[string]*gvDoc{}
	v2Paths, v2Defs := map[string]any{}, map[string]any{}
	for _, ks := range kinds {
		gv := openAPIPath(ks.Kind)
		d := v3[gv]
		if d == nil {
			d = &gvDoc{paths: map[string]any{}, schemas: map[string]any{}}
			v3[gv] = d
		}
		op := writeOperation(ks.Kind, false, "#/components/schemas/"+ks.Name)
		d.paths[kindPath(ks.Kind)] = map[string]any{"put": op, "patch": op}
		d.schemas[ks.Name] = ks.Schema
		op2 := writeOperation(ks.Kind, true, "#/definitions/"+ks.Name)
		v2Paths[kindPath(ks.Kind)] = map[string]any{"put": op2, "patch": op2}
		v2Defs[ks.Name] = ks.Schema
	}
	docs := &openAPIDocs{v3: map[string][]byte{}}
	index := map[string]map[string]string{}
	for gv, d := range v3 {
		data, err := json.Marshal(map[string]any{
			"openapi":    "3.0.0",
			"info":       info,
			"paths":      d.paths,
			"components": map[string]any{"schemas": d.schemas},
		})
		if err != nil {
			return nil, fmt.Errorf("openapi v3 %s: %w", gv, err)
		}
		docs.v3[gv] = data
		index[gv] = map[string]string{"serverRelativeURL": "/openapi/v3/" + gv + "?hash=" + etag(data)}
	}
	if docs.v3Index, err = json.Marshal(map[string]any{"paths": index}); err != nil {
		return nil, err
	}
	docs.v2JSON, err = json.Marshal(map[string]any{
		"swagger":     "2.0",
		"info":        info,
		"paths":       v2Paths,
		"definitions": v2Defs,
	})
	if err != nil {
		return nil, fmt.Errorf("openapi v2: %w", err)
	}
	doc, err := openapiv2.ParseDocument(docs.v2JSON)
	if err != nil {
		return nil, fmt.Errorf("openapi v2: not a valid document: %w", err)
	}
	if docs.v2Proto, err = proto.Marshal(doc); err != nil {
		return nil, fmt.Errorf("openapi v2: protobuf: %w", err)
	}
	return docs, nil
}

// etag is Kubernetes' form of a document hash: upper-case hex SHA-512.
func etag(data []byte) string {
	sum := sha512.Sum512(data)
	return strings.ToUpper(fmt.Sprintf("%x", sum[:]))
}

func (s *Server) openAPIV3(w http.ResponseWriter, r *http.Request) {
	docs, err := openAPI()
	if err != nil {
		s.writeError(w, r, err, target{})
		return
	}
	gvPath := strings.Trim(strings.TrimPrefix(r.URL.Path, "/openapi/v3"), "/")
	if gvPath == "" {
		writeOpenAPI(w, r, "application/json", docs.v3Index, false)
		return
	}
	doc, ok := docs.v3[gvPath]
	if !ok {
		s.writeError(w, r, errNoRoute, target{})
		return
	}
	// A request with the index's hash may be cached for good.
	writeOpenAPI(w, r, "application/json", doc, r.URL.Query().Get("hash") != "")
}

func (s *Server) openAPIV2(w http.ResponseWriter, r *http.Request) {
	docs, err := openAPI()
	if err != nil {
		s.writeError(w, r, err, target{})
		return
	}
	switch negotiate(r, "application/json", openAPIV2Protobuf, openAPIV2ProtobufAnswer) {
	case "application/json":
		writeOpenAPI(w, r, "application/json", docs.v2JSON, false)
	case openAPIV2Protobuf, openAPIV2ProtobufAnswer:
		writeOpenAPI(w, r, openAPIV2ProtobufAnswer, docs.v2Proto, false)
	default:
		s.writeError(w, r, notAcceptable(r, "application/json", openAPIV2Protobuf), target{})
	}
}

// writeOpenAPI writes a document with its ETag, or 304 when the client
// has it.
func writeOpenAPI(w http.ResponseWriter, r *http.Request, contentType string, data []byte, immutable bool) {
	tag := `"` + etag(data) + `"`
	w.Header().Set("ETag", tag)
	w.Header().Set("Vary", "Accept")
	if immutable {
		w.Header().Set("Cache-Control", "public, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache, private")
	}
	if r.Header.Get("If-None-Match") == tag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}
