package netfabric

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

const busyboxImage = "localhost/busybox:latest"

// podmanEnv points Podman at a containers.conf of the test's own (runc,
// ulimits the machine allows; ENVIRONMENT.md) instead of the machine's.
func podmanEnv(t *testing.T) []string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "containers.conf")
	err := os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n[engine]\nruntime = \"runc\"\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return append(os.Environ(), "CONTAINERS_CONF="+conf)
}

func podman(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "podman", args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ensureBusyboxImage imports localhost/busybox:latest from busybox-static
// when Podman does not have it yet.
func ensureBusyboxImage(t *testing.T, ctx context.Context, env []string) {
	t.Helper()
	if _, err := podman(ctx, env, "image", "exists", busyboxImage); err == nil {
		return
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "tmp", "www", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("no busybox-static at /bin/busybox: %v", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"passwd": "root:x:0:0:root:/root:/bin/sh\n", "group": "root:x:0:\n"} {
		if err := os.WriteFile(filepath.Join(rootfs, "etc", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	steps := [][]string{
		{"/bin/busybox", "--install", "-s", filepath.Join(rootfs, "bin")},
		{"tar", "-C", rootfs, "-cf", filepath.Join(dir, "rootfs.tar"), "."},
	}
	for i, s := range steps {
		if out, err := exec.CommandContext(ctx, s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", s, err, out)
		}
		if i == 0 {
			relinkApplets(t, filepath.Join(rootfs, "bin"))
		}
	}
	if _, err := podman(ctx, env, "import", "--quiet", "--change", `CMD ["/bin/sh"]`, filepath.Join(dir, "rootfs.tar"), busyboxImage); err != nil {
		if _, again := podman(ctx, env, "image", "exists", busyboxImage); again != nil { // lost a race with another importer: fine
			t.Fatal(err)
		}
	}
}

// relinkApplets points every applet link in dir at "busybox" beside it:
// `busybox --install -s` links to the host's own path of busybox
// (/usr/bin/busybox on a merged-/usr host), which the image does not have.
func relinkApplets(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Type()&os.ModeSymlink == 0 {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("busybox", p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPodmanContainerInPodNetNS runs a real container in a pod namespace
// (as the agent will: the netns path handed to Podman) and fetches from
// its web server over the pod IP from the host.
func TestPodmanContainerInPodNetNS(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("starts a real container")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := podmanEnv(t)
	ensureBusyboxImage(t, ctx, env)

	f := newTestNet(t, 24).fabric(t)
	uid := "hhhh-" + randHex(t, 8)
	pn := setup(t, f, uid)

	name := "flt-netfabric-" + randHex(t, 8)
	t.Cleanup(func() { podman(context.Background(), env, "rm", "-f", "-t", "0", name) })
	script := fmt.Sprintf("echo hello-%s > /www/index.html && exec httpd -f -p 8080 -h /www", uid)
	if _, err := podman(ctx, env, "run", "-d", "--name", name, "--network", "ns:"+pn.NetNSPath,
		busyboxImage, "sh", "-c", "mkdir -p /www && "+script); err != nil {
		t.Fatal(err)
	}

	url := fmt.Sprintf("http://%s:8080/index.html", pn.IP)
	client := &http.Client{Timeout: 2 * time.Second}
	err := testkit.Wait(ctx, 20*time.Second, func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := strings.TrimSpace(string(body)); got != "hello-"+uid {
			t.Fatalf("GET %s = %d %q", url, resp.StatusCode, got)
		}
		return nil
	})
	if err != nil {
		logs, _ := podman(context.Background(), env, "logs", name)
		t.Fatalf("GET %s never answered: %v\ncontainer logs:\n%s", url, err, logs)
	}
}
