package gitsync

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/schema"
)

// Git as users host it: a bare repository served by the real git
// http-backend behind basic auth, and by an SSH server that takes a
// deploy key, pushed to with the real git CLI, announced by a signed
// webhook as GitHub or Gitea would, and synced by flotilla with
// credentials from files.

// hosted is one bare repository served over smart HTTP and SSH.
type hosted struct {
	bare           string
	http           *httpGitServer
	ssh            *sshGitServer
	tokenFile      string // the HTTP password (token), for flotilla
	deployKeyFile  string // the SSH deploy key, for flotilla and the pushing user
	knownHostsFile string // pins the SSH server's host key
	seed           string // the first commit on main
}

func newHosted(t testing.TB) *hosted {
	t.Helper()
	root, secrets := t.TempDir(), t.TempDir()
	h := &hosted{bare: filepath.Join(root, "site.git"), tokenFile: filepath.Join(secrets, "token"),
		deployKeyFile: filepath.Join(secrets, "deploy_key"), knownHostsFile: filepath.Join(secrets, "known_hosts")}
	gitCLI(t, root, "init", "-q", "--bare", "-b", "main", h.bare)
	seed := t.TempDir()
	gitCLI(t, seed, "init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(seed, "a.yaml"), []byte(configMap("a", "", "1")), 0o644); err != nil {
		t.Fatal(err)
	}
	gitCLI(t, seed, "add", "a.yaml")
	gitCLI(t, seed, "commit", "-qm", "seed")
	gitCLI(t, seed, "push", "-q", h.bare, "main")
	h.seed = headOf(t, seed)

	token := randomHex(t)
	if err := os.WriteFile(h.tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.http = newHTTPGitServer(t, root, "deploy", token)
	deploy, _ := newSSHKey(t, h.deployKeyFile, "deploy")
	h.ssh = newSSHGitServer(t, root, deploy.PublicKey())
	if err := os.WriteFile(h.knownHostsFile, []byte(h.ssh.KnownHosts+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return h
}

func randomHex(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func (h *hosted) httpURL() string { return h.http.URL + "/site.git" }
func (h *hosted) sshURL() string  { return "ssh://git@" + h.ssh.Addr + "/site.git" }

// httpUser is a user's clone over HTTP (git CLI, basic auth).
func (h *hosted) httpUser(t testing.TB) *cliRepo {
	auth := base64.StdEncoding.EncodeToString([]byte(h.http.user + ":" + h.http.password))
	return newCLIRepo(t, h.httpURL(), nil, "http.extraHeader=Authorization: Basic "+auth)
}

// sshUser is a user's clone over SSH (git CLI, the deploy key, the pinned
// host key): OpenSSH's ssh where it runs, else the test binary as the SSH
// client (see TestMain).
func (h *hosted) sshUser(t testing.TB) *cliRepo {
	env := []string{"GIT_SSH_COMMAND=ssh -i " + h.deployKeyFile + " -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=" + h.knownHostsFile}
	if !opensshWorks() {
		env = []string{"GIT_SSH=" + os.Args[0], "GIT_SSH_VARIANT=ssh", "FLOTILLA_TEST_AS=ssh",
			"FLOTILLA_TEST_SSH_KEY=" + h.deployKeyFile, "FLOTILLA_TEST_KNOWN_HOSTS=" + h.knownHostsFile}
	}
	return newCLIRepo(t, h.sshURL(), env)
}

// httpConfig and sshConfig are flotilla's settings for each transport.
func (h *hosted) httpConfig(c *Config) {
	c.URL, c.Username, c.PasswordFile = h.httpURL(), "deploy", h.tokenFile
}

func (h *hosted) sshConfig(c *Config) {
	c.URL, c.SSHKeyFile, c.KnownHostsFile = h.sshURL(), h.deployKeyFile, h.knownHostsFile
}

// logBuffer collects a Syncer's log lines besides sending them to the
// test's log, to look for secrets in them.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// runHosted runs a Syncer of the hosted repository with the webhook
// served over HTTP, on a fake clock that never moves: after the first
// sync only the webhook triggers one.
func runHosted(t *testing.T, configure func(*Config), secret string) (*harness, *httptest.Server, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	h := newHarness(t, configure, func(c *Config) {
		c.WebhookSecret = secret
		c.Logger = slog.New(slog.NewMultiHandler(c.Logger.Handler(), slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.syncer.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	hook := httptest.NewServer(h.syncer.WebhookHandler())
	t.Cleanup(hook.Close)
	return h, hook, logs
}

// postPush posts a push event for main at commit as GitHub ("github") or
// Gitea ("gitea") would, signed with secret; it returns the status code.
func postPush(t testing.TB, url, style, secret, commit string) int {
	t.Helper()
	body := fmt.Sprintf(`{"ref":"refs/heads/main","before":"0000000000000000000000000000000000000000","after":%q}`, commit)
	req, err := http.NewRequest(http.MethodPost, url+"/hooks/git", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	switch style {
	case "github":
		req.Header.Set("X-GitHub-Event", "push")
		if secret != "" {
			req.Header.Set("X-Hub-Signature-256", "sha256="+hexMAC(body, secret))
		}
	case "gitea":
		req.Header.Set("X-Gitea-Event", "push")
		if secret != "" {
			req.Header.Set("X-Gitea-Signature", hexMAC(body, secret))
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// pushThenWebhook pushes a commit adding ConfigMap name with user, checks
// that badly signed and unsigned webhooks are refused without a sync,
// posts a good one of style, and checks that the commit is applied.
func pushThenWebhook(t *testing.T, h *harness, hook *httptest.Server, user *cliRepo, style, secret, name string) string {
	t.Helper()
	pushed := user.commit(false, map[string]string{name + ".yaml": configMap(name, "", "1")})
	started := h.syncer.State().Started
	for _, bad := range []string{"wrong-" + secret, ""} {
		if code := postPush(t, hook.URL, style, bad, pushed); code != http.StatusUnauthorized {
			t.Errorf("%s webhook signed with %q: %d, want 401", style, bad, code)
		}
	}
	if len(h.syncer.trigger) != 0 || h.syncer.State().Started != started {
		t.Fatal("a webhook without a valid signature triggered a sync")
	}
	if code := postPush(t, hook.URL, style, secret, pushed); code != http.StatusAccepted {
		t.Fatalf("%s webhook: %d, want 202", style, code)
	}
	testkit.EventuallyWhy(t, "the pushed commit applied", 0, func() string {
		if st := h.statusOrZero(); st.LastAppliedCommit != pushed {
			return fmt.Sprintf("live %s (%s: %s)", short(st.LastAppliedCommit), st.Result, st.Message)
		}
		return ""
	})
	h.get("configmaps", "default", name)
	return pushed
}

func TestHostedHTTP(t *testing.T) {
	repo := newHosted(t)
	secret := randomHex(t)
	h, hook, logs := runHosted(t, repo.httpConfig, secret)
	testkit.EventuallyTrue(t, "the first sync", 0, func() bool { return h.statusOrZero().LastAppliedCommit == repo.seed })
	user := repo.httpUser(t)
	pushThenWebhook(t, h, hook, user, "github", secret, "b")
	pushThenWebhook(t, h, hook, user, "gitea", secret, "c")
	st := h.get("syncstatuses", "", schema.SyncStatusName).(*schema.SyncStatus)
	for where, s := range map[string]string{"log": logs.String(), "status": fmt.Sprint(st.Spec, st.Status)} {
		if strings.Contains(s, repo.http.password) {
			t.Errorf("the token is in the %s", where)
		}
	}
}

// TestHostedHTTPWrongToken: a token the server refuses fails the sync
// (retried), and the token is shown nowhere.
func TestHostedHTTPWrongToken(t *testing.T) {
	repo := newHosted(t)
	wrong := filepath.Join(t.TempDir(), "token")
	const bad = "not-the-token-4f2a"
	if err := os.WriteFile(wrong, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, repo.httpConfig, func(c *Config) { c.PasswordFile = wrong })
	body, err := h.sync()
	if err == nil || body.Result != schema.SyncFetchFailed || !strings.Contains(body.Message, "authentication") {
		t.Fatalf("sync = %s %q, %v; want a failed authentication", body.Result, body.Message, err)
	}
	if strings.Contains(err.Error()+body.Message, bad) {
		t.Errorf("the token is shown: %v", err)
	}
}

func TestHostedSSH(t *testing.T) {
	repo := newHosted(t)
	secret := randomHex(t)
	h, hook, _ := runHosted(t, repo.sshConfig, secret)
	testkit.EventuallyTrue(t, "the first sync", 0, func() bool { return h.statusOrZero().LastAppliedCommit == repo.seed })
	user := repo.sshUser(t)
	pushThenWebhook(t, h, hook, user, "gitea", secret, "b")
	pushThenWebhook(t, h, hook, user, "github", secret, "c")
	cmds := strings.Join(repo.ssh.commands(), "\n")
	if !strings.Contains(cmds, "git-receive-pack /site.git") || !strings.Contains(cmds, "git-upload-pack /site.git") {
		t.Errorf("the SSH server ran:\n%s\nwant a push and fetches of /site.git", cmds)
	}
}

// TestHostedSSHWrongHostKey: a server whose host key is not the pinned
// one is refused with a message saying so, and nothing is fetched.
func TestHostedSSHWrongHostKey(t *testing.T) {
	repo := newHosted(t)
	other, _ := newSSHKey(t, filepath.Join(t.TempDir(), "other"), "other")
	kh := filepath.Join(t.TempDir(), "known_hosts")
	line := strings.Replace(repo.ssh.KnownHosts, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(repo.ssh.HostKey))),
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other.PublicKey()))), 1)
	if err := os.WriteFile(kh, []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, repo.sshConfig, func(c *Config) { c.KnownHostsFile = kh })
	body, err := h.sync()
	if err == nil || body.Result != schema.SyncFetchFailed || !strings.Contains(body.Message, "which is not the one pinned for it in "+kh) {
		t.Fatalf("sync = %s %q, %v; want the host key refused", body.Result, body.Message, err)
	}
	if c := repo.ssh.commands(); len(c) != 0 {
		t.Errorf("the server ran %v for a client that refused it", c)
	}
	// A host not listed at all is refused too.
	if err := os.WriteFile(kh, []byte("# empty\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if body, _ := h.sync(); !strings.Contains(body.Message, "is not listed in "+kh) {
		t.Errorf("unlisted host: %q", body.Message)
	}
}

// BenchmarkPushToApplied measures a `git push` to a hosted repository
// (smart HTTP, SSH) followed by its webhook, until the commit is live in
// the store: ms-webhook-to-applied is from the webhook's POST to the
// status naming the commit; ns/op includes the git CLI's commit and push.
//
//	go test -run '^$' -bench PushToApplied ./gitsync/
func BenchmarkPushToApplied(b *testing.B) {
	if _, err := exec.LookPath("git"); err != nil {
		b.Skip("git CLI not installed")
	}
	for _, transport := range []string{"http", "ssh"} {
		b.Run(transport, func(b *testing.B) {
			repo := newHosted(b)
			secret := randomHex(b)
			st := newTestStore(b)
			cfg := Config{WorkDir: filepath.Join(b.TempDir(), "clone"), Store: st, Loader: yamlLoader{},
				Logger: slog.New(slog.DiscardHandler), Interval: time.Hour, WebhookSecret: secret}
			var user *cliRepo
			if transport == "http" {
				repo.httpConfig(&cfg)
			} else {
				repo.sshConfig(&cfg)
			}
			s, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			defer func() { cancel(); <-done }()
			hook := httptest.NewServer(s.WebhookHandler())
			defer hook.Close()
			live := func() string {
				obj, err := st.Get(context.Background(), "syncstatuses", "", schema.SyncStatusName)
				if err != nil {
					return ""
				}
				return obj.(*schema.SyncStatus).Status.LastAppliedCommit
			}
			testkit.EventuallyTrue(b, "the first sync", 0, func() bool { return live() == repo.seed })
			if transport == "http" {
				user = repo.httpUser(b)
			} else {
				user = repo.sshUser(b)
			}
			var hookToApplied time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pushed := user.commit(false, map[string]string{"b.yaml": configMap("b", "", fmt.Sprint(i))})
				t0 := time.Now()
				if code := postPush(b, hook.URL, "github", secret, pushed); code != http.StatusAccepted {
					b.Fatalf("webhook: %d", code)
				}
				for live() != pushed {
					time.Sleep(200 * time.Microsecond)
				}
				hookToApplied += time.Since(t0)
			}
			b.StopTimer()
			b.ReportMetric(float64(hookToApplied.Microseconds())/float64(b.N)/1000, "ms-webhook-to-applied")
		})
	}
}
