package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/raftlog"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/cluster/store/encrypt"
)

// secretsKeyFileName is the key file's name in the data dir: beside the
// store's directory (db), not inside it.
const secretsKeyFileName = "secrets-key.json"

// addSecretsKeyFlag adds --secrets-key-file, which up and server share.
func addSecretsKeyFlag(f *pflag.FlagSet, p *string) {
	f.StringVar(p, "secrets-key-file", "", "the key file that encrypts Secrets in the store (default DATA_DIR/"+secretsKeyFileName+
		", created on first start); keep it apart from backups of the data dir")
}

// openStore opens the store in DATA_DIR/db with its Secrets encrypted by the
// key file (made on first start). A store whose Secrets are under keys the
// file lacks is refused; a key file made just now is then removed, so that
// the next start fails the same way until the right file is restored.
func openStore(o planeOptions, say func(string, ...any)) (*store.Badger, string, error) {
	keyFile := o.secretsKeyFile
	if keyFile == "" {
		keyFile = filepath.Join(o.dataDir, secretsKeyFileName)
	}
	keys, created, err := encrypt.LoadOrCreate(keyFile)
	if err != nil {
		return nil, "", fmt.Errorf("%w (--secrets-key-file)", err)
	}
	st, err := store.Open(store.Config{Dir: filepath.Join(o.dataDir, "db"), Keys: keys, Replicated: true, Logger: o.log.With("component", "store")})
	if err != nil {
		if created && errors.Is(err, store.ErrEncryptionKeys) {
			_ = os.Remove(keyFile)
			err = fmt.Errorf("%w (no key file was at %s, and a new key cannot read these Secrets)", err, keyFile)
		}
		return nil, "", fmt.Errorf("open store: %w", err)
	}
	if created {
		say("created the Secrets encryption key %s: back it up, apart from the data dir's backups", keyFile)
	}
	return st, keyFile, nil
}

// rotateKeyHandler serves apiserver.SecretsKeyRotatePath: it rotates the
// key and streams the progress, one JSON line per step.
//
// Only a group of one server rotates: the key file is each server's, and
// a key that one server made and the others lack would leave them unable
// to read the Secrets sealed under it.
func rotateKeyHandler(st *store.Badger, n *raftlog.Node, keyFile string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			writeStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "POST to rotate the secrets key")
			return
		}
		if members := n.Status().Members; len(members) > 1 {
			writeStatus(w, http.StatusConflict, "Conflict", fmt.Sprintf("the store has %d servers, and each keeps its own copy of the key file: "+
				"rotating on one would leave the others unable to read new Secrets; remove the other servers first (flotilla server remove), rotate, then join them again", len(members)))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		flusher, _ := w.(http.Flusher)
		send := func(p apiserver.SecretsKeyProgress) {
			_ = enc.Encode(p)
			if flusher != nil {
				flusher.Flush()
			}
		}
		// The rotation goes on if the client goes away: it is safe to cut
		// off, but finishing it leaves one key in the file.
		_, err := st.RotateKey(context.WithoutCancel(r.Context()), keyFile, func(p store.RotateProgress) {
			send(apiserver.SecretsKeyProgress{Step: p.Step, Done: p.Done, Total: p.Total, NewKeyID: p.NewKeyID, OldKeyIDs: p.OldKeyIDs})
		})
		if err != nil {
			send(apiserver.SecretsKeyProgress{Step: "error", Message: err.Error()})
		}
	})
}

func newSecretsCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Manage how the server keeps Secrets",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "rotate-key",
		Short: "Encrypt every Secret in the store under a new key and retire the old one",
		Long: `Ask the running server to make a new key the write key of its key file
(--secrets-key-file), re-encrypt every Secret and every copy of one in the
watch history under it, then remove the old key from the file.

Needs cluster-admin. Writes to the cluster wait while the values are
re-encrypted (reads go on). If it is cut off, every value still decrypts
(both keys stay in the file): run it again. Back the key file up afterwards.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "rotating the key of Secrets at rest ...")
			err = c.RotateSecretsKey(cmd.Context(), func(p apiserver.SecretsKeyProgress) {
				switch p.Step {
				case "new-key":
					fmt.Fprintf(out, "new write key %s (retiring %s)\n", p.NewKeyID, strings.Join(p.OldKeyIDs, ", "))
				case "reencrypt":
					fmt.Fprintf(out, "re-encrypted %d/%d values\n", p.Done, p.Total)
				case "retired":
					fmt.Fprintf(out, "done: every Secret is under %s; retired %s. Back up the server's key file again.\n",
						p.NewKeyID, strings.Join(p.OldKeyIDs, ", "))
				}
			})
			if err != nil {
				return fmt.Errorf("rotate the secrets key: %w", err)
			}
			return nil
		},
	})
	return cmd
}
