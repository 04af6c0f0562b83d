package gitsync

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// SSH commit signatures (git's gpg.format=ssh): the gpgsig header holds an
// armored SSHSIG of namespace "git", checked against an allowed_signers
// file as `git verify-commit` does with gpg.ssh.allowedSignersFile.

// sshNamespace is the namespace git signs commits in.
const sshNamespace = "git"

// allowedSigner is one line of an allowed_signers file.
type allowedSigner struct {
	principals string
	namespaces []string // from namespaces="..."; empty: any
	key        ssh.PublicKey
}

// parseAllowedSigners reads an allowed_signers file (ssh-keygen(1),
// ALLOWED SIGNERS): "PRINCIPALS [OPTIONS] KEYTYPE BASE64KEY [COMMENT]" a
// line; # comments and blank lines are skipped. The options cert-authority,
// valid-after and valid-before are refused rather than ignored.
func parseAllowedSigners(data []byte) ([]allowedSigner, error) {
	var out []allowedSigner
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		principals, rest, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("line %d: want PRINCIPALS [OPTIONS] KEYTYPE KEY", n)
		}
		key, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(strings.TrimSpace(rest)))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		s := allowedSigner{principals: principals, key: key}
		for _, o := range opts {
			name, val, _ := strings.Cut(o, "=")
			switch strings.ToLower(name) {
			case "namespaces":
				s.namespaces = strings.Split(strings.Trim(val, `"`), ",")
			default:
				return nil, fmt.Errorf("line %d: option %q is not supported (only namespaces=)", n, name)
			}
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func (k *TrustedKeys) verifySSH(c *object.Commit, id string) string {
	sig, err := sshsig.Unarmor([]byte(c.PGPSignature))
	if err != nil {
		return fmt.Sprintf("commit %s has an SSH signature that cannot be read: %v", id, err)
	}
	fp := ssh.FingerprintSHA256(sig.PublicKey)
	var signer *allowedSigner
	for i := range k.ssh {
		if bytes.Equal(k.ssh[i].key.Marshal(), sig.PublicKey.Marshal()) &&
			(len(k.ssh[i].namespaces) == 0 || slices.Contains(k.ssh[i].namespaces, sshNamespace)) {
			signer = &k.ssh[i]
			break
		}
	}
	if signer == nil {
		return fmt.Sprintf("commit %s is signed by key %s, which is not trusted", id, fp)
	}
	var body bytes.Buffer
	if err := encodeWithoutSignature(c, &body); err != nil {
		return fmt.Sprintf("commit %s: cannot re-encode it to check its signature: %v", id, err)
	}
	err = sshsig.Verify(&body, sig, signer.key, sig.HashAlgorithm, sshNamespace)
	switch {
	case err == nil:
		return ""
	case errors.Is(err, sshsig.ErrNamespaceMismatch):
		return fmt.Sprintf("commit %s is signed by key %s for %q, not for git commits", id, fp, sig.Namespace)
	default:
		return fmt.Sprintf("commit %s has a bad signature by key %s (the commit was changed after signing, or the signature is corrupt): %v", id, fp, err)
	}
}
