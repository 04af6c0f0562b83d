package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	bootstrapsecrets "k8s.io/cluster-bootstrap/util/secrets"
	"k8s.io/cluster-bootstrap/util/tokens"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// Bootstrap tokens are Kubernetes': "ID.SECRET" (6 and 16 characters of
// [a-z0-9]), kept as a Secret of type bootstrap.kubernetes.io/token named
// bootstrap-token-ID in kube-system, with an expiration. A token
// authenticates as system:bootstrap:ID in system:bootstrappers, a group that
// may do nothing but ask for a node certificate.
const (
	// SystemNamespace holds the cluster's own Secrets: bootstrap tokens and
	// the gossip key.
	SystemNamespace = "kube-system"
	// GroupBootstrappers is the group of every bootstrap token.
	GroupBootstrappers = bootstrapapi.BootstrapDefaultGroup
	// DefaultBootstrapTokenTTL is how long a new join token lives unless
	// told otherwise, as kubeadm's.
	DefaultBootstrapTokenTTL = 24 * time.Hour
)

// NewBootstrapToken makes a new random token and the Secret that holds it,
// expiring ttl after now (ttl 0: never).
func NewBootstrapToken(now time.Time, ttl time.Duration, description string) (token string, secret *corev1.Secret, err error) {
	return NewBootstrapTokenFor(now, ttl, description)
}

// NewBootstrapTokenFor is NewBootstrapToken for a token that also
// authenticates in extraGroups (Kubernetes' auth-extra-groups; each must
// start with "system:bootstrappers:"), e.g. GroupServerJoiners.
func NewBootstrapTokenFor(now time.Time, ttl time.Duration, description string, extraGroups ...string) (token string, secret *corev1.Secret, err error) {
	for _, g := range extraGroups {
		if err := bootstraputil.ValidateBootstrapGroupName(g); err != nil {
			return "", nil, fmt.Errorf("auth: bootstrap token group: %w", err)
		}
	}
	token, err = bootstraputil.GenerateBootstrapToken()
	if err != nil {
		return "", nil, fmt.Errorf("auth: making a bootstrap token: %w", err)
	}
	id, sec, err := tokens.ParseToken(token)
	if err != nil {
		return "", nil, err
	}
	data := map[string][]byte{
		bootstrapapi.BootstrapTokenIDKey:               []byte(id),
		bootstrapapi.BootstrapTokenSecretKey:           []byte(sec),
		bootstrapapi.BootstrapTokenUsageAuthentication: []byte("true"),
	}
	if ttl > 0 {
		data[bootstrapapi.BootstrapTokenExpirationKey] = []byte(now.Add(ttl).UTC().Format(time.RFC3339))
	}
	if description != "" {
		data[bootstrapapi.BootstrapTokenDescriptionKey] = []byte(description)
	}
	if len(extraGroups) > 0 {
		data[bootstrapapi.BootstrapTokenExtraGroupsKey] = []byte(strings.Join(extraGroups, ","))
	}
	return token, &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: bootstraputil.BootstrapTokenSecretName(id), Namespace: SystemNamespace},
		Type:       corev1.SecretTypeBootstrapToken,
		Data:       data,
	}, nil
}

// BootstrapTokenID is the public half of a token's Secret ("" if secret is
// not a bootstrap token's).
func BootstrapTokenID(secret *corev1.Secret) string {
	if secret.Type != corev1.SecretTypeBootstrapToken {
		return ""
	}
	id, ok := bootstrapsecrets.ParseName(secret.Name)
	if !ok || bootstrapsecrets.GetData(secret, bootstrapapi.BootstrapTokenIDKey) != id {
		return ""
	}
	return id
}

// BootstrapTokenExpiry is when the token of secret expires (zero: never).
func BootstrapTokenExpiry(secret *corev1.Secret) time.Time {
	t, err := time.Parse(time.RFC3339, bootstrapsecrets.GetData(secret, bootstrapapi.BootstrapTokenExpirationKey))
	if err != nil {
		return time.Time{}
	}
	return t
}

// ErrBadToken: the bearer token is not a live bootstrap token. Its text
// never says which part failed to whoever presented it.
var ErrBadToken = errors.New("auth: not a valid bootstrap token")

// BootstrapTokens authenticates bootstrap tokens against their Secrets.
type BootstrapTokens struct {
	Store store.Interface
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Authenticate returns the user of token: ErrBadToken when it is not of the
// form, unknown, revoked, expired or not for authentication; another error
// when the store could not be read.
func (b BootstrapTokens) Authenticate(ctx context.Context, token string) (*User, error) {
	id, sec, err := tokens.ParseToken(token)
	if err != nil {
		return nil, ErrBadToken
	}
	obj, err := b.Store.Get(ctx, "secrets", SystemNamespace, bootstraputil.BootstrapTokenSecretName(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrBadToken
	}
	if err != nil {
		return nil, err
	}
	secret, ok := obj.(*corev1.Secret)
	if !ok || BootstrapTokenID(secret) != id || secret.DeletionTimestamp != nil {
		return nil, ErrBadToken
	}
	want := bootstrapsecrets.GetData(secret, bootstrapapi.BootstrapTokenSecretKey)
	if subtle.ConstantTimeCompare([]byte(sec), []byte(want)) != 1 {
		return nil, ErrBadToken
	}
	now := time.Now
	if b.Now != nil {
		now = b.Now
	}
	if bootstrapsecrets.HasExpired(secret, now()) || bootstrapsecrets.GetData(secret, bootstrapapi.BootstrapTokenUsageAuthentication) != "true" {
		return nil, ErrBadToken
	}
	groups, err := bootstrapsecrets.GetGroups(secret)
	if err != nil {
		return nil, ErrBadToken
	}
	return NewUser(bootstrapapi.BootstrapUserPrefix+id, groups...), nil
}
