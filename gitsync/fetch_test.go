package gitsync

import "testing"

// TestInsecureTransport: http:// and git:// remotes are told apart from
// the ones with TLS or SSH and from local paths.
func TestInsecureTransport(t *testing.T) {
	for url, want := range map[string]bool{
		"http://git.example/ops.git":     true,
		"HTTP://git.example/ops.git":     true,
		"git://git.example/ops.git":      true,
		"https://git.example/ops.git":    false,
		"ssh://git@git.example/ops.git":  false,
		"git@git.example:ops/site.git":   false,
		"/srv/git/ops.git":               false,
		"file:///srv/git/ops.git":        false,
		"https://user:tok@git.example/x": false,
		"http://user:tok@git.example/x":  true,
	} {
		if _, got := InsecureTransport(url); got != want {
			t.Errorf("InsecureTransport(%q) = %v, want %v", url, got, want)
		}
	}
}
