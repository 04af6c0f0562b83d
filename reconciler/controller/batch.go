package controller

import (
	"errors"
	"sync"
)

// SlowStart calls fn(i) for every i in [0, n) in batches of 1, 2, 4, …
// (each batch's calls run concurrently) and stops after the first batch in
// which a call failed, as Kubernetes' slowStartBatch does: a template the
// store refuses costs one write, not n, while a good one reaches full speed
// in a few round trips. It returns how many calls succeeded and their
// errors joined. A panic in fn is returned as a *PanicError: fn runs on
// other goroutines, where the Loop's recover does not reach.
func SlowStart(n int, fn func(i int) error) (int, error) {
	done := 0
	for batch := 1; done < n; batch *= 2 {
		size := min(batch, n-done)
		errs := make([]error, size)
		var wg sync.WaitGroup
		for j := range size {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[j] = Safely(func() error { return fn(done + j) })
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
			}
		}
		done += size
		if ok < size {
			return done - size + ok, errors.Join(errs...)
		}
	}
	return done, nil
}
