package apiclient

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeconfigName is the name of the cluster, user and context that
// WriteKubeconfig writes.
const KubeconfigName = "flotilla"

// DefaultDataDir is where Flotilla keeps its state when not told otherwise:
// /var/lib/flotilla for root, $HOME/.local/share/flotilla for other users.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/flotilla"
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(os.TempDir(), "flotilla")
	}
	return filepath.Join(home, ".local", "share", "flotilla")
}

// DefaultKubeconfigPath resolves the kubeconfig to use as kubectl does: the
// explicit flag value if set, else the first entry of $KUBECONFIG, else
// <DefaultDataDir>/kubeconfig.yaml.
func DefaultKubeconfigPath(flag string) string {
	if flag != "" {
		return flag
	}
	for _, p := range filepath.SplitList(os.Getenv(clientcmd.RecommendedConfigPathEnvVar)) {
		if p != "" {
			return p
		}
	}
	return filepath.Join(DefaultDataDir(), "kubeconfig.yaml")
}

// Credential is how a kubeconfig's user authenticates: a client
// certificate and key (PEM) the cluster CA signed, or a bearer token.
type Credential struct {
	CertPEM, KeyPEM []byte
	Token           string
}

// WriteKubeconfig writes a kubeconfig (mode 0600) with one cluster, user and
// context named "flotilla", the context current, that both FromKubeconfig
// and kubectl read.
func WriteKubeconfig(path, server string, caPEM []byte, cred Credential) error {
	data, err := Kubeconfig(server, caPEM, cred)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("apiclient: kubeconfig: %w", err)
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("apiclient: kubeconfig: %w", err)
	}
	return nil
}

// Kubeconfig is the text of the kubeconfig WriteKubeconfig writes.
func Kubeconfig(server string, caPEM []byte, cred Credential) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cluster := clientcmdapi.NewCluster()
	cluster.Server = server
	cluster.CertificateAuthorityData = caPEM
	user := clientcmdapi.NewAuthInfo()
	user.Token = cred.Token
	user.ClientCertificateData, user.ClientKeyData = cred.CertPEM, cred.KeyPEM
	kctx := clientcmdapi.NewContext()
	kctx.Cluster, kctx.AuthInfo, kctx.Namespace = KubeconfigName, KubeconfigName, "default"
	cfg.Clusters[KubeconfigName] = cluster
	cfg.AuthInfos[KubeconfigName] = user
	cfg.Contexts[KubeconfigName] = kctx
	cfg.CurrentContext = KubeconfigName
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("apiclient: kubeconfig: %w", err)
	}
	return data, nil
}

// ServerOf returns the server URL and CA of the current context of the
// kubeconfig at path.
func ServerOf(path string) (server string, caPEM []byte, err error) {
	raw, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("apiclient: %w", err)
	}
	rc, err := clientcmd.NewDefaultClientConfig(*raw, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return "", nil, fmt.Errorf("apiclient: kubeconfig %s: %w", path, err)
	}
	return rc.Host, rc.TLSClientConfig.CAData, nil
}

// FromKubeconfig builds a client from the current context of the kubeconfig
// at path (server, CA data or file, bearer token or token file,
// insecure-skip-tls-verify). Use DefaultKubeconfigPath to find path.
func FromKubeconfig(path string) (*Client, error) {
	raw, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("apiclient: %w", err)
	}
	rc, err := clientcmd.NewDefaultClientConfig(*raw, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("apiclient: kubeconfig %s: %w", path, err)
	}
	cfg := Config{
		Server:             rc.Host,
		CAData:             rc.TLSClientConfig.CAData,
		Token:              rc.BearerToken,
		InsecureSkipVerify: rc.TLSClientConfig.Insecure,
	}
	if len(cfg.CAData) == 0 && rc.TLSClientConfig.CAFile != "" {
		if cfg.CAData, err = os.ReadFile(rc.TLSClientConfig.CAFile); err != nil {
			return nil, fmt.Errorf("apiclient: kubeconfig %s: %w", path, err)
		}
	}
	cfg.CertData, cfg.KeyData = rc.TLSClientConfig.CertData, rc.TLSClientConfig.KeyData
	if len(cfg.CertData) == 0 && rc.TLSClientConfig.CertFile != "" {
		if cfg.CertData, err = os.ReadFile(rc.TLSClientConfig.CertFile); err != nil {
			return nil, fmt.Errorf("apiclient: kubeconfig %s: %w", path, err)
		}
	}
	if len(cfg.KeyData) == 0 && rc.TLSClientConfig.KeyFile != "" {
		if cfg.KeyData, err = os.ReadFile(rc.TLSClientConfig.KeyFile); err != nil {
			return nil, fmt.Errorf("apiclient: kubeconfig %s: %w", path, err)
		}
	}
	if cfg.Token == "" && rc.BearerTokenFile != "" {
		tok, err := os.ReadFile(rc.BearerTokenFile)
		if err != nil {
			return nil, fmt.Errorf("apiclient: kubeconfig %s: %w", path, err)
		}
		cfg.Token = string(bytes.TrimSpace(tok))
	}
	if cfg.Server == "" {
		return nil, errors.New("apiclient: kubeconfig " + path + " names no server")
	}
	return New(cfg)
}
