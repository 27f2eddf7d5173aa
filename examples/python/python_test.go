// Package python_test runs the Python helper's unit tests as part of `go test ./...`, so the
// README's one test command covers them. They need python3; without it they are skipped.
package python_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

func TestPythonHelper(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the Python tests use unix sockets and POSIX signals")
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found: the Python helper's tests are skipped")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	// Build the binaries once here, so the Python tests do not each run go build.
	bin := t.TempDir()
	for _, name := range []string{"csmutex", "mockapi"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, name), "../../cmd/"+name)
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
	}
	cmd := exec.Command(python, "-W", "error::ResourceWarning", "-m", "unittest", "discover", "-s", ".", "-v")
	cmd.Env = append(os.Environ(),
		"CSMUTEX_BIN="+filepath.Join(bin, "csmutex"),
		"MOCKAPI_BIN="+filepath.Join(bin, "mockapi"),
		"PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	t.Logf("python3 -m unittest:\n%s", out)
	if err != nil {
		t.Fatalf("Python tests failed: %v", err)
	}
}
