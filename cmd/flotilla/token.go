package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/join"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// The cluster's own objects in kube-system that joining relies on.
const (
	// gossipSecretName holds the gossip key (data "key", 32 bytes): agents
	// read it with their node certificate, never from the join token.
	gossipSecretName = "flotilla-gossip"
	gossipKeyField   = "key"
	// joinInfoName is a ConfigMap of what a join token carries besides the
	// bootstrap token (the API URL, a gossip address, the CA's
	// fingerprint), written by the server, read by `flotilla token create`;
	// and the load balancer pool, which every node reads (the agents hold
	// only addresses inside it).
	joinInfoName = "flotilla-join"
	lbPoolKey    = "lbPool"
)

// joinInfo is what every join token of a cluster shares.
type joinInfo struct {
	server, gossipAddr, caFingerprint string
	caPEM                             []byte
	lbPool                            string // ipalloc.Pool's String; "" none
}

// publishJoinInfo writes the gossip key Secret (if there is none yet) and
// the join info ConfigMap: as the server starts, and as a server of a
// bigger group becomes the leader (so that new tokens name a live server).
// keep leaves a join info that is there as it is.
func publishJoinInfo(ctx context.Context, st store.Interface, key []byte, info joinInfo, keep bool) error {
	secret := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: gossipSecretName, Namespace: auth.SystemNamespace},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{gossipKeyField: key},
	}
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: joinInfoName, Namespace: auth.SystemNamespace},
		Data: map[string]string{"server": info.server, "gossipAddr": info.gossipAddr, "caSHA256": info.caFingerprint,
			"ca.crt": string(info.caPEM), lbPoolKey: info.lbPool},
	}
	// The key Secret is made once: afterwards it is the truth (rotations
	// change it), and the server follows it.
	if _, err := st.Create(ctx, secret); err != nil && !errors.Is(err, store.ErrExists) {
		return fmt.Errorf("publish %s/%s: %w", auth.SystemNamespace, secret.Name, err)
	}
	put := putObject
	if keep {
		put = func(ctx context.Context, st store.Interface, obj schema.Object) error {
			if _, err := st.Create(ctx, obj); err != nil && !errors.Is(err, store.ErrExists) {
				return err
			}
			return nil
		}
	}
	if err := put(ctx, st, cm); err != nil {
		return fmt.Errorf("publish %s/%s: %w", auth.SystemNamespace, cm.Name, err)
	}
	return nil
}

// putObject creates obj, or replaces the stored one's content, in one
// transaction: another writer between the read and the write (a server
// that starts as it is elected publishes the join info twice at once)
// cannot make it fail.
func putObject(ctx context.Context, st store.Interface, obj schema.Object) error {
	k, err := schema.KindOf(obj)
	if err != nil {
		return err
	}
	_, err = st.Txn(ctx, func(tx store.Tx) error {
		cur, err := tx.Get(k.Resource, obj.GetNamespace(), obj.GetName())
		if errors.Is(err, store.ErrNotFound) {
			_, err = tx.Create(schema.Copy(obj))
			return err
		}
		if err != nil {
			return err
		}
		o := schema.Copy(obj)
		o.SetResourceVersion("") // the read is the transaction's own
		o.SetUID(cur.GetUID())
		o.SetCreationTimestamp(cur.GetCreationTimestamp())
		_, err = tx.Update(o)
		return err
	})
	return err
}

// readJoinInfo reads what publishJoinInfo wrote.
func readJoinInfo(ctx context.Context, st store.Interface) (joinInfo, error) {
	obj, err := st.Get(ctx, "configmaps", auth.SystemNamespace, joinInfoName)
	if err != nil {
		return joinInfo{}, fmt.Errorf("read %s/%s (written by `flotilla server`): %w", auth.SystemNamespace, joinInfoName, err)
	}
	d := obj.(*corev1.ConfigMap).Data
	return joinInfo{server: d["server"], gossipAddr: d["gossipAddr"], caFingerprint: d["caSHA256"], caPEM: []byte(d["ca.crt"]),
		lbPool: d[lbPoolKey]}, nil
}

// createJoinToken stores a new bootstrap token valid for ttl and returns
// the join token around it.
func createJoinToken(ctx context.Context, st store.Interface, info joinInfo, ttl time.Duration, description string, groups ...string) (join.Token, time.Time, error) {
	secretText, secret, err := auth.NewBootstrapTokenFor(time.Now(), ttl, description, groups...)
	if err != nil {
		return join.Token{}, time.Time{}, err
	}
	var ca []byte
	if block, _ := pem.Decode(info.caPEM); block != nil {
		ca = block.Bytes
	}
	tok := join.Token{Server: info.server, BootstrapToken: secretText, GossipAddr: info.gossipAddr, CAFingerprint: info.caFingerprint, CA: ca}
	if err := tok.Validate(); err != nil {
		return join.Token{}, time.Time{}, fmt.Errorf("join token: %w", err)
	}
	if _, err := st.Create(ctx, secret); err != nil {
		return join.Token{}, time.Time{}, fmt.Errorf("store the bootstrap token: %w", err)
	}
	return tok, auth.BootstrapTokenExpiry(secret), nil
}

