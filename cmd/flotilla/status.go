package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/flotilla-dev/flotilla/schema"
)

func newStatusCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the Git sync status: the live commit, the last attempt, and every problem",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			obj, err := c.Get(cmd.Context(), "syncstatuses", "", schema.SyncStatusName)
			if err != nil {
				if isNotFound(err) {
					return fmt.Errorf("no sync has run yet: the server has not fetched its repository")
				}
				return err
			}
			st := obj.(*schema.SyncStatus)
			printSyncStatus(cmd.OutOrStdout(), st, time.Now())
			if st.Status.Result == schema.SyncRefused || st.Status.Result == schema.SyncFetchFailed {
				return &exitError{code: 1}
			}
			return nil
		},
	}
}

// printSyncStatus writes the status as `flotilla status` shows it.
func printSyncStatus(w io.Writer, st *schema.SyncStatus, now time.Time) {
	s := st.Status
	fmt.Fprintf(w, "Repository:    %s\n", st.Spec.URL)
	if st.Spec.Branch != "" || st.Spec.Path != "" {
		fmt.Fprintf(w, "Branch/path:   %s %s\n", orDefault(st.Spec.Branch, "(HEAD)"), orDefault(st.Spec.Path, "/"))
	}
	if s.LastAppliedCommit != "" {
		when := ""
		if s.LastAppliedTime != nil {
			when = ", applied " + duration.HumanDuration(now.Sub(s.LastAppliedTime.Time)) + " ago"
		}
		fmt.Fprintf(w, "Live commit:   %s %q (%d objects%s)\n", shortCommit(s.LastAppliedCommit), s.LastAppliedMessage, s.Objects, when)
	} else {
		fmt.Fprintf(w, "Live commit:   none yet\n")
	}
	if s.LastAttemptedCommit != "" && s.LastAttemptedCommit != s.LastAppliedCommit {
		fmt.Fprintf(w, "Last attempt:  %s\n", shortCommit(s.LastAttemptedCommit))
	}
	result := string(s.Result)
	if s.Message != "" {
		result += ": " + s.Message
	}
	fmt.Fprintf(w, "Result:        %s\n", result)
	if len(s.Problems) > 0 {
		fmt.Fprintln(w, "Problems:")
		for _, p := range s.Problems {
			fmt.Fprintf(w, "  %s\n", p.String())
		}
	}
	if s.Result == schema.SyncRefused {
		fmt.Fprintln(w, "The live commit keeps running. Fix the problems and commit again (or `git revert` the bad commit).")
	}
}
