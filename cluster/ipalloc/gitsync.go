package ipalloc

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/schema"
)

// AdmitGit is gitsync's admission hook (gitsync.Config.Admit): it runs
// Admit on the Services a commit creates or updates, against every other
// stored Service. Services the commit deletes give their addresses and
// ports back at once, so a commit may rename a Service and keep its
// address by asking for it. The error is a failed store read (transient).
func (a *Allocator) AdmitGit(r gitsync.Reader, objs []gitsync.Admission) (schema.Problems, error) {
	var reqs []Request
	leaving := map[string]bool{} // services this commit writes or deletes
	for _, o := range objs {
		if o.Resource != "services" {
			continue
		}
		if o.Stored != nil {
			leaving[o.Stored.GetNamespace()+"/"+o.Stored.GetName()] = true
		}
		if o.Object == nil {
			continue
		}
		svc, ok := o.Object.(*corev1.Service)
		if !ok {
			return nil, fmt.Errorf("service %s/%s is a %T", o.Object.GetNamespace(), o.Object.GetName(), o.Object)
		}
		leaving[nameOf(svc)] = true
		req := Request{Service: svc, File: o.File, Line: o.Line}
		if old, ok := o.Stored.(*corev1.Service); ok {
			req.Stored = old
		}
		reqs = append(reqs, req)
	}
	if len(reqs) == 0 {
		return nil, nil
	}
	objects, err := r.List("services", store.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	var existing []*corev1.Service
	for _, o := range objects {
		if svc, ok := o.(*corev1.Service); ok && !leaving[nameOf(svc)] {
			existing = append(existing, svc)
		}
	}
	return a.Admit(existing, reqs), nil
}

// Interface guard: AdmitGit is a gitsync admission hook.
var _ gitsync.AdmitFunc = (*Allocator)(nil).AdmitGit
