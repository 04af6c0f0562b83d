package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/gitsync"
)

// upOptions are the flags of `flotilla up`.
type upOptions struct {
	dataDir      string
	repo         string
	branch       string
	path         string
	apiAddr      string
	agentAddr    string // the in-process agent's endpoint: metrics, stats
	podmanSocket string
	podCIDR      string
	nodeName     string
	interval     time.Duration
	gitTimeout   time.Duration
	git          gitOptions
	secretsKey   string // --secrets-key-file
	verbose      bool
	log          logOptions // rotation of DATA_DIR/flotilla.log

	// For several clusters on one host (tests, the lab): keep them apart.
	podmanRoot    string
	podmanRunRoot string
	podmanDriver  string
	bridge        string
	netnsPrefix   string
	nftTable      string

	serviceOptions
	services serviceAddrOptions
}

func newUpCommand() *cobra.Command {
	o := &upOptions{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a one-node cluster on this machine: API server, controllers, agent, Podman and Git sync",
		Long: `Run a whole one-node Flotilla cluster in this process: the store, the API
server, the controllers and scheduler, the node agent with its own Podman
service, the pod network, and the Git sync.

With no --repo, it copies the bundled examples/hello into a new Git
repository under the data dir, prints where it is, and picks up every commit
made there at once. Ctrl-C stops the control plane and leaves the pods
running; 'flotilla up' again resumes from the store.`,
		Example: `  flotilla up                                   # the bundled example
  flotilla up --repo /srv/git/site.git --branch main --path clusters/edge
  flotilla up --repo ssh://git@git.example/ops/site.git --git-ssh-key-file ~/.flotilla/deploy_key --git-known-hosts-file ~/.flotilla/known_hosts
  flotilla up --repo /srv/git/site.git --verify-signatures --trusted-keys-file team.asc`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runUp(ctx, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", apiclient.DefaultDataDir(), "where the store, certificates, kubeconfig and the example repository live")
	f.StringVar(&o.repo, "repo", "", "Git repository to sync: a URL or a local path (default: a copy of examples/hello under the data dir)")
	f.StringVar(&o.branch, "branch", "", "branch to follow (default: the repository's HEAD)")
	f.StringVar(&o.path, "path", "", "sub-path of the repository that holds the manifests (default: all of it)")
	f.StringVar(&o.apiAddr, "api-addr", "127.0.0.1:6443", "address of the API server")
	f.StringVar(&o.agentAddr, "agent-addr", "127.0.0.1:10250", "address of the agent's endpoint (metrics, stats), as the kubelet's port; \"\" for none")
	f.StringVar(&o.podCIDR, "pod-cidr", "10.244.0.0/24", "this node's pod addresses")
	f.DurationVar(&o.interval, "interval", 15*time.Second, "how often to poll the repository (commits to a local repository are picked up at once: its refs are watched)")
	f.DurationVar(&o.gitTimeout, "git-timeout", gitsync.DefaultFetchTimeout, "how long one ref listing or fetch may take before it fails and is retried with back-off")
	o.git.addFlags(f)
	o.services.addFlags(f)
	addSecretsKeyFlag(f, &o.secretsKey)
	o.addNodeFlags(f)
	return cmd
}

// addNodeFlags adds the flags of a node's own parts, which up and agent
// share: its name, its Podman, its pod network's names (several clusters on
// one host keep them apart), its service plane, and logging.
func (o *upOptions) addNodeFlags(f *pflag.FlagSet) {
	f.StringVar(&o.nodeName, "node-name", "", "this node's name (default: the host name)")
	f.StringVar(&o.podmanSocket, "podman-socket", "", "use this Podman API socket instead of starting a Podman service")
	f.StringVar(&o.podmanRoot, "podman-root", "", "Podman storage root for this node's own Podman service (default: the machine's, so podman ps shows the pods); needs --podman-runroot")
	f.StringVar(&o.podmanRunRoot, "podman-runroot", "", "Podman run root, with --podman-root (at most 50 characters)")
	f.StringVar(&o.podmanDriver, "podman-storage-driver", "", "Podman storage driver for --podman-root (\"vfs\" needs no mounts; default: Podman's)")
	f.StringVar(&o.bridge, "bridge", "flotilla0", "name of the pod network bridge (one per cluster on a host)")
	f.StringVar(&o.netnsPrefix, "netns-prefix", "flo-", "prefix of the pods' network namespace names (one per cluster on a host)")
	f.StringVar(&o.nftTable, "nft-table", "flotilla", "name of the nftables table of the pod network; the service proxy's is <name>-svc (one per cluster on a host)")
	o.serviceOptions.addFlags(f)
	f.BoolVarP(&o.verbose, "verbose", "v", false, "log every component's debug messages")
	o.log.addFlags(f)
}

// roleLogger returns a role's logger: everything at info (debug with
// verbose) to the file, and warnings and errors also to stderr, so that the
// terminal shows the role's progress lines and what needs attention.
func roleLogger(file, stderr io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewMultiHandler(
		slog.NewTextHandler(file, &slog.HandlerOptions{Level: level}),
		slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: max(level, slog.LevelWarn)}),
	))
}

// ensureSecret returns the secret kept in the data dir file name, making a
// random one the first time (the API token, the webhook secret).
func ensureSecret(dataDir, name string) (string, error) {
	path := filepath.Join(dataDir, name)
	switch data, err := os.ReadFile(path); {
	case err == nil && len(strings.TrimSpace(string(data))) > 0:
		return strings.TrimSpace(string(data)), nil
	case err == nil:
		return "", fmt.Errorf("%s is empty: restore it from a backup, or remove it to make a new one (clients holding the old one must then be given the new one)", path)
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("read %s: %w; fix its permissions or restore it from a backup", path, err)
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := hex.EncodeToString(b)
	if err := atomicfile.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", err
	}
	return token, nil
}

// listenHost is the host part of the API address, for the certificate.
func listenHost(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return "127.0.0.1"
	}
	return host
}
