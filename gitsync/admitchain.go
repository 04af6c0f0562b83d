package gitsync

import (
	"fmt"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/schema"
)

// ChainAdmit runs several admission hooks as one (Config.Admit), in
// order, on the same objects: each sees what the earlier ones completed.
// Their problems are concatenated; the first returned error stops the
// chain (transient, as for one hook). nil hooks are skipped.
func ChainAdmit(hooks ...AdmitFunc) AdmitFunc {
	return func(r Reader, objs []Admission) (schema.Problems, error) {
		var all schema.Problems
		for _, h := range hooks {
			if h == nil {
				continue
			}
			ps, err := h(r, objs)
			if err != nil {
				return nil, err
			}
			all = append(all, ps...)
		}
		return all, nil
	}
}

// PipelineAdmit is the write pipeline as a commit's admission hook: the
// stages every other write passes after validation — Kubernetes' defaults,
// the Go checks, the admission plugins in their fixed order (immutable
// fields, stringData, cluster IPs and node ports, …) — run on the whole
// commit in its apply transaction. The CUE schema, the pipeline's other
// validation, has already checked the commit in bulk when it was loaded
// (Config.Loader), on Git's own objects.
//
// The objects are completed in place, so what is written is defaulted;
// Git's applied-hash annotation was computed before, from Git's fields
// only, so defaults never show as drift nor cause a re-apply. Each
// refusal is a Problem at the manifest's file and line, naming the field.
func PipelineAdmit(p *admission.Pipeline) AdmitFunc {
	return func(r Reader, objs []Admission) (schema.Problems, error) {
		ws := make([]*admission.Write, len(objs))
		for i, o := range objs {
			k, ok := schema.KindByResource(o.Resource)
			if !ok {
				return nil, fmt.Errorf("admission of %s: unknown resource", o.Resource)
			}
			w := &admission.Write{Kind: k, Object: o.Object, Old: o.Stored}
			switch {
			case o.Object == nil:
				w.Op = admission.Delete
			case o.Stored == nil:
				w.Op = admission.Create
			default:
				w.Op = admission.Update
			}
			ws[i] = w
		}
		if err := p.AdmitCommit(r, ws); err != nil {
			return nil, err
		}
		var probs schema.Problems
		for i, w := range ws {
			for _, rs := range w.Reasons() {
				probs = append(probs, schema.Problem{File: objs[i].File, Line: objs[i].Line, Field: rs.Field, Reason: rs.Reason})
			}
			for _, m := range w.Warnings {
				probs = append(probs, schema.Problem{File: objs[i].File, Line: objs[i].Line, Reason: m, Warning: true})
			}
		}
		return probs, nil
	}
}
