package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

func newDeleteCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete TYPE NAME...",
		Short: "Delete objects that Git does not own (a controller's pod, to have it replaced)",
		Long: `Delete objects that Git does not own, such as a pod of a Deployment (its
ReplicaSet replaces it). Objects that come from the Git repository are deleted
by removing them from the repository and committing: the API refuses to
delete them here.`,
		Example: `  flotilla delete pod hello-7d9c-x2x4q`,
		Args:    cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, c, ns, err := g.target(args[0])
			if err != nil {
				return err
			}
			var failed []string
			for _, name := range args[1:] {
				if _, err := c.Delete(cmd.Context(), k.Resource, ns, name, store.DeleteOptions{}); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "error: %v\n", notFoundHint(err, k, name, ns))
					failed = append(failed, name)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %q deleted\n", strings.ToLower(k.Kind), name)
			}
			if len(failed) > 0 {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	return cmd
}
