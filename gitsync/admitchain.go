package gitsync

import "github.com/flotilla-dev/flotilla/schema"

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
