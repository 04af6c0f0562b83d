package gitsync

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Credentials come from files only, never from the URL or the command
// line (where `ps` and shell histories show them): an HTTPS user name and
// a password or token file, or an SSH deploy key and a known_hosts file
// that pins the server's host key. The files are read at each
// conversation with the remote, so a token rotated in place is used from
// the next sync on. What was read is scrubbed from every error, log line
// and status message.

// DefaultHTTPUsername is the user name sent with a token when
// Config.Username is empty. GitHub, GitLab, Gitea and Bitbucket accept any
// non-empty user name with a personal or deploy token.
const DefaultHTTPUsername = "git"

// credentials are a remote's credential files and the secrets read from
// them so far (for scrubbing). Safe for concurrent use.
type credentials struct {
	username       string // HTTPS user name; for SSH the URL's user (default "git")
	passwordFile   string // HTTPS password or token
	sshKeyFile     string // SSH private key, unencrypted (a deploy key)
	knownHostsFile string // pins the SSH server's host key
	sshHostPort    string // host:port the SSH server is dialled at, as known_hosts names it

	mu   sync.Mutex
	seen []string // passwords read, to scrub
}

// ErrURLCredentials is returned by New for a URL carrying a password or
// token.
var ErrURLCredentials = errors.New("credentials in the repository URL are refused")

// setCredentials checks that the credential settings fit the remote's
// scheme and records them.
func (r *remote) setCredentials(c *Config) error {
	if r.urlCreds {
		return fmt.Errorf("gitsync: %w (%s): they would show in `ps`, shell histories and the clone's config; "+
			"put the password or token in a file readable only by flotilla and pass --git-username and --git-password-file", ErrURLCredentials, r.display)
	}
	httpish := r.scheme == "http" || r.scheme == "https"
	switch {
	case (c.Username != "" || c.PasswordFile != "") && !httpish:
		return fmt.Errorf("gitsync: --git-username and --git-password-file are for http(s):// repositories, not %s", r.display)
	case c.Username != "" && c.PasswordFile == "":
		return errors.New("gitsync: --git-username needs --git-password-file (the password or token)")
	case (c.SSHKeyFile != "" || c.KnownHostsFile != "") && r.scheme != "ssh":
		return fmt.Errorf("gitsync: --git-ssh-key-file and --git-known-hosts-file are for ssh:// and user@host:path repositories, not %s", r.display)
	case c.KnownHostsFile != "" && c.SSHKeyFile == "":
		return errors.New("gitsync: --git-known-hosts-file needs --git-ssh-key-file (the deploy key)")
	}
	for flag, f := range map[string]string{"--git-password-file": c.PasswordFile, "--git-ssh-key-file": c.SSHKeyFile, "--git-known-hosts-file": c.KnownHostsFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("gitsync: %s: %w", flag, err)
		}
	}
	cr := r.creds
	cr.username, cr.passwordFile, cr.sshKeyFile, cr.knownHostsFile = c.Username, c.PasswordFile, c.SSHKeyFile, c.KnownHostsFile
	if r.scheme == "ssh" {
		ep, err := transport.NewEndpoint(r.url)
		if err != nil {
			return fmt.Errorf("gitsync: SSH URL %s: %w", r.display, err)
		}
		port := ep.Port
		if port == 0 {
			port = 22
		}
		cr.username = ep.User
		if cr.username == "" {
			cr.username = "git"
		}
		cr.sshHostPort = net.JoinHostPort(ep.Host, strconv.Itoa(port))
	}
	if httpish && cr.passwordFile != "" && cr.username == "" {
		cr.username = DefaultHTTPUsername
	}
	return nil
}

// auth returns the auth method of one conversation, reading the files.
// nil: go-git's default (none for HTTP and local repositories; for SSH,
// the user's agent and known_hosts).
func (r remote) auth() (transport.AuthMethod, error) {
	c := r.creds
	switch {
	case c.passwordFile != "":
		pw, err := readSecretFile(c.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("read the Git password or token (--git-password-file): %w", err)
		}
		c.remember(pw)
		return &githttp.BasicAuth{Username: c.username, Password: pw}, nil
	case c.sshKeyFile != "":
		keys, err := gitssh.NewPublicKeysFromFile(c.username, c.sshKeyFile, "")
		if err != nil {
			return nil, fmt.Errorf("read the SSH key %s (--git-ssh-key-file; an unencrypted private key, e.g. from ssh-keygen -N ''): %w", c.sshKeyFile, err)
		}
		if c.knownHostsFile != "" {
			db, err := gitssh.NewKnownHostsDb(c.knownHostsFile)
			if err != nil {
				return nil, fmt.Errorf("read the known hosts file %s (--git-known-hosts-file): %w", c.knownHostsFile, err)
			}
			keys.HostKeyCallback = hostKeyError(db.HostKeyCallback(), c.knownHostsFile)
			keys.HostKeyAlgorithms = db.HostKeyAlgorithms(c.sshHostPort)
		}
		return keys, nil
	}
	return nil, nil
}

func readSecretFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

func (c *credentials) remember(secret string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.seen {
		if s == secret {
			return
		}
	}
	c.seen = append(c.seen, secret)
}

// scrub replaces every secret read so far in msg.
func (c *credentials) scrub(msg string) string {
	if c == nil {
		return msg
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.seen {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "***")
		}
	}
	return msg
}

// ErrHostKey is wrapped by a fetch refused because the SSH server's host
// key is not the one pinned in Config.KnownHostsFile (or the server is not
// listed there).
var ErrHostKey = errors.New("SSH host key not trusted")

// hostKeyError makes the known_hosts callback's refusals say what to do.
func hostKeyError(cb ssh.HostKeyCallback, file string) ssh.HostKeyCallback {
	return func(host string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(host, remote, key)
		var ke *knownhosts.KeyError
		if !errors.As(err, &ke) {
			return err
		}
		if len(ke.Want) > 0 {
			return fmt.Errorf("%w: the SSH server %s presented host key %s, which is not the one pinned for it in %s (--git-known-hosts-file); "+
				"refusing to connect: someone may be intercepting the connection (if the server's key really changed, put its new key in that file)",
				ErrHostKey, host, ssh.FingerprintSHA256(key), file)
		}
		return fmt.Errorf("%w: the SSH server %s (host key %s) is not listed in %s (--git-known-hosts-file); "+
			"add its host key, checked against what the hosting service publishes (ssh-keyscan HOST prints it)",
			ErrHostKey, host, ssh.FingerprintSHA256(key), file)
	}
}
