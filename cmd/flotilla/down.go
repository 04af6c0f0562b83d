package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"

	"github.com/spf13/cobra"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/cmd/flotilla/internal/lab"
	"github.com/flotilla-dev/flotilla/netfabric"
	"github.com/flotilla-dev/flotilla/netfabric/svcproxy"
	"github.com/flotilla-dev/flotilla/node/podman"
)

// hostSettings are what `up` made on the host, recorded in the data dir so
// that `down` undoes exactly that.
type hostSettings struct {
	PodCIDR       string `json:"podCIDR"`
	Bridge        string `json:"bridge"`
	NetNSPrefix   string `json:"netnsPrefix"`
	NFTable       string `json:"nftTable"`
	PodmanSocket  string `json:"podmanSocket,omitempty"`
	PodmanRoot    string `json:"podmanRoot,omitempty"`
	PodmanRunRoot string `json:"podmanRunRoot,omitempty"`
	PodmanDriver  string `json:"podmanStorageDriver,omitempty"`
}

const hostSettingsFile = "host.json"

func (o *upOptions) hostSettings() hostSettings {
	return hostSettings{PodCIDR: o.podCIDR, Bridge: o.bridge, NetNSPrefix: o.netnsPrefix, NFTable: o.nftTable,
		PodmanSocket: o.podmanSocket, PodmanRoot: o.podmanRoot, PodmanRunRoot: o.podmanRunRoot, PodmanDriver: o.podmanDriver}
}

// podmanRuntime connects to the Podman socket h names, or starts this
// node's own Podman service (stop it with the returned func).
func podmanRuntime(ctx context.Context, dataDir string, h hostSettings, log *slog.Logger) (*podman.Runtime, func(), error) {
	if h.PodmanSocket != "" {
		rt, err := podman.Connect(ctx, h.PodmanSocket)
		if err != nil {
			return nil, nil, fmt.Errorf("connect to Podman at %s: %w", h.PodmanSocket, err)
		}
		return rt, func() {}, nil
	}
	svc, err := podman.StartService(ctx, podman.ServiceConfig{
		DataDir: filepath.Join(dataDir, "podman"), Root: h.PodmanRoot, RunRoot: h.PodmanRunRoot, StorageDriver: h.PodmanDriver,
		Logger: log.With("component", "podman"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("start Podman: %w (is podman installed? `make deps` installs it)", err)
	}
	return svc.Runtime, svc.Stop, nil
}

func saveHostSettings(dataDir string, h hostSettings) error {
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dataDir, hostSettingsFile), data, 0o600)
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
	data, err := os.ReadFile(filepath.Join(dataDir, hostSettingsFile))
	if err != nil {
		return fmt.Errorf("no cluster of `flotilla up` in %s (%w); pass --data-dir", dataDir, err)
	}
	var h hostSettings
	if err := json.Unmarshal(data, &h); err != nil {
		return fmt.Errorf("read %s: %w", hostSettingsFile, err)
	}
	// The store is locked while `up` runs: refuse to pull the rug. (An
	// agent's data dir has no store.)
	if db := filepath.Join(dataDir, "db"); exists(db) {
		st, err := store.Open(store.Config{Dir: db})
		// Opened without the Secrets' keys, an unlocked store refuses
		// with ErrEncryptionKeys: not running.
		if err != nil && !errors.Is(err, store.ErrEncryptionKeys) {
			return fmt.Errorf("flotilla up still seems to run with %s (stop it first): %w", dataDir, err)
		}
		if st != nil {
			st.Close()
		}
	}

	rt, stopPodman, err := podmanRuntime(ctx, dataDir, h, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer stopPodman()
	pods, err := rt.ListPods(ctx)
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	var errs []error
	for _, p := range pods {
		say("removing pod %s/%s", p.Namespace, p.Name)
		if err := rt.StopPod(ctx, p.ID, grace); err != nil {
			errs = append(errs, err)
		}
		if err := rt.RemovePod(ctx, p.ID); err != nil {
			errs = append(errs, err)
		}
	}
	// The removed pods' volumes: emptyDirs, configMap and secret files (their
	// tmpfs mounts first). hostPath and persistent volume data stay.
	podDir := filepath.Join(dataDir, "pods")
	if err := lab.UnmountUnder(podDir); err != nil {
		errs = append(errs, err)
	} else if err := os.RemoveAll(podDir); err != nil {
		errs = append(errs, fmt.Errorf("remove the pods' volumes: %w", err))
	}
	_, cidr, err := net.ParseCIDR(h.PodCIDR)
	if err != nil {
		return fmt.Errorf("%s: pod CIDR %q: %w", hostSettingsFile, h.PodCIDR, err)
	}
	fabric, err := netfabric.New(netfabric.Config{PodCIDR: cidr, Bridge: h.Bridge, NetNSPrefix: h.NetNSPrefix,
		NFTable: h.NFTable, StateDir: filepath.Join(dataDir, "net")})
	if err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	say("removing the pod network (bridge %s) and the service addresses", h.Bridge)
	errs = append(errs, fabric.Destroy(ctx))
	if pod, err := netip.ParsePrefix(cidr.String()); err == nil {
		if proxy, err := svcproxy.New(svcproxy.Config{Table: svcTable(h.NFTable), PodCIDR: pod, Bridge: h.Bridge}); err == nil {
			errs = append(errs, proxy.Destroy(ctx))
		}
	}
	if err := errors.Join(errs...); err != nil {
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

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
