package apiserver

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// PATCH with a JSON merge patch (RFC 7386), as kubectl label, annotate and
// simple edits send them. A strategic merge patch is accepted when it means
// the same as a merge patch (no lists, no $directives); one that merges
// lists by key answers 415, as do JSON patches and server-side apply (the
// strategic merge code of apimachinery needs a module Flotilla does not
// carry, and Git is where objects are changed). A patch that sets no
// resourceVersion is retried on conflict, as Kubernetes does.

const patchRetries = 5

func (s *Server) patch(w http.ResponseWriter, r *http.Request, req request) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "application/merge-patch+json", "application/strategic-merge-patch+json", jsonPatchType:
	default:
		s.writeError(w, r, newError(http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType,
			"the patch type %q is not supported; use application/merge-patch+json, application/json-patch+json or application/strategic-merge-patch+json", mt), req.target())
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	if mt == jsonPatchType {
		s.jsonPatch(w, r, req, body)
		return
	}
	var probe map[string]any
	if err := json.Unmarshal(body, &probe); err != nil {
		s.writeError(w, r, badRequest("the patch is not a JSON object: %v", err), req.target())
		return
	}
	if mt == "application/strategic-merge-patch+json" && !plainMerge(probe) {
		// Say "in the repository" only of an object that is Git's.
		advice := "send a JSON merge patch (kubectl patch --type merge) or replace it (kubectl replace, kubectl edit)"
		if cur, err := s.cfg.Store.Get(r.Context(), req.kind.Resource, req.namespace, req.name); err == nil &&
			cur.GetAnnotations()[schema.AnnotationManagedBy] == schema.ManagedByGit {
			advice = "it is managed by Git: change it in the repository and commit"
		}
		s.writeError(w, r, newError(http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType,
			"strategic merge patches of lists are not supported for %s %q; %s", req.kind.Resource, req.name, advice), req.target())
		return
	}
	_, pinned := nested(probe, "metadata", "resourceVersion")
	s.patchLoop(w, r, req, pinned, func(orig []byte) ([]byte, error) {
		var o, p any
		if err := json.Unmarshal(orig, &o); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, badRequest("the patch is not valid JSON: %v", err)
		}
		return json.Marshal(mergePatch(o, p))
	})
}

// patchLoop writes the stored object as apply makes it of its JSON,
// through the pipeline. The patched object carries the stored
// resourceVersion: a write in between is a conflict, retried unless the
// patch pinned one (as Kubernetes does).
func (s *Server) patchLoop(w http.ResponseWriter, r *http.Request, req request, pinned bool, apply func(orig []byte) ([]byte, error)) {
	mode, err := fieldValidation(r)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	opts, err := writeOptions(r)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	ctx := r.Context()
	for attempt := 0; ; attempt++ {
		cur, err := s.cfg.Store.Get(ctx, req.kind.Resource, req.namespace, req.name)
		if err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		obj, warnings, err := applyPatch(req, cur, apply, mode)
		if err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		opts.Warn = func(m string) { warnings = append(warnings, m) }
		out, err := s.writes.UpdateWith(ctx, obj, req.sub == "status", opts)
		if errors.Is(err, store.ErrConflict) && !pinned && attempt < patchRetries {
			continue
		}
		if err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		warn(w, warnings)
		s.writeObjects(w, r, req, http.StatusOK, []schema.Object{out}, 0, false)
		return
	}
}

// applyPatch patches cur's JSON with apply and decodes the result, which
// must keep its name and namespace.
func applyPatch(req request, cur schema.Object, apply func(orig []byte) ([]byte, error), mode admission.FieldValidation) (schema.Object, []string, error) {
	orig, err := schema.Encode(cur)
	if err != nil {
		return nil, nil, err
	}
	patched, err := apply(orig)
	if err != nil {
		return nil, nil, err
	}
	req.nsPath = req.kind.Namespaced
	obj, warnings, err := decodeBody(req, patched, mode)
	if err != nil {
		return nil, nil, err
	}
	if obj.GetName() != cur.GetName() || obj.GetNamespace() != cur.GetNamespace() {
		return nil, nil, badRequest("a patch may not change the name or namespace")
	}
	return obj, warnings, nil
}

// plainMerge says whether a strategic merge patch means the same as a JSON
// merge patch: it holds no lists and no $directives.
func plainMerge(v any) bool {
	switch v := v.(type) {
	case []any:
		return false
	case map[string]any:
		for k, e := range v {
			if strings.HasPrefix(k, "$") || !plainMerge(e) {
				return false
			}
		}
	}
	return true
}

// mergePatch applies an RFC 7386 JSON merge patch.
func mergePatch(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
		} else {
			tm[k] = mergePatch(tm[k], v)
		}
	}
	return tm
}

func nested(m map[string]any, keys ...string) (any, bool) {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return v, v != nil
}

// jsonPatchType is RFC 6902's JSON patch (kubectl patch --type json).
const jsonPatchType = "application/json-patch+json"

// jsonPatch applies an RFC 6902 patch (evanphx/json-patch, the library
// kube-apiserver uses) to the stored object and writes the result through
// the pipeline, retried on conflict unless the patch tests or sets the
// resourceVersion.
func (s *Server) jsonPatch(w http.ResponseWriter, r *http.Request, req request, body []byte) {
	p, err := jsonpatch.DecodePatch(body)
	if err != nil {
		s.writeError(w, r, badRequest("the JSON patch is not valid: %v", err), req.target())
		return
	}
	pinned := false
	for _, op := range p {
		if path, err := op.Path(); err == nil && path == "/metadata/resourceVersion" {
			pinned = true
		}
	}
	s.patchLoop(w, r, req, pinned, func(orig []byte) ([]byte, error) {
		patched, err := p.Apply(orig)
		if err != nil {
			return nil, badRequest("the JSON patch does not apply: %v", err)
		}
		return patched, nil
	})
}
