package gitsync

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Git you can trust: two checks a fetched head must pass before it is
// read, each refusing it whole (stalled, the live commit stays applied and
// nothing is pruned).
//
//   - History: the head must descend from the live commit. A force-push
//     that rewrites or rewinds the branch is refused unless
//     Config.AllowHistoryRewrite: whoever can rewrite history can
//     otherwise roll the cluster back to any old commit without a trace in
//     the branch.
//   - Signatures (Config.VerifySignatures, Flux's spec.verify mode HEAD):
//     the head must carry a good signature by a trusted key, OpenPGP
//     (armored public keys) or SSH (an allowed_signers file).

// liveRef keeps the live commit in the clone: after a force-push the old
// commit may be gone from the remote, and the ancestry check needs it.
// go-git never deletes objects, and a `git gc` of the clone keeps what a
// ref names.
const liveRef = plumbing.ReferenceName("refs/flotilla/live")

// The flags messages point to.
const (
	historyRewriteFlag       = "--allow-history-rewrite"
	verifySignaturesFlagHint = "--trusted-keys-file"
)

// checkHistory returns a problem when head does not descend from the
// commit live (a full hash; "" before the first apply, when anything
// goes). The live commit is looked up in the clone, which has the whole
// history of every head it fetched; one it does not have (a clone made
// anew after the remote dropped it) cannot be an ancestor of head, whose
// whole history was just fetched, so it is refused too.
func checkHistory(repo *git.Repository, head *object.Commit, live string) (*string, error) {
	if live == "" || live == head.Hash.String() {
		return nil, nil
	}
	lc, err := repo.CommitObject(plumbing.NewHash(live))
	switch {
	case errors.Is(err, plumbing.ErrObjectNotFound):
		msg := fmt.Sprintf("history rewritten: %s is not a descendant of the live commit %s (which is neither in the branch's history nor in the local clone); "+
			"if this is intended, restart with %s to apply it, or push a commit on top of %s", short(head.Hash.String()), short(live), historyRewriteFlag, short(live))
		return &msg, nil
	case err != nil:
		return nil, fmt.Errorf("read the live commit %s from the clone: %w", short(live), err)
	}
	ok, err := lc.IsAncestor(head)
	if err != nil {
		return nil, fmt.Errorf("walk the history of %s: %w", short(head.Hash.String()), err)
	}
	if ok {
		return nil, nil
	}
	how := "rewritten"
	if back, _ := head.IsAncestor(lc); back {
		how = "rewound to an older commit"
	}
	msg := fmt.Sprintf("history rewritten: %s is not a descendant of the live commit %s (the branch was %s, e.g. by a force-push or a reset); "+
		"if this is intended, restart with %s to apply it, or push a commit on top of %s", short(head.Hash.String()), short(live), how, historyRewriteFlag, short(live))
	return &msg, nil
}

// keepLive points liveRef at the live commit, when it is in the clone.
func keepLive(repo *git.Repository, live string) error {
	if live == "" {
		return nil
	}
	h := plumbing.NewHash(live)
	if ref, err := repo.Reference(liveRef, false); err == nil && ref.Hash() == h {
		return nil
	}
	if _, err := repo.CommitObject(h); err != nil {
		return nil // not fetched here (a new clone): nothing to keep
	}
	return repo.Storer.SetReference(plumbing.NewHashReference(liveRef, h))
}

// TrustedKeys are the keys whose signatures Config.VerifySignatures
// accepts. Load them with LoadTrustedKeys.
type TrustedKeys struct {
	pgp    openpgp.EntityList
	ssh    []allowedSigner
	source []string // the files, for messages
}

// Empty reports whether no key is trusted.
func (k *TrustedKeys) Empty() bool { return k == nil || (len(k.pgp) == 0 && len(k.ssh) == 0) }

