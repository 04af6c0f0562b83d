package apiserver

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// PATCH with a JSON merge patch (RFC 7386), a strategic merge patch
// (apimachinery's strategicpatch with the API types' patch tags: lists
// merged by key, $patch directives — what kubectl set env, set image,
// taint, rollout restart and apply send) or a JSON patch (RFC 6902).
// Server-side apply answers 415. A patch that sets no resourceVersion is
// retried on conflict, as Kubernetes does.

const patchRetries = 5

func (s *Server) patch(w http.ResponseWriter, r *http.Request, req request) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "application/merge-patch+json", "application/strategic-merge-patch+json", jsonPatchType:
	case "application/apply-patch+yaml", "application/apply-patch+cbor":
		s.writeError(w, r, newError(http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType,
			"server-side apply is not supported by this server; apply without --server-side (kubectl's client-side apply works)"), req.target())
		return
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
	_, pinned := nested(probe, "metadata", "resourceVersion")
	if mt == "application/strategic-merge-patch+json" {
		s.patchLoop(w, r, req, pinned, func(orig []byte) ([]byte, error) {
			out, err := strategicpatch.StrategicMergePatch(orig, body, req.kind.New())
			if err != nil {
				return nil, badRequest("the strategic merge patch does not apply: %v", err)
			}
			return out, nil
		})
		return
	}
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
