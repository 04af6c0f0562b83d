package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

func newLogsCommand(g *globalFlags) *cobra.Command {
	var (
		container  string
		follow     bool
		tail       int64
		previous   bool
		timestamps bool
		since      time.Duration
		sinceTime  string
		limitBytes int64
	)
	cmd := &cobra.Command{
		Use:   "logs POD | TYPE/NAME",
		Short: "Print the logs of a container in a pod",
		Long: `Print the logs of a container in a pod, as its node keeps them.

A node keeps at most 10 MiB of each container's output: when a container has
written that much, its log starts again, empty (Podman's conmon cuts the
file; no older file is kept). -f goes on across the cut.`,
		Example: `  flotilla logs hello-7d9c-x2x4q
  flotilla logs -f hello-7d9c-x2x4q -c web --tail 20
  flotilla logs deploy/hello     # one of its pods, as kubectl picks it`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			opts := corev1.PodLogOptions{Container: container, Follow: follow, Previous: previous, Timestamps: timestamps}
			if tail >= 0 {
				opts.TailLines = &tail
			}
			switch {
			case since > 0 && sinceTime != "":
				return fmt.Errorf("at most one of --since and --since-time")
			case since > 0:
				secs := int64(max(since.Round(time.Second), time.Second) / time.Second)
				opts.SinceSeconds = &secs
			case sinceTime != "":
				t, err := time.Parse(time.RFC3339, sinceTime)
				if err != nil {
					return fmt.Errorf("--since-time %q: must be RFC 3339, e.g. 2026-12-06T07:00:00Z", sinceTime)
				}
				mt := metav1.NewTime(t)
				opts.SinceTime = &mt
			}
			if limitBytes > 0 {
				opts.LimitBytes = &limitBytes
			}
			pod, err := podFor(cmd.Context(), c, g.namespace, args[0], cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return c.PodLogs(cmd.Context(), g.namespace, pod, opts, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVarP(&container, "container", "c", "", "the container (default: the pod's only or first container)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming new output")
	cmd.Flags().Int64Var(&tail, "tail", -1, "print only the last N lines (default: all)")
	cmd.Flags().BoolVarP(&previous, "previous", "p", false, "print the logs of the container's previous run (it restarted)")
	cmd.Flags().BoolVar(&timestamps, "timestamps", false, "put the time each line was written before it")
	cmd.Flags().DurationVar(&since, "since", 0, "only lines newer than this, e.g. 5s, 2m, 3h")
	cmd.Flags().StringVar(&sinceTime, "since-time", "", "only lines written after this time (RFC 3339)")
	cmd.Flags().Int64Var(&limitBytes, "limit-bytes", 0, "print at most this many bytes")
	return cmd
}

// podFor resolves kubectl's POD or TYPE/NAME argument of logs to a pod:
// pod/NAME is the pod; a Deployment, ReplicaSet or StatefulSet is one of
// the pods its selector picks — a ready one first, then a running one,
// the oldest among equals (kubectl's choice) — saying which when there
// are several.
func podFor(ctx context.Context, c *apiclient.Client, ns, arg string, say io.Writer) (string, error) {
	typ, name, ok := strings.Cut(arg, "/")
	if !ok {
		return arg, nil
	}
	k, found := schema.LookupKind(typ)
	if !found {
		return "", fmt.Errorf("the server doesn't have a resource type %q", typ)
	}
	if k.Resource == "pods" {
		return name, nil
	}
	obj, err := c.Get(ctx, k.Resource, ns, name)
	if err != nil {
		return "", notFoundHint(err, k, name, ns)
	}
	var sel *metav1.LabelSelector
	switch o := obj.(type) {
	case *appsv1.Deployment:
		sel = o.Spec.Selector
	case *appsv1.ReplicaSet:
		sel = o.Spec.Selector
	case *appsv1.StatefulSet:
		sel = o.Spec.Selector
	}
	if sel == nil {
		return "", fmt.Errorf("cannot get logs of %s: it has no pods (logs takes a pod, or a deployment, replicaset or statefulset)", arg)
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return "", fmt.Errorf("%s: selector: %w", arg, err)
	}
	objs, _, err := c.List(ctx, "pods", store.ListOptions{Namespace: ns, LabelSelector: s.String()})
	if err != nil {
		return "", err
	}
	if len(objs) == 0 {
		return "", fmt.Errorf("%s has no pods", arg)
	}
	pods := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		pods = append(pods, o.(*corev1.Pod))
	}
	rank := func(p *corev1.Pod) int {
		switch {
		case podReady(p):
			return 0
		case p.Status.Phase == corev1.PodRunning:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(pods, func(a, b *corev1.Pod) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return a.CreationTimestamp.Compare(b.CreationTimestamp.Time)
	})
	if len(pods) > 1 {
		fmt.Fprintf(say, "Found %d pods, using pod/%s\n", len(pods), pods[0].Name)
	}
	return pods[0].Name, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