// LoadTrustedKeys reads files of trusted keys: each either armored OpenPGP
// public keys (`gpg --export --armor KEYID`) or an SSH allowed_signers file
// (git's gpg.ssh.allowedSignersFile: "PRINCIPALS [OPTIONS] KEYTYPE KEY",
// one a line). Errors name the file and what is wrong.
func LoadTrustedKeys(files ...string) (*TrustedKeys, error) {
	k := &TrustedKeys{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read trusted keys: %w", err)
		}
		if bytes.Contains(data, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
			el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
			if err != nil {
				return nil, fmt.Errorf("trusted keys file %s: not a valid armored OpenPGP key ring: %w", f, err)
			}
			k.pgp = append(k.pgp, el...)
		} else {
			signers, err := parseAllowedSigners(data)
			if err != nil {
				return nil, fmt.Errorf("trusted keys file %s: %w (expected armored OpenPGP public keys, or an SSH allowed_signers file)", f, err)
			}
			k.ssh = append(k.ssh, signers...)
		}
		k.source = append(k.source, f)
	}
	if k.Empty() {
		return nil, fmt.Errorf("no trusted key in %s: add the signers' public keys", strings.Join(files, ", "))
	}
	return k, nil
}

// verifyCommit returns a problem when c is not signed by a trusted key.
func (k *TrustedKeys) verifyCommit(c *object.Commit) *string {
	id := short(c.Hash.String())
	sig := strings.TrimSpace(c.PGPSignature)
	var msg string
	switch {
	case sig == "":
		msg = fmt.Sprintf("commit %s is not signed; only commits signed by a trusted key (%s) are applied", id, verifySignaturesFlagHint)
	case strings.HasPrefix(sig, "-----BEGIN SSH SIGNATURE-----"):
		msg = k.verifySSH(c, id)
	case strings.HasPrefix(sig, "-----BEGIN PGP SIGNATURE-----"):
		msg = k.verifyPGP(c, id)
	default:
		msg = fmt.Sprintf("commit %s carries a signature of a kind Flotilla cannot check (not OpenPGP or SSH)", id)
	}
	if msg == "" {
		return nil
	}
	return &msg
}

func (k *TrustedKeys) verifyPGP(c *object.Commit, id string) string {
	signer := pgpIssuer(c.PGPSignature)
	if len(k.pgp) == 0 {
		return fmt.Sprintf("commit %s is signed by OpenPGP key %s, which is not trusted (no OpenPGP key is)", id, signer)
	}
	var body bytes.Buffer
	if err := encodeWithoutSignature(c, &body); err != nil {
		return fmt.Sprintf("commit %s: cannot re-encode it to check its signature: %v", id, err)
	}
	_, err := openpgp.CheckArmoredDetachedSignature(k.pgp, &body, strings.NewReader(c.PGPSignature), nil)
	switch {
	case err == nil:
		return ""
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return fmt.Sprintf("commit %s is signed by key %s, which is not trusted", id, signer)
	case errors.Is(err, pgperrors.ErrKeyExpired), errors.Is(err, pgperrors.ErrSignatureExpired):
		return fmt.Sprintf("commit %s is signed by key %s, but the key or the signature has expired: %v", id, signer, err)
	default:
		return fmt.Sprintf("commit %s has a bad signature by key %s (the commit was changed after signing, or the signature is corrupt): %v", id, signer, err)
	}
}

// encodeWithoutSignature is the signed payload of c: the commit object as
// git wrote it, less its gpgsig header.
func encodeWithoutSignature(c *object.Commit, w io.Writer) error {
	obj := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(obj); err != nil {
		return err
	}
	r, err := obj.Reader()
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = io.Copy(w, r)
	return err
}

// pgpIssuer names the key that made an armored signature: its fingerprint
// (or key ID), in hex, upper case as gpg prints it; "(unknown)" if the
// signature cannot be read.
func pgpIssuer(armored string) string {
	block, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return "(unknown)"
	}
	p, err := packet.Read(block.Body)
	if err != nil {
		return "(unknown)"
	}
	s, ok := p.(*packet.Signature)
	switch {
	case !ok:
		return "(unknown)"
	case len(s.IssuerFingerprint) > 0:
		return strings.ToUpper(fmt.Sprintf("%x", s.IssuerFingerprint))
	case s.IssuerKeyId != nil:
		return fmt.Sprintf("%016X", *s.IssuerKeyId)
	}
	return "(unknown)"
}
