package main

import (
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/internal/atomicfile"
)

type kubeconfigOptions struct {
	dataDir string
	user    string
	groups  []string
	ttl     time.Duration
	out     string
}

func newKubeconfigCommand() *cobra.Command {
	o := &kubeconfigOptions{}
	cmd := &cobra.Command{
		Use:   "kubeconfig --user NAME [--group GROUP]... [--ttl DURATION]",
		Short: "Mint a kubeconfig with a client certificate for a user (run on the server)",
		Long: `Mint a kubeconfig whose client certificate, signed by the cluster CA, names
the user (the certificate's common name) and its groups (its organizations).
What the user may do is decided by RBAC: bind the user or a group to a role
with a RoleBinding or ClusterRoleBinding committed to the Git repository.
The built-in ClusterRoles are cluster-admin, admin, edit and view; the group
system:masters may do anything.

It runs where the cluster CA's key is (the server's data directory) and
needs no connection to the API. The kubeconfig holds a private key: it is
written with mode 0600, or to standard output.`,
		Example: `  flotilla kubeconfig --user ann --group shop-devs > ann.kubeconfig
  flotilla kubeconfig --user ci --ttl 24h -o ci.kubeconfig
  kubectl --kubeconfig ann.kubeconfig auth whoami`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runKubeconfig(o, cmd.OutOrStdout()) },
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", apiclient.DefaultDataDir(), "the server's data directory (its tls/ holds the cluster CA)")
	f.StringVar(&o.user, "user", "", "the user name (required)")
	f.StringArrayVar(&o.groups, "group", nil, "a group the user is in (repeat for more)")
	f.DurationVar(&o.ttl, "ttl", apiserver.DefaultClientCertTTL, "how long the certificate is valid")
	f.StringVarP(&o.out, "output-file", "o", "", "write the kubeconfig to this file (mode 0600) instead of standard output")
	_ = cmd.MarkFlagRequired("user")
	return cmd
}

func runKubeconfig(o *kubeconfigOptions, out io.Writer) error {
	admin := filepath.Join(o.dataDir, "kubeconfig.yaml")
	server, caPEM, err := apiclient.ServerOf(admin)
	if err != nil {
		return fmt.Errorf("read the server's address from %s: %w (pass the server's --data-dir)", admin, err)
	}
	certPEM, keyPEM, err := apiserver.IssueClientCert(filepath.Join(o.dataDir, "tls"), o.user, o.groups, o.ttl)
	if err != nil {
		return err
	}
	data, err := apiclient.Kubeconfig(server, caPEM, apiclient.Credential{CertPEM: certPEM, KeyPEM: keyPEM})
	if err != nil {
		return err
	}
	if o.out == "" {
		_, err = out.Write(data)
		return err
	}
	if err := atomicfile.WriteFile(o.out, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	return nil
}
