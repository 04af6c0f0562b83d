package apiserver

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// scalable kinds have the /scale subresource (kubectl scale).
func scalable(k schema.Kind) bool {
	switch k.Resource {
	case "deployments", "replicasets", "statefulsets":
		return k.Group == "apps"
	}
	return false
}

// scaleOf is a workload's autoscaling/v1 Scale.
func scaleOf(obj schema.Object) (*autoscalingv1.Scale, error) {
	var spec, status int32
	var sel *metav1.LabelSelector
	switch o := obj.(type) {
	case *appsv1.Deployment:
		spec, status, sel = replicasOf(o.Spec.Replicas), o.Status.Replicas, o.Spec.Selector
	case *appsv1.ReplicaSet:
		spec, status, sel = replicasOf(o.Spec.Replicas), o.Status.Replicas, o.Spec.Selector
	case *appsv1.StatefulSet:
		spec, status, sel = replicasOf(o.Spec.Replicas), o.Status.Replicas, o.Spec.Selector
	default:
		return nil, errors.New("not scalable")
	}
	selector := ""
	if s, err := metav1.LabelSelectorAsSelector(sel); err == nil {
		selector = s.String()
	}
	return &autoscalingv1.Scale{
		TypeMeta: metav1.TypeMeta{APIVersion: "autoscaling/v1", Kind: "Scale"},
		ObjectMeta: metav1.ObjectMeta{Name: obj.GetName(), Namespace: obj.GetNamespace(), UID: obj.GetUID(),
			ResourceVersion: obj.GetResourceVersion(), CreationTimestamp: obj.GetCreationTimestamp()},
		Spec:   autoscalingv1.ScaleSpec{Replicas: spec},
		Status: autoscalingv1.ScaleStatus{Replicas: status, Selector: selector},
	}, nil
}

func replicasOf(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

// scale serves GET, PUT and PATCH of …/<workload>/<name>/scale. A change
// is an update of the workload's spec.replicas through the write
// pipeline: a workload from Git is refused there (403, change it in the
// repository), and a Scale naming a resourceVersion is a precondition.
func (s *Server) scale(w http.ResponseWriter, r *http.Request, req request) {
	ctx := r.Context()
	for attempt := 0; ; attempt++ {
		cur, err := s.cfg.Store.Get(ctx, req.kind.Resource, req.namespace, req.name)
		if err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		sc, err := scaleOf(cur)
		if err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		if r.Method == http.MethodGet {
			writeJSON(w, http.StatusOK, sc)
			return
		}
		if r.Method != http.MethodPut && r.Method != http.MethodPatch {
			s.writeError(w, r, methodNotAllowed(r.Method, r.URL.Path), req.target())
			return
		}
		want, pinned, err := s.readScale(w, r, sc)
		if err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		if want.Spec.Replicas < 0 {
			s.writeError(w, r, badRequest("spec.replicas: Invalid value: %d: must be greater than or equal to 0", want.Spec.Replicas), req.target())
			return
		}
		obj := schema.Copy(cur)
		if pinned != "" {
			obj.SetResourceVersion(pinned)
		}
		n := want.Spec.Replicas
		switch o := obj.(type) {
		case *appsv1.Deployment:
			o.Spec.Replicas = &n
		case *appsv1.ReplicaSet:
			o.Spec.Replicas = &n
		case *appsv1.StatefulSet:
			o.Spec.Replicas = &n
		}
		opts, err := writeOptions(r)
		if err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		out, err := s.writes.UpdateWith(ctx, obj, false, opts)
		if errors.Is(err, store.ErrConflict) && pinned == "" && attempt < patchRetries {
			continue
		}
		if err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		res, _ := scaleOf(out)
		writeJSON(w, http.StatusOK, res)
		return
	}
}

// readScale reads the body of a scale write: a whole Scale (PUT) or a
// merge patch of the current one (PATCH, as kubectl scale sends). pinned
// is the resourceVersion the body asks for ("" none).
func (s *Server) readScale(w http.ResponseWriter, r *http.Request, cur *autoscalingv1.Scale) (*autoscalingv1.Scale, string, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		return nil, "", err
	}
	out := &autoscalingv1.Scale{}
	if r.Method == http.MethodPatch {
		switch mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt {
		case "application/merge-patch+json", "application/strategic-merge-patch+json":
		default:
			return nil, "", newError(http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType,
				"the patch type %q is not supported for scale; use application/merge-patch+json", mt)
		}
	}
	if r.Method == http.MethodPut {
		if err := json.Unmarshal(body, out); err != nil {
			return nil, "", badRequest("the request body is not a valid Scale: %v", err)
		}
		return out, out.ResourceVersion, nil
	}
	var patch map[string]any
	if err := json.Unmarshal(body, &patch); err != nil {
		return nil, "", badRequest("the patch is not valid JSON: %v", err)
	}
	orig, err := json.Marshal(cur)
	if err != nil {
		return nil, "", err
	}
	var o any
	if err := json.Unmarshal(orig, &o); err != nil {
		return nil, "", err
	}
	merged, err := json.Marshal(mergePatch(o, any(patch)))
	if err != nil {
		return nil, "", err
	}
	if err := json.Unmarshal(merged, out); err != nil {
		return nil, "", badRequest("the patched Scale is not valid: %v", err)
	}
	pinned := ""
	if md, ok := patch["metadata"].(map[string]any); ok {
		pinned, _ = md["resourceVersion"].(string)
	}
	return out, pinned, nil
}
