package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store/encrypt"
)

// The key rotation's crash test: a process rotating the key is killed with
// SIGKILL at each of its steps; after a restart with the key file as the
// crash left it, every Secret decrypts, and a second rotation finishes.

const (
	rotateCrashEnv = "FLOTILLA_STORE_ROTATE_CRASH" // dir|keyfile|step: run TestHelperCrashRotate
	rotateSecrets  = 600                           // 8 KiB each: the re-encryption takes several chunks
)

// TestHelperCrashRotate is the child process of TestCrashDuringKeyRotation;
// it is skipped in a normal run.
func TestHelperCrashRotate(t *testing.T) {
	spec := os.Getenv(rotateCrashEnv)
	if spec == "" {
		t.Skip("the child process of TestCrashDuringKeyRotation")
	}
	parts := strings.SplitN(spec, "|", 3)
	dir, keyFile, step := parts[0], parts[1], parts[2]
	kill := func() {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
	ks, err := encrypt.LoadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: dir, Keys: ks, Logger: slog.New(slog.DiscardHandler)}
	cfg.testHook = func(p commitPhase) {
		if string(p) == step {
			kill()
		}
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.RotateKey(context.Background(), keyFile, func(p RotateProgress) {
		switch {
		case step == "new-key" && p.Step == "new-key":
			kill()
		case step == "reencrypt-half" && p.Step == "reencrypt" && p.Total > 0 && p.Done >= p.Total/2:
			kill()
		}
	})
	t.Fatalf("the rotation was not killed at %s (err %v)", step, err)
}

func TestCrashDuringKeyRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process per step")
	}
	for _, step := range []string{"new-key", "reencrypt-half", string(phaseRotateResealed)} {
		t.Run(step, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			keyFile, ks := keyFile(t)
			s, err := Open(Config{Dir: dir, Keys: ks, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			padding := strings.Repeat("p", 8<<10)
			for i := range rotateSecrets {
				mustCreate(t, s, secret("web", fmt.Sprintf("s-%03d", i), fmt.Sprintf("pw-%03d-%s", i, padding)))
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperCrashRotate$", "-test.count=1")
			cmd.Env = append(os.Environ(), rotateCrashEnv+"="+dir+"|"+keyFile+"|"+step)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("the child was not killed at %s: %v\n%s", step, err, out)
			}

			// Restart with the key file as the crash left it: both keys.
			left, err := encrypt.LoadFile(keyFile)
			if err != nil {
				t.Fatal(err)
			}
			if len(left.IDs()) != 2 || left.IDs()[1] != ks.WriteKeyID() {
				t.Fatalf("key file after a crash at %s: %v, want the new key and %s", step, left.IDs(), ks.WriteKeyID())
			}
			s, err = Open(Config{Dir: dir, Keys: left, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatalf("restart after a crash at %s: %v", step, err)
			}
			defer s.Close()
			ids := map[string]int{}
			for _, v := range rawSecrets(t, s) {
				id, _, _ := encrypt.Parse(v)
				ids[id]++
			}
			t.Logf("values by key id after a crash at %s: %v", step, ids)
			if step == "reencrypt-half" && len(ids) != 2 {
				t.Fatalf("killed halfway, the values are under %d keys, want both: the test proves nothing", len(ids))
			}
			check := func() {
				t.Helper()
				list, _, err := s.List(ctx, "secrets", ListOptions{})
				if err != nil || len(list) != rotateSecrets {
					t.Fatalf("list: %d, %v", len(list), err)
				}
				for i, o := range list {
					if got := string(o.(*corev1.Secret).Data["password"]); got != fmt.Sprintf("pw-%03d-%s", i, padding) {
						t.Fatalf("%s holds %.10q", o.GetName(), got)
					}
				}
				w, err := s.Watch(ctx, "secrets", ListOptions{}, 1)
				if err != nil {
					t.Fatal(err)
				}
				for i := 1; i < rotateSecrets; i++ {
					if ev := next(t, w); ev.Object.GetName() != fmt.Sprintf("s-%03d", i) {
						t.Fatalf("replay: %s", ev.Object.GetName())
					}
				}
			}
			check()

			// A second rotation finishes: one key, every value under it.
			newID, err := s.RotateKey(ctx, keyFile, nil)
			if err != nil {
				t.Fatal(err)
			}
			if final, err := encrypt.LoadFile(keyFile); err != nil || strings.Join(final.IDs(), ",") != newID {
				t.Fatalf("key file after the second rotation: %v, %v", final.IDs(), err)
			}
			for key, v := range rawSecrets(t, s) {
				if id, _, _ := encrypt.Parse(v); id != newID {
					t.Fatalf("%s under %q after the second rotation, want %q", key, id, newID)
				}
			}
			check()
		})
	}
}