type tokenOptions struct {
	ttl         time.Duration
	description string
	server      bool
}

func newTokenCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage join tokens: create, list and revoke the credentials nodes join with",
		Long: `A join token lets one machine join as a node: it can do nothing but ask the
server for the node's certificate, and it expires (24 h unless told
otherwise). Once a node has its certificate it no longer needs the token.

The token's public ID names it in 'list' and 'revoke'; its secret is shown
once, by 'create'. Tokens are Kubernetes bootstrap tokens: Secrets of type
bootstrap.kubernetes.io/token in kube-system.`,
		Args: cobra.NoArgs,
	}
	o := &tokenOptions{}
	create := &cobra.Command{
		Use:   "create",
		Short: "Make a join token and print it",
		Example: `  (umask 077; flotilla token create > join-token)
  flotilla token create --ttl 1h --description "rack 3"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.server && !cmd.Flags().Changed("ttl") {
				o.ttl = time.Hour // a server's token buys the cluster's keys
			}
			return runTokenCreate(cmd.Context(), g, o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	create.Flags().DurationVar(&o.ttl, "ttl", auth.DefaultBootstrapTokenTTL, "how long the token may be used to join (0: forever, not recommended)")
	create.Flags().StringVar(&o.description, "description", "", "what the token is for, shown by list")
	create.Flags().BoolVar(&o.server, "server", false, "a token for a new server, not a node: it obtains the cluster's CA and keys, so its TTL is 1h unless --ttl says otherwise (flotilla server --join-token-file FILE)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the join tokens (their IDs, not their secrets)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runTokenList(cmd.Context(), g, cmd.OutOrStdout()) },
	}
	revoke := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke a join token: no machine can join with it any more (joined nodes keep their certificates)",
		Example: `  flotilla token revoke abcdef`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTokenRevoke(cmd.Context(), g, args[0], cmd.OutOrStdout())
		},
	}
	cmd.AddCommand(create, list, revoke, newRotateGossipKeyCommand(g))
	return cmd
}

func runTokenCreate(ctx context.Context, g *globalFlags, o *tokenOptions, out, errOut io.Writer) error {
	if o.ttl < 0 {
		return fmt.Errorf("--ttl %s: want 0 or a positive duration", o.ttl)
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	info, err := readJoinInfo(ctx, c)
	if err != nil {
		return err
	}
	var groups []string
	if o.server {
		groups = append(groups, auth.GroupServerJoiners)
	}
	tok, expires, err := createJoinToken(ctx, c, info, o.ttl, o.description, groups...)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, tok.Encode())
	when := "never expires"
	if !expires.IsZero() {
		when = "expires " + expires.Local().Format(time.RFC3339)
	}
	if o.server {
		fmt.Fprintf(errOut, "flotilla: server join token %s %s; on the new server, save it (mode 0600) and run:\n  flotilla server --join-token-file FILE --repo URL-OF-THE-SAME-REPOSITORY\n", tok.TokenID(), when)
		return nil
	}
	fmt.Fprintf(errOut, "flotilla: join token %s %s; on the new node, save it (mode 0600) and run:\n  flotilla agent --token-file FILE\n", tok.TokenID(), when)
	return nil
}

func runTokenList(ctx context.Context, g *globalFlags, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	objs, _, err := c.List(ctx, "secrets", store.ListOptions{Namespace: auth.SystemNamespace})
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tTTL\tEXPIRES\tDESCRIPTION")
	now := time.Now()
	var rows []string
	for _, obj := range objs {
		s := obj.(*corev1.Secret)
		id := auth.BootstrapTokenID(s)
		if id == "" {
			continue
		}
		ttl, expires := "<forever>", "<never>"
		if exp := auth.BootstrapTokenExpiry(s); !exp.IsZero() {
			expires = exp.Local().Format(time.RFC3339)
			ttl = "<expired>"
			if left := exp.Sub(now); left > 0 {
				ttl = strings.TrimSuffix(left.Round(time.Minute).String(), "0s")
			}
		}
		rows = append(rows, fmt.Sprintf("%s\t%s\t%s\t%s", id, ttl, expires, s.Data[bootstrapapi.BootstrapTokenDescriptionKey]))
	}
	slices.Sort(rows)
	for _, r := range rows {
		fmt.Fprintln(tw, r)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rows) == 0 {
		_, err = fmt.Fprintln(out, "No join tokens: make one with `flotilla token create`.")
		return err
	}
	_, err = out.Write(buf.Bytes())
	return err
}

func runTokenRevoke(ctx context.Context, g *globalFlags, id string, out io.Writer) error {
	if !bootstraputil.IsValidBootstrapTokenID(id) {
		return fmt.Errorf("%q is not a token ID (6 characters of a-z, 0-9; `flotilla token list` shows them)", id)
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	if _, err := c.Delete(ctx, "secrets", auth.SystemNamespace, bootstraputil.BootstrapTokenSecretName(id), store.DeleteOptions{}); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("no join token %s (`flotilla token list` shows them)", id)
		}
		return err
	}
	_, err = fmt.Fprintf(out, "join token %s revoked\n", id)
	return err
}
