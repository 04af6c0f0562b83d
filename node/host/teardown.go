package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/mounts"
	"github.com/flotilla-dev/flotilla/netfabric"
	"github.com/flotilla-dev/flotilla/netfabric/svcproxy"
)

// ErrNoNode means a data dir holds no node's settings: nothing to tear
// down there.
var ErrNoNode = errors.New("no node's settings")

// Teardown removes what a node of dataDir left on the host after it
// stopped: every pod its Podman runs (stopped with grace, then removed),
// the pods' volumes (emptyDirs, configMap and secret files; hostPath and
// persistent volume data stay), the pod network (bridge, namespaces,
// firewall rules) and the service proxy's rules. The data dir stays. It
// refuses while a control plane still holds the data dir's store. say
// tells the user each step.
func Teardown(ctx context.Context, dataDir string, grace time.Duration, say func(string, ...any)) error {
	s, err := LoadSettings(dataDir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %w", ErrNoNode, err)
	}
	if err != nil {
		return err
	}
	_, cidr, err := net.ParseCIDR(s.PodCIDR)
	if err != nil {
		return fmt.Errorf("%s: pod CIDR %q: %w", SettingsFile, s.PodCIDR, err)
	}
	if err := storeUnused(dataDir); err != nil {
		return err
	}

	rt, stopPodman, err := startPodman(ctx, dataDir, s, slog.New(slog.DiscardHandler))
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
	errs = append(errs, removePodDir(dataDir))
	fabric, err := netfabric.New(netfabric.Config{PodCIDR: cidr, Bridge: s.Bridge, NetNSPrefix: s.NetNSPrefix,
		NFTable: s.NFTable, StateDir: filepath.Join(dataDir, "net")})
	if err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	say("removing the pod network (bridge %s) and the service addresses", s.Bridge)
	errs = append(errs, fabric.Destroy(ctx))
	if pod, err := netip.ParsePrefix(cidr.String()); err == nil {
		if proxy, err := svcproxy.New(svcproxy.Config{Table: svcTable(s.NFTable), PodCIDR: pod, Bridge: s.Bridge}); err == nil {
			errs = append(errs, proxy.Destroy(ctx))
		}
	}
	return errors.Join(errs...)
}

// storeUnused refuses a data dir whose store is still open (a running
// `flotilla up` holds its lock). An agent's data dir has no store.
func storeUnused(dataDir string) error {
	db := filepath.Join(dataDir, "db")
	if _, err := os.Stat(db); err != nil {
		return nil
	}
	st, err := store.Open(store.Config{Dir: db})
	// Opened without the Secrets' keys, an unlocked store refuses with
	// ErrEncryptionKeys: not running.
	if err != nil && !errors.Is(err, store.ErrEncryptionKeys) {
		return fmt.Errorf("flotilla up still seems to run with %s (stop it first): %w", dataDir, err)
	}
	if st != nil {
		st.Close()
	}
	return nil
}

// removePodDir removes the pods' volumes, their tmpfs mounts first.
func removePodDir(dataDir string) error {
	podDir := filepath.Join(dataDir, "pods")
	if err := mounts.UnmountUnder(podDir); err != nil {
		return err
	}
	if err := os.RemoveAll(podDir); err != nil {
		return fmt.Errorf("remove the pods' volumes: %w", err)
	}
	return nil
}
