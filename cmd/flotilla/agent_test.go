package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/join"
)

// TestAgentRefusesTokenOnCommandLine: a token in argv is in
// /proc/PID/cmdline for every local user to read; the agent refuses it
// before doing anything else and says where a token may come from.
func TestAgentRefusesTokenOnCommandLine(t *testing.T) {
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"agent", "--token", "FLO1.whatever"})
	err := root.ExecuteContext(context.Background())
	if !errors.Is(err, errTokenOnCommandLine) {
		t.Fatalf("flotilla agent --token: err = %v, want errTokenOnCommandLine", err)
	}
	for _, want := range []string{"--token-file", joinTokenEnv} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "FLO1.whatever") {
		t.Errorf("the refusal repeats the token: %q", err)
	}
}

// TestReadTokenFromFileOrEnvironment: the file wins over the environment,
// the environment works alone, and with neither the error names both.
func TestReadTokenFromFileOrEnvironment(t *testing.T) {
	caPEM, _, _, err := apiserver.EnsureCerts(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(caPEM)
	mk := func(server string) string {
		return join.Token{Server: server, BootstrapToken: "abcdef.0123456789abcdef", GossipAddr: "192.0.2.10:7946",
			CAFingerprint: join.FingerprintDER(block.Bytes), CA: block.Bytes}.Encode()
	}
	file := filepath.Join(t.TempDir(), "join-token")
	if err := os.WriteFile(file, []byte(mk("https://192.0.2.10:6443")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	say := func(string, ...any) {}
	ctx := context.Background()

	tok, err := readToken(ctx, mk("https://192.0.2.99:6443"), file, say)
	if err != nil || tok.Server != "https://192.0.2.10:6443" {
		t.Errorf("file and environment: got server %q, err %v; want the file's https://192.0.2.10:6443", tok.Server, err)
	}
	tok, err = readToken(ctx, mk("https://192.0.2.99:6443"), "", say)
	if err != nil || tok.Server != "https://192.0.2.99:6443" {
		t.Errorf("environment only: got server %q, err %v; want https://192.0.2.99:6443", tok.Server, err)
	}
	if _, err := readToken(ctx, "", "", say); err == nil || !strings.Contains(err.Error(), joinTokenEnv) || !strings.Contains(err.Error(), "--token-file") {
		t.Errorf("no token: err = %v, want one naming --token-file and %s", err, joinTokenEnv)
	}
}
