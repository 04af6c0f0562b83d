package main

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/gitsync/sops"
)

// gitOptions are the flags of the Git sync's credentials, trust and SOPS
// key, which up and server share. Credentials and keys are files only:
// nothing secret is on the command line, where `ps` shows it.
type gitOptions struct {
	username            string
	passwordFile        string
	sshKeyFile          string
	knownHostsFile      string
	allowHistoryRewrite bool
	verifySignatures    bool
	trustedKeysFiles    []string
	sopsAgeKeyFile      string
}

func (o *gitOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.username, "git-username", "", "HTTPS user name sent with --git-password-file (default \"git\", which GitHub, GitLab and Gitea accept with a token)")
	f.StringVar(&o.passwordFile, "git-password-file", "", "file holding the HTTPS password or access token (one line, mode 0600; re-read at each fetch); credentials in --repo are refused")
	f.StringVar(&o.sshKeyFile, "git-ssh-key-file", "", "unencrypted SSH private key for ssh:// and user@host:path repositories: a deploy key (ssh-keygen -t ed25519 -N '' -f deploy_key; add deploy_key.pub to the repository's deploy keys)")
	f.StringVar(&o.knownHostsFile, "git-known-hosts-file", "", "known_hosts file pinning the SSH server's host key (ssh-keyscan HOST > FILE, checked against the fingerprints the host publishes); another key is refused")
	f.BoolVar(&o.allowHistoryRewrite, "allow-history-rewrite", false, "apply a branch head that does not descend from the live commit (after a force-push or reset); by default it is refused and the live commit stays")
	f.BoolVar(&o.verifySignatures, "verify-signatures", false, "apply only a branch head signed by a key of --trusted-keys-file (OpenPGP or SSH signatures); others are refused and the live commit stays")
	f.StringArrayVar(&o.trustedKeysFiles, "trusted-keys-file", nil, "with --verify-signatures: armored OpenPGP public keys (gpg --export --armor KEYID) or an SSH allowed_signers file; repeatable")
	f.StringVar(&o.sopsAgeKeyFile, "sops-age-key-file", "", "age key file (age-keygen's output, as SOPS_AGE_KEY_FILE) that decrypts the repository's SOPS-encrypted manifests, in memory, at each commit; without it a commit with an encrypted file is refused")
}

// config sets the Git settings of c, reading the trusted keys and the SOPS
// age key.
func (o *gitOptions) config(c *gitsync.Config) error {
	c.Username, c.PasswordFile, c.SSHKeyFile, c.KnownHostsFile = o.username, o.passwordFile, o.sshKeyFile, o.knownHostsFile
	c.AllowHistoryRewrite = o.allowHistoryRewrite
	c.VerifySignatures = o.verifySignatures
	if o.sopsAgeKeyFile != "" {
		ids, err := sops.LoadIdentities(o.sopsAgeKeyFile)
		if err != nil {
			return fmt.Errorf("--sops-age-key-file: %w", err)
		}
		c.SOPSIdentities = ids
	}
	switch {
	case o.verifySignatures && len(o.trustedKeysFiles) == 0:
		return errors.New("--verify-signatures needs --trusted-keys-file: the public keys whose signatures are trusted")
	case !o.verifySignatures && len(o.trustedKeysFiles) > 0:
		return errors.New("--trusted-keys-file is used only with --verify-signatures: add it to check the signatures")
	case o.verifySignatures:
		keys, err := gitsync.LoadTrustedKeys(o.trustedKeysFiles...)
		if err != nil {
			return err
		}
		c.TrustedKeys = keys
	}
	return nil
}
