package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/snapshot"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/cluster/store/encrypt"
	"github.com/flotilla-dev/flotilla/internal/atomicfile"
)

// snapshotPassphraseEnv is where the snapshot commands read the passphrase
// when no --passphrase-file is given.
const snapshotPassphraseEnv = "FLOTILLA_SNAPSHOT_PASSPHRASE"

// snapshotHandler serves apiserver.SnapshotSavePath: the cluster's
// snapshot, its keys encrypted under the request's passphrase, streamed.
func snapshotHandler(cp *controlPlane) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			writeStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "POST to save a snapshot")
			return
		}
		var req apiserver.SnapshotRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 4<<10)).Decode(&req); err != nil {
			writeStatus(w, http.StatusBadRequest, "BadRequest", "the body must be a SnapshotRequest: "+err.Error())
			return
		}
		if len(req.Passphrase) < snapshot.MinPassphrase {
			writeStatus(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("the passphrase has %d characters; give at least %d", len(req.Passphrase), snapshot.MinPassphrase))
			return
		}
		keys, err := clusterKeys(cp)
		if err != nil {
			writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		// The snapshot holds every write acknowledged before the request,
		// whichever server answers it: this one applies the log up to the
		// leader's commit first, as a linearizable read does.
		if err := cp.raft.ReadIndex(r.Context()); err != nil {
			writeStatus(w, http.StatusServiceUnavailable, "ServiceUnavailable",
				"this server cannot tell that it holds every acknowledged write (no leader reached): "+err.Error()+"; retry, or ask another server")
			return
		}
		host, _ := os.Hostname()
		meta := snapshot.Meta{Created: time.Now().UTC(), Revision: cp.store.Revision(), Server: host}
		w.Header().Set("Content-Type", "application/x-tar")
		// Once streaming, an error can only cut the answer short, which
		// the client's check of the file tells.
		if err := snapshot.WriteIn(cp.dataDir, w, meta, keys, req.Passphrase, cp.store.Snapshot); err != nil {
			cp.log.Error("snapshot save failed", "err", err)
		}
	})
}

// clusterKeys reads the keys a restored server needs besides the store.
func clusterKeys(cp *controlPlane) (snapshot.Keys, error) {
	var k snapshot.Keys
	var err error
	if k.CACert, err = os.ReadFile(filepath.Join(cp.tlsDir, apiserver.CAFile)); err != nil {
		return k, fmt.Errorf("read the CA certificate: %w", err)
	}
	if k.CAKey, err = os.ReadFile(filepath.Join(cp.tlsDir, apiserver.CAKeyFile)); err != nil {
		return k, fmt.Errorf("read the CA key: %w", err)
	}
	if k.SecretsKeyFile, err = os.ReadFile(cp.secretsKeyFile); err != nil {
		return k, fmt.Errorf("read the Secrets key file: %w", err)
	}
	k.WebhookSecret = []byte(cp.webhook + "\n")
	return k, nil
}

// readPassphrase reads the snapshot passphrase from file, or from the
// environment.
func readPassphrase(file string) (string, error) {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read the passphrase: %w", err)
		}
		return strings.TrimRight(string(data), "\r\n"), nil
	}
	if p := os.Getenv(snapshotPassphraseEnv); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("no passphrase: pass --passphrase-file FILE or set %s (at least %d characters); keep it apart from the snapshots",
		snapshotPassphraseEnv, snapshot.MinPassphrase)
}

func newSnapshotCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Back the cluster up, and make a new server of a backup",
	}
	var passFile string
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent snapshot of the running cluster to FILE",
		Long: `Save a snapshot of the running cluster to FILE (mode 0600): every object
(also the ones Git does not hold: claim bindings, cluster IPs and node
ports, load-balancer addresses, pod CIDRs, tokens) and the keys a new
server needs to be this cluster (the CA, the Secrets key, the webhook
secret). The keys are encrypted with the passphrase; Secrets stay sealed
under the Secrets key. Needs cluster-admin.

Restore it with 'flotilla snapshot restore'.`,
		Example: `  flotilla snapshot save /backup/flotilla-$(date +%F).snap --passphrase-file /root/snapshot-pass`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pass, err := readPassphrase(passFile)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			return saveSnapshot(cmd, c, args[0], pass)
		},
	}
	save.Flags().StringVar(&passFile, "passphrase-file", "", "file holding the passphrase that encrypts the snapshot's keys (default: $"+snapshotPassphraseEnv+")")
	cmd.AddCommand(save)

	var dataDir, secretsKey string
	restore := &cobra.Command{
		Use:   "restore FILE",
		Short: "Make a new server's data dir of a snapshot",
		Long: `Write a new server's data dir from a snapshot: the store with every object
of the snapshot, the cluster CA, the Secrets key and the webhook secret.
The data dir must not hold a store yet. Then start the server on it
('flotilla server --data-dir DIR', or 'flotilla up --data-dir DIR'): it is
the same cluster, a group of one server that others can join; agents
reconnect with their certificates and keep their pods.`,
		Example: `  flotilla snapshot restore /backup/flotilla-2026-12-06.snap --data-dir /var/lib/flotilla --passphrase-file /root/snapshot-pass`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pass, err := readPassphrase(passFile)
			if err != nil {
				return err
			}
			return restoreSnapshot(cmd.OutOrStdout(), args[0], dataDir, secretsKey, pass)
		},
	}
	restore.Flags().StringVar(&passFile, "passphrase-file", "", "file holding the snapshot's passphrase (default: $"+snapshotPassphraseEnv+")")
	restore.Flags().StringVar(&dataDir, "data-dir", apiclient.DefaultDataDir(), "the new server's data dir")
	addSecretsKeyFlag(restore.Flags(), &secretsKey)
	cmd.AddCommand(restore)
	return cmd
}

