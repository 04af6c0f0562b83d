package host

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// TestSettingsRoundTrip: what New records is what Teardown reads, under
// the JSON names `flotilla down` of earlier releases reads, readable by
// root only.
func TestSettingsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	want := Settings{PodCIDR: "10.244.3.0/24", Bridge: "flo9", NetNSPrefix: "x-", NFTable: "flot9",
		PodmanRoot: "/srv/podman", PodmanRunRoot: "/run/p9", PodmanDriver: "vfs"}
	if err := SaveSettings(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := LoadSettings(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("loaded %+v, want %+v", got, want)
	}
	fi, err := os.Stat(filepath.Join(dir, SettingsFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", SettingsFile, fi.Mode().Perm())
	}
	data, _ := os.ReadFile(filepath.Join(dir, SettingsFile))
	var raw map[string]string
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"podCIDR": want.PodCIDR, "bridge": want.Bridge, "netnsPrefix": want.NetNSPrefix,
		"nftTable": want.NFTable, "podmanStorageDriver": "vfs"} {
		if raw[k] != v {
			t.Errorf("%s: %q is %q, want %q", SettingsFile, k, raw[k], v)
		}
	}
	if _, ok := raw["podmanSocket"]; ok {
		t.Errorf("%s records an empty podmanSocket: %s", SettingsFile, data)
	}
	if _, err := LoadSettings(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadSettings of an empty dir: %v, want ErrNotExist", err)
	}
}

// TestTeardownRefusals: Teardown touches nothing on the host when the
// data dir has no node, when its settings are broken, or while a control
// plane holds its store; each error says which.
func TestTeardownRefusals(t *testing.T) {
	ctx := context.Background()
	say := func(format string, args ...any) { t.Errorf("Teardown said "+format+" before refusing", args...) }

	if err := Teardown(ctx, t.TempDir(), time.Second, say); !errors.Is(err, ErrNoNode) {
		t.Errorf("no settings: %v, want ErrNoNode", err)
	}

	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, SettingsFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Teardown(ctx, bad, time.Second, say); err == nil || errors.Is(err, ErrNoNode) || !strings.Contains(err.Error(), SettingsFile) {
		t.Errorf("broken settings: %v, want an error naming %s", err, SettingsFile)
	}
	if err := SaveSettings(bad, Settings{PodCIDR: "10.244.0.0/33"}); err != nil {
		t.Fatal(err)
	}
	if err := Teardown(ctx, bad, time.Second, say); err == nil || !strings.Contains(err.Error(), "10.244.0.0/33") {
		t.Errorf("bad pod CIDR: %v, want an error naming it", err)
	}

	running := t.TempDir()
	if err := SaveSettings(running, Settings{PodCIDR: "10.244.0.0/24", Bridge: "flo-t", NetNSPrefix: "flot-", NFTable: "flot"}); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Config{Dir: filepath.Join(running, "db")})
	if err != nil {
		t.Fatal(err)
	}
	err = Teardown(ctx, running, time.Second, say)
	st.Close()
	if err == nil || !strings.Contains(err.Error(), "still seems to run") {
		t.Errorf("store held: %v, want a refusal", err)
	}
	if err := storeUnused(running); err != nil {
		t.Errorf("store closed: %v, want no refusal", err)
	}
}

// TestNewRefusesBadConfig: a config missing what a node needs is refused
// before anything is made on the host, and the endpoint's listener given
// is closed.
func TestNewRefusesBadConfig(t *testing.T) {
	st := store.MemoryFor(t)
	good := Config{NodeName: "n1", DataDir: t.TempDir(), Store: st, Settings: Settings{PodCIDR: "10.244.0.0/24"}}
	for name, change := range map[string]func(*Config){
		"no node name":          func(c *Config) { c.NodeName = "" },
		"no data dir":           func(c *Config) { c.DataDir = "" },
		"no store":              func(c *Config) { c.Store = nil },
		"bad pod CIDR":          func(c *Config) { c.Settings.PodCIDR = "10.244.0.0" },
		"overlay without an IP": func(c *Config) { c.Overlay = true },
	} {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			cfg := good
			cfg.DataDir = t.TempDir()
			cfg.Endpoint = &Endpoint{Listener: ln}
			change(&cfg)
			if n, err := New(context.Background(), cfg); err == nil {
				n.Close()
				t.Fatal("New accepted it")
			}
			if _, err := os.Stat(filepath.Join(cfg.DataDir, SettingsFile)); cfg.DataDir != "" && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("settings recorded for a refused config (%v)", err)
			}
			_ = ln.(*net.TCPListener).SetDeadline(time.Now()) // an open listener times out at once
			if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("the endpoint's listener is open after a refusal (Accept: %v)", err)
			}
		})
	}
}
