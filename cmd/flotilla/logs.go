package main

import (
	"github.com/spf13/cobra"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
)

func newLogsCommand(g *globalFlags) *cobra.Command {
	var (
		container string
		follow    bool
		tail      int64
	)
	cmd := &cobra.Command{
		Use:   "logs POD",
		Short: "Print the logs of a container in a pod",
		Long: `Print the logs of a container in a pod, as its node keeps them.

A node keeps at most 10 MiB of each container's output: when a container has
written that much, its log starts again, empty (Podman's conmon cuts the
file; no older file is kept). -f goes on across the cut.`,
		Example: `  flotilla logs hello-7d9c-x2x4q
  flotilla logs -f hello-7d9c-x2x4q -c web --tail 20`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			opts := apiserver.LogOptions{Container: container, Follow: follow}
			if tail >= 0 {
				opts.TailLines = &tail
			}
			return c.PodLogs(cmd.Context(), g.namespace, args[0], opts, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVarP(&container, "container", "c", "", "the container (default: the pod's only or first container)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming new output")
	cmd.Flags().Int64Var(&tail, "tail", -1, "print only the last N lines (default: all)")
	return cmd
}
