package main

import (
	"fmt"

	"github.com/spf13/cobra"
	psaapi "k8s.io/pod-security-admission/api"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/gitsync/sops"
	"github.com/flotilla-dev/flotilla/schema"
)

func newVetCommand() *cobra.Command {
	var podSecurity string
	cmd := &cobra.Command{
		Use:   "vet PATH...",
		Short: "Check manifests with Flotilla's CUE schema and Pod Security, as a commit is checked before it is applied",
		Long: `Check manifest files or directories (YAML, JSON, CUE) with the same CUE
schema that every commit is checked with, and their pods and pod templates
with Pod Security admission: the levels of the Namespace manifests among
them (pod-security.kubernetes.io/enforce and warn labels), the default
level for other namespaces. Prints one line per problem,
FILE:LINE:COL: FIELD: REASON (warnings, such as the warn level's findings,
say "warning:"), and exits 1 if there is any error, 0 otherwise.

A SOPS-encrypted manifest is checked without its key: its sops block
(version, lastmodified, mac, age recipients), that every value it encrypts
is an ENC[...] string, and the rest of the manifest with the schema.`,
		Example: `  flotilla vet examples/hello
  flotilla vet deployment.yaml service.yaml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			v, err := schema.NewValidator()
			if err != nil {
				fmt.Fprintf(out, "flotilla vet: %v\n", err)
				return &exitError{code: 2}
			}
			ms, ps := v.LoadPathsFiltered(sops.VetFilter, args...)
			psa, err := admission.VetPodSecurity(ms, psaapi.Level(podSecurity))
			if err != nil {
				return err
			}
			ps = append(ps, psa...)
			for _, p := range ps {
				fmt.Fprintln(out, p.String())
			}
			if len(ps.Errors()) > 0 {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&podSecurity, "pod-security-default", string(admission.DefaultPodSecurity), "Pod Security level of namespaces that the manifests do not label, as the server's flag of that name")
	return cmd
}
