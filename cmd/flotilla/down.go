package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/node/host"
)

// hostSettings are the names of what up and agent make on the host
// (flags), which `down` undoes.
func (o *upOptions) hostSettings() host.Settings {
	return host.Settings{PodCIDR: o.podCIDR, Bridge: o.bridge, NetNSPrefix: o.netnsPrefix, NFTable: o.nftTable,
		PodmanSocket: o.podmanSocket, PodmanRoot: o.podmanRoot, PodmanRunRoot: o.podmanRunRoot, PodmanDriver: o.podmanDriver}
}

func newDownCommand() *cobra.Command {
	var (
		dataDir string
		purge   bool
		grace   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove what `flotilla up` left running: its pods, its Podman service, its pod network",
		Long: `Remove what 'flotilla up' left running on this host after it stopped: every
pod it started (stopped with a grace period, then removed), the pod network
(bridge, network namespaces, firewall rules). The store and the repository in
the data dir are kept, so 'flotilla up' starts the cluster again; --purge
removes the data dir too.`,
		Example: `  flotilla down
  flotilla down --purge --data-dir /tmp/try`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDown(cmd.Context(), dataDir, purge, grace, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", apiclient.DefaultDataDir(), "the data dir that flotilla up used")
	cmd.Flags().BoolVar(&purge, "purge", false, "also remove the data dir: the store, the repository copy, certificates")
	cmd.Flags().DurationVar(&grace, "grace", 10*time.Second, "how long each pod gets to stop before it is killed")
	return cmd
}

func runDown(ctx context.Context, dataDir string, purge bool, grace time.Duration, out io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("flotilla down needs root, as flotilla up does (try sudo)")
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, "flotilla: "+format+"\n", args...) }
	err := host.Teardown(ctx, dataDir, grace, say)
	if errors.Is(err, host.ErrNoNode) {
		return fmt.Errorf("no cluster of `flotilla up` in %s (%w); pass --data-dir", dataDir, err)
	}
	if err != nil {
		return fmt.Errorf("down: %w", err)
	}
	if purge {
		say("removing %s", dataDir)
		if err := os.RemoveAll(dataDir); err != nil {
			return fmt.Errorf("remove the data dir: %w", err)
		}
	}
	say("down")
	return nil
}
