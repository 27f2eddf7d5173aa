package main

import (
	"os"
	"os/exec"
	"testing"
)

// The command must build for Windows and macOS: signal handling is split into
// run_unix.go and run_windows.go.
func TestCrossCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiling is slow; skipped with -short")
	}
	if _, err := exec.LookPath("go"); err != nil {
		// A test binary run elsewhere (a Windows one under Wine sees only Windows' PATH).
		t.Skip("no Go toolchain on PATH to cross-compile with")
	}
	for _, goos := range []string{"windows", "darwin"} {
		t.Run(goos, func(t *testing.T) {
			cmd := exec.Command("go", "build", "-o", os.DevNull, ".")
			cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("GOOS=%s go build: %v\n%s", goos, err, out)
			}
		})
	}
}
