package gitsync

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Git servers as users host repositories, for the transport tests: smart
// HTTP by the real git http-backend (CGI) behind basic auth, and SSH by a
// Go server that takes one deploy key and runs the real git-upload-pack
// and git-receive-pack.

// gitExecPath is where git's own programs are (git --exec-path).
func gitExecPath(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Skipf("git CLI not usable: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// httpGitServer serves the bare repositories under root at
// URL/<name>.git with git http-backend, for user:password only; pushes
// are on (http.receivepack).
type httpGitServer struct {
	URL      string
	user     string
	password string
	accept   atomic.Pointer[string] // the password accepted now (rotate with accept.Store)
}

func newHTTPGitServer(t testing.TB, root, user, password string) *httpGitServer {
	t.Helper()
	backend := &cgi.Handler{
		Path: filepath.Join(gitExecPath(t), "git-http-backend"),
		Dir:  root,
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_PARAMETERS='http.receivepack'='true'", "HOME=" + root},
		Stderr: io.Discard,
	}
	s := &httpGitServer{user: user, password: password}
	s.accept.Store(&password)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(*s.accept.Load())) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		r.Header.Set("Remote-User", u)
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// sshGitServer serves the bare repositories under root over SSH to the
// holder of one deploy key.
type sshGitServer struct {
	Addr       string         // 127.0.0.1:PORT
	HostKey    ssh.PublicKey  // the server's
	KnownHosts string         // a known_hosts line pinning HostKey for Addr
	mu         sync.Mutex     // guards execs
	execs      []string       // commands run, for the tests
	wg         sync.WaitGroup // connections
}

func newSSHGitServer(t testing.TB, root string, deployKey ssh.PublicKey) *sshGitServer {
	t.Helper()
	execPath := gitExecPath(t)
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if subtle.ConstantTimeCompare(key.Marshal(), deployKey.Marshal()) == 1 {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sshGitServer{Addr: ln.Addr().String(), HostKey: hostSigner.PublicKey()}
	s.KnownHosts = knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, s.HostKey)
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serveConn(c, cfg, root, execPath)
			}()
		}
	}()
	return s
}

func (s *sshGitServer) serveConn(c net.Conn, cfg *ssh.ServerConfig, root, execPath string) {
	defer c.Close()
	conn, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	defer conn.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		go s.serveSession(ch, chReqs, root, execPath)
	}
}

// serveSession runs the one git command of an exec request, as a git
// host's SSH server does (git-shell's rules: only the pack commands, only
// repositories under root).
func (s *sshGitServer) serveSession(ch ssh.Channel, reqs <-chan *ssh.Request, root, execPath string) {
	defer ch.Close()
	var env []string
	for req := range reqs {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			if ssh.Unmarshal(req.Payload, &kv) == nil && kv.Name == "GIT_PROTOCOL" {
				env = append(env, "GIT_PROTOCOL="+kv.Value)
			}
			_ = req.Reply(true, nil)
		case "exec":
			var cmd struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &cmd); err != nil {
				_ = req.Reply(false, nil)
				return
			}
			prog, arg, _ := strings.Cut(cmd.Command, " ")
			repo := path.Clean("/" + strings.Trim(strings.TrimSpace(arg), `'"`))
			if (prog != "git-upload-pack" && prog != "git-receive-pack") || strings.Contains(repo, "..") {
				_ = req.Reply(false, nil)
				return
			}
			s.mu.Lock()
			s.execs = append(s.execs, prog+" "+repo)
			s.mu.Unlock()
			_ = req.Reply(true, nil)
			run := exec.Command(filepath.Join(execPath, prog), filepath.Join(root, filepath.FromSlash(repo)))
			run.Env = append(os.Environ(), append(env, "GIT_CONFIG_NOSYSTEM=1", "HOME="+root)...)
			run.Stdin, run.Stdout, run.Stderr = ch, ch, ch.Stderr()
			status := uint32(0)
			if err := run.Run(); err != nil {
				status = 1
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					status = uint32(ee.ExitCode())
				}
				fmt.Fprintf(ch.Stderr(), "%s: %v\n", prog, err)
			}
			_ = ch.CloseWrite()
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
			return
		default:
			_ = req.Reply(false, nil)
		}
	}
}

// commands returns the git commands the server ran.
func (s *sshGitServer) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.execs...)
}
