package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/cluster/join"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// The gossip key Secret (kube-system/flotilla-gossip) holds the key every
// member encrypts with ("key") and, during a rotation, the one being
// brought in ("next") or the one going out ("previous"), which members
// accept too.
const (
	gossipNextField     = "next"
	gossipPreviousField = "previous"
)

// gossipKeys are the keys of the gossip Secret: the primary and the others
// to accept.
type gossipKeys struct {
	primary []byte
	others  [][]byte
}

func (k gossipKeys) equal(o gossipKeys) bool {
	return bytes.Equal(k.primary, o.primary) && slices.EqualFunc(k.others, o.others, bytes.Equal)
}

// gossipKeysOf reads the keys of the gossip Secret.
func gossipKeysOf(obj schema.Object) (gossipKeys, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return gossipKeys{}, fmt.Errorf("%s/%s is a %T, not a Secret", auth.SystemNamespace, gossipSecretName, obj)
	}
	k := gossipKeys{primary: s.Data[gossipKeyField]}
	if len(k.primary) != gossip.KeySize {
		return gossipKeys{}, fmt.Errorf("the gossip key in %s/%s is %d bytes, want %d", auth.SystemNamespace, gossipSecretName, len(k.primary), gossip.KeySize)
	}
	for _, f := range []string{gossipNextField, gossipPreviousField} {
		if v := s.Data[f]; len(v) == gossip.KeySize {
			k.others = append(k.others, v)
		}
	}
	return k, nil
}

// readGossipKeys reads the gossip keys from st (for an agent, the API: its
// node certificate may read that Secret; a join token may not).
func readGossipKeys(ctx context.Context, st store.Interface) (gossipKeys, error) {
	obj, err := st.Get(ctx, "secrets", auth.SystemNamespace, gossipSecretName)
	if err != nil {
		return gossipKeys{}, fmt.Errorf("read the gossip key: %w", err)
	}
	return gossipKeysOf(obj)
}

// followGossipKeys installs the keys of the gossip Secret in members, at
// once and then whenever they change (polled every interval), until ctx
// ends. onChange, if set, is told each new set of keys.
func followGossipKeys(ctx context.Context, st store.Interface, members *gossip.Membership, interval time.Duration,
	log *slog.Logger, onChange func(gossipKeys)) {
	var cur gossipKeys
	for {
		keys, err := readGossipKeys(ctx, st)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("reading the gossip keys", "err", err)
		case err == nil && !keys.equal(cur):
			if err := members.SetKeys(keys.primary, keys.others...); err != nil {
				log.Warn("installing the gossip keys", "err", err)
				break
			}
			if cur.primary != nil {
				log.Info("gossip keys changed", "accepted", 1+len(keys.others))
			}
			cur = keys
			if onChange != nil {
				onChange(keys)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// gossipKeyPollInterval is how often members look for a new gossip key.
const gossipKeyPollInterval = 10 * time.Second

func newRotateGossipKeyCommand(g *globalFlags) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "rotate-gossip-key",
		Short: "Replace the gossip encryption key on every member, without a pause in gossip",
		Long: `Replace the key that encrypts gossip, in three steps: every member installs the
new key beside the old one; every member encrypts with the new key, still
accepting the old; the old key is dropped. Members read the key from the API
(kube-system/flotilla-gossip) every 10 s, so each step waits --step-wait for
all of them. Afterwards a copy of the old key is worth nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRotateGossipKey(cmd.Context(), g, wait, cmd.OutOrStdout())
		},
	}
	cmd.Flags().DurationVar(&wait, "step-wait", 3*gossipKeyPollInterval, "how long each step waits for every member to follow")
	return cmd
}

func runRotateGossipKey(ctx context.Context, g *globalFlags, wait time.Duration, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	obj, err := c.Get(ctx, "secrets", auth.SystemNamespace, gossipSecretName)
	if err != nil {
		return fmt.Errorf("read the gossip key (is this a `flotilla server` cluster?): %w", err)
	}
	cur, err := gossipKeysOf(obj)
	if err != nil {
		return err
	}
	next, err := join.NewGossipKey()
	if err != nil {
		return err
	}
	steps := []struct {
		say  string
		data map[string][]byte
	}{
		{"every member installs the new key", map[string][]byte{gossipKeyField: cur.primary, gossipNextField: next}},
		{"every member encrypts with the new key", map[string][]byte{gossipKeyField: next, gossipPreviousField: cur.primary}},
		{"the old key is dropped", map[string][]byte{gossipKeyField: next}},
	}
	for i, st := range steps {
		secret := obj.(*corev1.Secret).DeepCopy()
		secret.Data = st.data
		if obj, err = c.Update(ctx, secret); err != nil {
			return fmt.Errorf("step %d of 3 (%s): %w; run the command again to finish", i+1, st.say, err)
		}
		fmt.Fprintf(out, "flotilla: step %d of 3: %s", i+1, st.say)
		if i == len(steps)-1 {
			fmt.Fprintln(out)
			break
		}
		fmt.Fprintf(out, "; waiting %s ...\n", wait)
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), fmt.Errorf("interrupted after step %d of 3: run the command again to finish", i+1))
		case <-time.After(wait):
		}
	}
	fmt.Fprintln(out, "flotilla: gossip key rotated")
	return nil
}
