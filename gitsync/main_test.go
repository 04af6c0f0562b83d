package gitsync

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// The test binary doubles as two OpenSSH programs that git runs, for
// machines where OpenSSH's own cannot run (they refuse to start when the
// user has no passwd entry, as in some containers): with
// FLOTILLA_TEST_AS=ssh-keygen it signs as `ssh-keygen -Y sign` does (git's
// gpg.ssh.program), and with FLOTILLA_TEST_AS=ssh it is the SSH client git
// runs for ssh:// remotes (GIT_SSH), speaking the real protocol to the
// server. Where OpenSSH works, the tests use it instead.
func TestMain(m *testing.M) {
	switch os.Getenv("FLOTILLA_TEST_AS") {
	case "ssh-keygen":
		os.Exit(sshKeygenSign(os.Args[1:]))
	case "ssh":
		os.Exit(sshClient(os.Args[1:]))
	}
	os.Exit(m.Run())
}

var (
	opensshOnce sync.Once
	opensshOK   bool
)

// opensshWorks reports whether ssh-keygen and ssh run on this machine.
func opensshWorks() bool {
	opensshOnce.Do(func() {
		dir, err := os.MkdirTemp("", "openssh")
		if err != nil {
			return
		}
		defer os.RemoveAll(dir)
		keygen := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "probe", "-f", dir+"/k")
		client := exec.Command("ssh", "-G", "localhost")
		opensshOK = keygen.Run() == nil && client.Run() == nil
	})
	return opensshOK
}

// newSSHKey writes an unencrypted ed25519 private key (OpenSSH format, as
// ssh-keygen -t ed25519 -N "" writes) to path, and path.pub; it returns
// the signer and the public key line.
func newSSHKey(t testing.TB, path, comment string) (ssh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " " + comment
	if err := os.WriteFile(path+".pub", []byte(pub+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return signer, pub
}

// sshKeygenSign is `ssh-keygen -Y sign -n NAMESPACE -f KEY FILE`, which
// writes FILE.sig, as git runs it to sign a commit.
func sshKeygenSign(args []string) int {
	var ns, keyFile string
	var files []string
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-Y":
			if i+1 >= len(args) || args[i+1] != "sign" {
				fmt.Fprintln(os.Stderr, "test ssh-keygen: only -Y sign is supported")
				return 2
			}
			i++
		case "-n":
			i++
			ns = args[i]
		case "-f":
			i++
			keyFile = args[i]
		case "-U", "-q":
		default:
			files = append(files, args[i])
		}
	}
	data, err := os.ReadFile(keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, f := range files {
		msg, err := os.Open(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		sig, err := sshsig.Sign(msg, signer, sshsig.HashSHA512, ns)
		msg.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := os.WriteFile(f+".sig", sshsig.Armor(sig), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// sshClient is `ssh [-p PORT] [-o ...] [USER@]HOST COMMAND` as git runs
// it (GIT_SSH), with the key of FLOTILLA_TEST_SSH_KEY and the host keys of
// FLOTILLA_TEST_KNOWN_HOSTS.
func sshClient(args []string) int {
	port, user, host := "22", "git", ""
	var rest []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-p":
			i++
			port = args[i]
		case a == "-o":
			i++
		case strings.HasPrefix(a, "-"):
		case host == "":
			host = a
			if u, h, ok := strings.Cut(a, "@"); ok {
				user, host = u, h
			}
		default:
			rest = append(rest, a)
		}
	}
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "test ssh:", err); return 255 }
	key, err := os.ReadFile(os.Getenv("FLOTILLA_TEST_SSH_KEY"))
	if err != nil {
		return fail(err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		return fail(err)
	}
	hostKeys, err := knownhosts.New(os.Getenv("FLOTILLA_TEST_KNOWN_HOSTS"))
	if err != nil {
		return fail(err)
	}
	client, err := ssh.Dial("tcp", net.JoinHostPort(host, port), &ssh.ClientConfig{
		User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: hostKeys,
	})
	if err != nil {
		return fail(err)
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return fail(err)
	}
	defer sess.Close()
	if v := os.Getenv("GIT_PROTOCOL"); v != "" {
		_ = sess.Setenv("GIT_PROTOCOL", v)
	}
	sess.Stdout, sess.Stderr = os.Stdout, os.Stderr
	stdin, err := sess.StdinPipe()
	if err != nil {
		return fail(err)
	}
	if err := sess.Start(strings.Join(rest, " ")); err != nil {
		return fail(err)
	}
	go func() { _, _ = io.Copy(stdin, os.Stdin); stdin.Close() }()
	if err := sess.Wait(); err != nil {
		if ee, ok := err.(*ssh.ExitError); ok {
			return ee.ExitStatus()
		}
		return fail(err)
	}
	return 0
}