// saveSnapshot saves the server's snapshot to path, through a temporary
// file that is checked (its keys open with pass, its store is whole)
// before it takes path's place.
func saveSnapshot(cmd *cobra.Command, c *apiclient.Client, path, pass string) error {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "saving a snapshot of %s ...\n", c.Server())
	tmp := path + ".partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	n, err := c.SaveSnapshot(cmd.Context(), pass, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("save the snapshot: %w", err)
	}
	meta, size, err := checkSnapshot(tmp, pass)
	if err != nil {
		return fmt.Errorf("the snapshot the server sent does not read back: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	fmt.Fprintf(out, "saved %s: revision %d, %d bytes (store %d); its keys open with the passphrase only\n", path, meta.Revision, n, size)
	return nil
}

// checkSnapshot reads a snapshot file whole: its meta, its keys with pass,
// and its store to the end.
func checkSnapshot(path, pass string) (snapshot.Meta, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return snapshot.Meta{}, 0, err
	}
	defer f.Close()
	rd, err := snapshot.Read(f, pass)
	if err != nil {
		return snapshot.Meta{}, 0, err
	}
	st, err := rd.Store()
	if err != nil {
		return rd.Meta, 0, err
	}
	n, err := io.Copy(io.Discard, st)
	return rd.Meta, n, err
}

// restoreSnapshot writes a new server's data dir from the snapshot at path.
func restoreSnapshot(out io.Writer, path, dataDir, secretsKeyFile, pass string) error {
	db := filepath.Join(dataDir, "db")
	for _, p := range []string{db, filepath.Join(dataDir, "raft")} {
		if entries, err := os.ReadDir(p); err == nil && len(entries) > 0 {
			return fmt.Errorf("%s already holds a cluster's state: restore into a new data dir, or move %s away first", dataDir, p)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rd, err := snapshot.Read(f, pass)
	if errors.Is(err, snapshot.ErrPassphrase) {
		return fmt.Errorf("%s: %w (give the passphrase it was saved with)", path, err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	tlsDir := filepath.Join(dataDir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		return err
	}
	if secretsKeyFile == "" {
		secretsKeyFile = filepath.Join(dataDir, secretsKeyFileName)
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{filepath.Join(tlsDir, apiserver.CAFile), rd.Keys.CACert, 0o644},
		{filepath.Join(tlsDir, apiserver.CAKeyFile), rd.Keys.CAKey, 0o600},
		{secretsKeyFile, rd.Keys.SecretsKeyFile, 0o600},
		{filepath.Join(dataDir, "webhook-secret"), rd.Keys.WebhookSecret, 0o600},
	} {
		if len(w.data) == 0 {
			continue
		}
		if err := atomicfile.WriteFile(w.path, w.data, w.mode); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	keys, err := encrypt.LoadFile(secretsKeyFile)
	if err != nil {
		return fmt.Errorf("restore: the snapshot's Secrets key file: %w", err)
	}
	st, err := store.Open(store.Config{Dir: db, Keys: keys})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	stream, err := rd.Store()
	if err == nil {
		err = st.Restore(stream, 0) // a new log starts at 0
	}
	rev := st.Revision()
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.RemoveAll(db)
		return fmt.Errorf("restore the store: %w", err)
	}
	fmt.Fprintf(out, "restored the snapshot of %s (revision %d, taken %s on %s) into %s\n",
		path, rev, rd.Meta.Created.Local().Format(time.RFC3339), rd.Meta.Server, dataDir)
	fmt.Fprintf(out, "start the server on it: flotilla server --data-dir %s (or flotilla up --data-dir %s)\n", dataDir, dataDir)
	return nil
}
