package host

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"
	"github.com/flotilla-dev/flotilla/node"
	"github.com/flotilla-dev/flotilla/node/podman"
)

// Settings are what a node makes on the host: its pod network's names and
// its Podman. New records them in the data dir (SettingsFile), so that
// Teardown undoes exactly that.
type Settings struct {
	// PodCIDR is the node's pod addresses ("10.244.0.0/24").
	PodCIDR string `json:"podCIDR"`
	// Bridge, NetNSPrefix and NFTable name the pod network's bridge, the
	// prefix of the pods' network namespaces and its nftables table (the
	// service proxy's is NFTable+"-svc"): several clusters on one host keep
	// them apart.
	Bridge      string `json:"bridge"`
	NetNSPrefix string `json:"netnsPrefix"`
	NFTable     string `json:"nftTable"`
	// PodmanSocket is a Podman API socket to use; "" starts the node's own
	// Podman service, with PodmanRoot, PodmanRunRoot and PodmanDriver as
	// its storage ("": the machine's).
	PodmanSocket  string `json:"podmanSocket,omitempty"`
	PodmanRoot    string `json:"podmanRoot,omitempty"`
	PodmanRunRoot string `json:"podmanRunRoot,omitempty"`
	PodmanDriver  string `json:"podmanStorageDriver,omitempty"`
}

// SettingsFile is the file in the data dir that holds the Settings.
const SettingsFile = "host.json"

// SaveSettings records s in dataDir.
func SaveSettings(dataDir string, s Settings) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dataDir, SettingsFile), data, 0o600)
}

// LoadSettings reads what SaveSettings recorded in dataDir; the error wraps
// fs.ErrNotExist when there is none.
func LoadSettings(dataDir string) (Settings, error) {
	data, err := os.ReadFile(filepath.Join(dataDir, SettingsFile))
	if err != nil {
		return Settings{}, err
	}
	var s Settings
	if err := json.Unmarshal(data, &s); err != nil {
		return Settings{}, fmt.Errorf("read %s: %w", SettingsFile, err)
	}
	return s, nil
}

// svcTable is the nftables table of the service proxy, beside the pod
// network's own table (so the isolation flag --nft-table covers both).
func svcTable(nftTable string) string { return nftTable + "-svc" }

// defaultPodmanRoot is where a root Podman keeps images and containers
// when no PodmanRoot is given.
const defaultPodmanRoot = "/var/lib/containers/storage"

// diskPressure is what the node agent watches for DiskPressure: the data
// dir's file system (store, pods' emptyDirs) and Podman's storage.
func diskPressure(dataDir string, s Settings) node.DiskPressureConfig {
	img := s.PodmanRoot
	if img == "" {
		img = defaultPodmanRoot
	}
	return node.DiskPressureConfig{NodeFS: dataDir, ImageFS: img}
}

// startPodman connects to the Podman socket s names, or starts this
// node's own Podman service under dataDir (stop it with the returned func).
func startPodman(ctx context.Context, dataDir string, s Settings, log *slog.Logger) (*podman.Runtime, func(), error) {
	if s.PodmanSocket != "" {
		rt, err := podman.Connect(ctx, s.PodmanSocket)
		if err != nil {
			return nil, nil, fmt.Errorf("connect to Podman at %s: %w", s.PodmanSocket, err)
		}
		return rt, func() {}, nil
	}
	svc, err := podman.StartService(ctx, podman.ServiceConfig{
		DataDir: filepath.Join(dataDir, "podman"), Root: s.PodmanRoot, RunRoot: s.PodmanRunRoot, StorageDriver: s.PodmanDriver,
		Logger: log.With("component", "podman"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("start Podman: %w (is podman installed? `make deps` installs it)", err)
	}
	return svc.Runtime, svc.Stop, nil
}
