package apiserver

import (
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LogQuery is opts as the pod log API's query (…/pods/NAME/log?…), which
// is also what the server asks an agent with: the one encoding of
// corev1.PodLogOptions between kubectl, the server and the nodes.
func LogQuery(opts corev1.PodLogOptions) url.Values {
	q := url.Values{}
	if opts.Container != "" {
		q.Set("container", opts.Container)
	}
	if opts.Follow {
		q.Set("follow", "true")
	}
	if opts.Previous {
		q.Set("previous", "true")
	}
	if opts.Timestamps {
		q.Set("timestamps", "true")
	}
	if opts.SinceSeconds != nil {
		q.Set("sinceSeconds", strconv.FormatInt(*opts.SinceSeconds, 10))
	}
	if opts.SinceTime != nil {
		q.Set("sinceTime", opts.SinceTime.UTC().Format(time.RFC3339))
	}
	if opts.TailLines != nil {
		q.Set("tailLines", strconv.FormatInt(*opts.TailLines, 10))
	}
	if opts.LimitBytes != nil {
		q.Set("limitBytes", strconv.FormatInt(*opts.LimitBytes, 10))
	}
	return q
}

// ParseLogQuery reads a pod log query, with kube-apiserver's checks
// (a 400 naming the parameter): sinceSeconds and limitBytes positive,
// tailLines not negative, sinceSeconds and sinceTime not both.
func ParseLogQuery(q url.Values) (corev1.PodLogOptions, error) {
	opts := corev1.PodLogOptions{Container: q.Get("container"), Follow: isTrue(q.Get("follow")),
		Previous: isTrue(q.Get("previous")), Timestamps: isTrue(q.Get("timestamps"))}
	num := func(name string, min int64) (*int64, error) {
		v := q.Get(name)
		if v == "" {
			return nil, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < min {
			return nil, badRequest("invalid %s %q: must be a number >= %d", name, v, min)
		}
		return &n, nil
	}
	var err error
	if opts.TailLines, err = num("tailLines", 0); err != nil {
		return opts, err
	}
	if opts.SinceSeconds, err = num("sinceSeconds", 1); err != nil {
		return opts, err
	}
	if opts.LimitBytes, err = num("limitBytes", 1); err != nil {
		return opts, err
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return opts, badRequest("invalid sinceTime %q: must be RFC 3339 (2006-01-02T15:04:05Z)", v)
		}
		mt := metav1.NewTime(t)
		opts.SinceTime = &mt
	}
	if opts.SinceSeconds != nil && opts.SinceTime != nil {
		return opts, badRequest("at most one of sinceTime or sinceSeconds may be specified")
	}
	return opts, nil
}

// Interface guard: the options are Kubernetes' own.
