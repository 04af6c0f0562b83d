package netfabric

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, bridges, nftables)")
	}
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)[:n]
}

// testNet is one fabric's unique names, so tests can run beside each other
// and beside other packages.
type testNet struct {
	cfg Config
}

// newTestNet picks a random bridge, netns prefix, table and a random
// 10.250.X.0/<bits> pod CIDR.
func newTestNet(t *testing.T, bits int) testNet {
	t.Helper()
	suffix := randHex(t, 8)
	pod := testkit.FreeSubnet(t, "10.250.%d.0/"+fmt.Sprint(bits))
	_, cluster, _ := net.ParseCIDR("10.250.0.0/16")
	return testNet{cfg: Config{
		PodCIDR:     pod,
		ClusterCIDR: cluster,
		Bridge:      "flt" + suffix,
		StateDir:    t.TempDir(),
		NetNSPrefix: "flt" + suffix + "-",
		NFTable:     "flt_" + suffix,
		Logger:      slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}}
}

// fabric builds a Fabric over tn's config, runs Init, and destroys
// everything it made when the test ends, even on failure.
func (tn testNet) fabric(t *testing.T) *Fabric {
	t.Helper()
	f, err := New(tn.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Destroy(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := f.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return f
}

// inNetNS runs fn inside the namespace at path (netfabric.InNetNS).
func inNetNS(t testing.TB, path string, fn func() error) error {
	t.Helper()
	return InNetNS(path, fn)
}

var syscallECONNREFUSED = unix.ECONNREFUSED

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
