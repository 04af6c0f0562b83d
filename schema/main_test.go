package schema

import (
	"os"
	"testing"
)

// TestMain lets this test binary serve as the CUE sandbox: Load of a .cue
// file runs it again with the sandbox's environment.
func TestMain(m *testing.M) {
	MaybeRunSandbox()
	os.Exit(m.Run())
}
