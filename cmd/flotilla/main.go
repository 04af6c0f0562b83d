// Command flotilla is the one Flotilla binary: the all-in-one `up`, and the
// CLI verbs that talk to a running cluster's API. main only dispatches; each
// role's wiring lives in its own file (up.go), and the parts it wires are the
// top-level packages of the module.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/flotilla-dev/flotilla/schema"
)

// exitError carries an exit code without printing more than its message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	schema.MaybeRunSandbox() // first: this binary is also the sandbox that evaluates .cue manifests
	root := newRootCommand()
	if err := root.Execute(); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(os.Stderr, ee.msg)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "flotilla",
		Short: "Flotilla: a GitOps container orchestrator for small clusters and edge sites",
		Long: `Flotilla runs the Kubernetes manifests of a Git repository on Podman.
Commit to the repository and the cluster follows: every commit is checked with
the CUE schema (the one 'cue vet' uses), applied whole or refused whole.

Start a one-node cluster on this machine with the bundled example:
  flotilla up

Then, from another shell:
  flotilla get pods
  flotilla status`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG, then DATA_DIR/kubeconfig.yaml of the default data dir)")
	root.PersistentFlags().StringVarP(&g.namespace, "namespace", "n", "default", "the namespace to use")
	root.AddCommand(
		newUpCommand(),
		newDownCommand(),
		newServerCommand(g),
		newAgentCommand(),
		newLabCommand(),
		newGetCommand(g),
		newDescribeCommand(g),
		newLogsCommand(g),
		newStatusCommand(g),
		newSyncCommand(g),
		newSecretsCommand(g),
		newSnapshotCommand(g),
		newDeleteCommand(g),
		newKubeconfigCommand(),
		newTokenCommand(g),
		newVetCommand(),
		newVersionCommand(),
	)
	return root
}
