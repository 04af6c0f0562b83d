package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// LoadImage copies image from the host's default Podman storage into the
// storage of the given nodes (all when none are given): one `podman save`
// to Dir/images, then `podman <Node.PodmanArgs> load` per node.
func (l *Lab) LoadImage(ctx context.Context, image string, nodes ...string) error {
	targets := l.st.Nodes
	if len(nodes) > 0 {
		targets = nil
		for _, name := range nodes {
			n, err := l.Node(name)
			if err != nil {
				return fmt.Errorf("loading %s: %w", image, err)
			}
			targets = append(targets, n)
		}
	}
	dir := filepath.Join(l.dir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("loading %s: %w", image, err)
	}
	tar := filepath.Join(dir, unsafeChars.ReplaceAllString(image, "_")+".tar")
	os.Remove(tar)
	defer os.Remove(tar)
	if err := podman(ctx, "save", "-o", tar, image); err != nil {
		return fmt.Errorf("saving %s from the host's storage: %w", image, err)
	}
	for _, n := range targets {
		for _, d := range []string{n.PodmanRoot, n.RunRoot} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("loading %s into %s: %w", image, n.Name, err)
			}
		}
		args := append(n.PodmanArgs(), "load", "-i", tar)
		if err := podman(ctx, args...); err != nil {
			return fmt.Errorf("loading %s into %s: %w", image, n.Name, err)
		}
		l.log.Info("lab image loaded", "image", image, "node", n.Name)
	}
	return nil
}

func podman(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "podman", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
