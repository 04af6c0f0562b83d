package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/schema"
)

func newSyncCommand(g *globalFlags) *cobra.Command {
	var (
		wait    bool
		quiet   bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Fetch the repository now and apply its newest commit (--wait: and follow the rollout)",
		Long: `Fetch the repository now and apply its newest commit, instead of waiting for
the next poll, and print the sync status. With --wait, then follow every
Deployment's rollout until the new commit is fully rolled out, or say why not.

The server answers within 20 seconds: a sync still running then (a big
commit, a slow or stalled remote) goes on, and sync says so.

Exit status: 0 when the commit is applied (and, with --wait, rolled out), 1
when it is refused or the fetch failed, 2 when the rollout did not finish
within --timeout, 3 when the sync was still running (see flotilla status).`,
		Example: `  flotilla sync
  flotilla sync --wait --timeout 2m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if quiet {
				out = io.Discard
			}
			fmt.Fprintln(out, "syncing ...")
			st, err := c.Sync(cmd.Context())
			if err != nil {
				return fmt.Errorf("sync: %w", err)
			}
			printSyncStatus(out, st, time.Now())
			if c := meta.FindStatusCondition(st.Status.Conditions, gitsync.ConditionReconciling); c != nil && c.Reason == gitsync.ReasonProgressing {
				fmt.Fprintf(out, "In progress:   %s\n", c.Message)
				return &exitError{code: 3}
			}
			switch st.Status.Result {
			case schema.SyncRefused, schema.SyncFetchFailed:
				return &exitError{code: 1}
			}
			if !wait {
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if err := waitRollout(ctx, c, out); err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "then follow the rollout until every Deployment runs the new commit")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing (the exit status still tells)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for the rollout")
	return cmd
}

// waitRollout polls the Deployments until every one is rolled out, printing
// a line whenever one's progress changes (kubectl rollout status wording).
func waitRollout(ctx context.Context, c *apiclient.Client, out io.Writer) error {
	last := map[string]string{}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		objs, _, err := c.List(ctx, "deployments", store.ListOptions{})
		if err != nil {
			return fmt.Errorf("list deployments: %w", err)
		}
		done := true
		for _, o := range objs {
			d := o.(*appsv1.Deployment)
			msg, ok := rolloutProgress(d)
			key := d.Namespace + "/" + d.Name
			if last[key] != msg {
				fmt.Fprintln(out, msg)
				last[key] = msg
			}
			done = done && ok
		}
		if done {
			fmt.Fprintln(out, "all rolled out")
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rollout not finished: %w (see `flotilla get pods` and `flotilla describe deployment NAME`)", ctx.Err())
		case <-tick.C:
		}
	}
}

// rolloutProgress says where a Deployment's rollout is, and whether it is
// done, as `kubectl rollout status` judges it.
func rolloutProgress(d *appsv1.Deployment) (string, bool) {
	want := replicas(d.Spec.Replicas)
	s := d.Status
	name := fmt.Sprintf("deployment %q", d.Name)
	switch {
	case s.ObservedGeneration < d.Generation:
		return fmt.Sprintf("Waiting for %s spec update to be observed...", name), false
	case s.UpdatedReplicas < want:
		return fmt.Sprintf("Waiting for %s rollout to finish: %d out of %d new replicas have been updated...", name, s.UpdatedReplicas, want), false
	case s.Replicas > s.UpdatedReplicas:
		return fmt.Sprintf("Waiting for %s rollout to finish: %d old replicas are pending termination...", name, s.Replicas-s.UpdatedReplicas), false
	case s.AvailableReplicas < s.UpdatedReplicas:
		return fmt.Sprintf("Waiting for %s rollout to finish: %d of %d updated replicas are available...", name, s.AvailableReplicas, s.UpdatedReplicas), false
	}
	return fmt.Sprintf("%s successfully rolled out", name), true
}
