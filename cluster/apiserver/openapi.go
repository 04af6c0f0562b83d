package apiserver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/flotilla-dev/flotilla/schema"
)

// A minimal OpenAPI v3 publication. kubectl create/replace (validation on
// by default) ask /openapi/v3 whether the server validates fields itself
// (the fieldValidation query parameter on each kind's PATCH operation);
// when it does, kubectl sends fieldValidation=Strict and needs no schema.
// Without this, kubectl falls back to downloading /openapi/v2 and fails.
// Schemas are not published: `kubectl explain` does not work.

// openAPIPath is the key of a group version in the /openapi/v3 index.
func openAPIPath(k schema.Kind) string {
	if k.Group == "" {
		return "api/" + k.Version
	}
	return "apis/" + k.Group + "/" + k.Version
}

// openAPIDoc is the document of one group version, or nil.
func openAPIDoc(gvPath string) []byte {
	paths := map[string]any{}
	for _, k := range schema.Kinds() {
		if openAPIPath(k) != gvPath {
			continue
		}
		p := "/" + gvPath + "/"
		if k.Namespaced {
			p += "namespaces/{namespace}/"
		}
		p += k.Resource + "/{name}"
		op := map[string]any{
			"operationId": "patch" + k.Kind,
			"x-kubernetes-group-version-kind": map[string]string{
				"group": k.Group, "version": k.Version, "kind": k.Kind},
			"parameters": []map[string]any{
				{"name": "fieldValidation", "in": "query", "schema": map[string]string{"type": "string"}},
				{"name": "fieldManager", "in": "query", "schema": map[string]string{"type": "string"}},
			},
			"responses": map[string]any{"200": map[string]string{"description": "OK"}},
		}
		paths[p] = map[string]any{"patch": op, "put": op}
	}
	if len(paths) == 0 {
		return nil
	}
	data, _ := json.Marshal(map[string]any{
		"openapi": "3.0.0",
		"info":    map[string]string{"title": "Flotilla", "version": KubernetesVersion},
		"paths":   paths,
	})
	return data
}

func (s *Server) openAPIV3(w http.ResponseWriter, r *http.Request) {
	gvPath := strings.Trim(strings.TrimPrefix(r.URL.Path, "/openapi/v3"), "/")
	if gvPath == "" {
		index := map[string]map[string]string{}
		for _, k := range schema.Kinds() {
			p := openAPIPath(k)
			sum := sha256.Sum256(openAPIDoc(p))
			index[p] = map[string]string{"serverRelativeURL": "/openapi/v3/" + p + "?hash=" + strings.ToUpper(hex.EncodeToString(sum[:]))}
		}
		writeJSON(w, http.StatusOK, map[string]any{"paths": index})
		return
	}
	doc := openAPIDoc(gvPath)
	if doc == nil {
		s.writeError(w, r, errNoRoute, target{})
		return
	}
	writeRaw(w, http.StatusOK, doc)
}
