package main

import (
	"github.com/spf13/cobra"

	"github.com/flotilla-dev/flotilla/schema"
)

func newVetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "vet PATH...",
		Short: "Check manifests with Flotilla's CUE schema, as a commit is checked before it is applied",
		Long: `Check manifest files or directories (YAML, JSON, CUE) with the same CUE
schema that every commit is checked with. Prints one line per problem,
FILE:LINE:COL: FIELD: REASON (warnings say "warning:"), and exits 1 if there
is any error, 0 otherwise.`,
		Example: `  flotilla vet examples/hello
  flotilla vet deployment.yaml service.yaml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := schema.Vet(cmd.OutOrStdout(), args); code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
}
