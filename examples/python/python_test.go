// Package python_test runs the Python helper's unit tests as part of `go test ./...`, so the
// README's one test command covers them. They need python3; without it they are skipped.
package python_test

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
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
	trackSources(t)
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

// trackSources reads every Go and Python source of the repository. go test caches a passing
// result until a file the test opened changes; the Python tests and the binaries they run
// depend on these files without the Go test opening them, so without this an edit to the
// helper or to csmutex would replay a stale pass.
func trackSources(t *testing.T) {
	t.Helper()
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "__pycache__") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".py")) {
			_, err = os.ReadFile(path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
