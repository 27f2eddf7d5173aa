// Package python_test runs the Python helper's unit tests as part of `go test ./...`, so the
// README's one test command covers them: under every interpreter the helper supports (2.7,
// 3.6 ... 3.13), each a subtest, found under pyenv or on PATH; an absent one is skipped and
// says where it was looked for. Without any Python at all the test is skipped.
package python_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/testenv"
)

// supported are the Python versions the helper promises to work with (setup.py's
// python_requires, README).
var supported = []string{"2.7", "3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13"}

// perInterpreter bounds one interpreter's run; the whole suite takes a few seconds.
const perInterpreter = 4 * time.Minute

type interpreter struct {
	version string // "3.12", or "python3" for PATH's when no supported version was found
	path    string // "" when absent
	looked  string // where it was looked for, for the skip message
}

type result struct {
	out     []byte
	err     error
	elapsed time.Duration
}

func TestPythonHelper(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the Python tests use unix sockets and POSIX signals")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	interps := findInterpreters()
	found := 0
	for _, in := range interps {
		if in.path != "" {
			found++
		}
	}
	if found == 0 {
		t.Skip("no Python interpreter found (pyenv versions, python2.7/python3.X or python3 on PATH): the Python helper's tests are skipped")
	}
	trackSources(t)

	// Build the binaries (and the wheel) once here, so the Python runs share them.
	bin := testenv.TempDir(t)
	for _, name := range []string{"csmutex", "mockapi"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, name), "../../cmd/"+name)
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
	}
	env := append(os.Environ(),
		"CSMUTEX_BIN="+filepath.Join(bin, "csmutex"),
		"MOCKAPI_BIN="+filepath.Join(bin, "mockapi"),
		"PYTHONDONTWRITEBYTECODE=1")
	// The wheel is built once, and installed (with each one's own pip) under the oldest and
	// the newest interpreter: pip takes about a CPU second to start, nine of them too many.
	wheel, why := buildWheel(t, interps, bin)
	if wheel == "" {
		t.Logf("the wheel test is skipped: %s", why)
	}
	first, last := -1, -1
	for i, in := range interps {
		if in.path != "" {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	envFor := func(i int) []string {
		e := slices.Clip(slices.Clone(env))
		switch {
		case wheel == "":
			return e
		case i == first || i == last:
			return append(e, "CSMUTEX_WHEEL="+wheel)
		default:
			return append(e, "CSMUTEX_WHEEL=skip")
		}
	}

	// Run every interpreter at once: the suites mostly wait on processes and sockets, and
	// t.Parallel would run only GOMAXPROCS of them at a time.
	results := make([]result, len(interps))
	var wg sync.WaitGroup
	for i, in := range interps {
		if in.path == "" {
			continue
		}
		wg.Add(1)
		env := envFor(i)
		go func() {
			defer wg.Done()
			results[i] = runSuite(in, env)
		}()
	}
	wg.Wait()

	for i, in := range interps {
		t.Run(in.version, func(t *testing.T) {
			if in.path == "" {
				t.Skipf("Python %s not found (looked for %s)", in.version, in.looked)
			}
			r := results[i]
			t.Logf("%s -m unittest (%s):\n%s", in.path, r.elapsed.Round(time.Millisecond), r.out)
			if r.err != nil {
				t.Fatalf("Python %s tests failed: %v", in.version, r.err)
			}
			if !bytes.Contains(r.out, []byte("\nOK")) {
				t.Fatalf("Python %s: no OK line in the unittest output", in.version)
			}
		})
	}
}

// runSuite runs the unittest suite under one interpreter, in its own process group, and
// kills whatever the suite left running (mock CloudShell, sidecars) when it ends.
func runSuite(in interpreter, env []string) result {
	ctx, cancel := context.WithTimeout(context.Background(), perInterpreter)
	defer cancel()
	args := []string{"-m", "unittest", "discover", "-s", ".", "-v"}
	if !strings.HasPrefix(in.version, "2.") {
		args = append([]string{"-W", "error::ResourceWarning"}, args...)
	}
	cmd := exec.CommandContext(ctx, in.path, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ownGroup(cmd)
	start := time.Now()
	err := cmd.Run()
	killGroup(cmd)
	if ctx.Err() != nil {
		err = fmt.Errorf("did not finish within %s: %w", perInterpreter, err)
	}
	return result{out: out.Bytes(), err: err, elapsed: time.Since(start)}
}

// findInterpreters returns one entry per supported version, found or not. It looks in
// pyenv's versions directory ($PYENV_ROOT, else ~/.pyenv), then for pythonX.Y on PATH.
// When none is found, PATH's python3 (whatever version) stands in.
func findInterpreters() []interpreter {
	roots := []string{}
	if r := os.Getenv("PYENV_ROOT"); r != "" {
		roots = append(roots, r)
	}
	if home, err := os.UserHomeDir(); err == nil {
		roots = append(roots, filepath.Join(home, ".pyenv"))
	}
	var list []interpreter
	foundAny := false
	for _, v := range supported {
		// Exactly X.Y.Z (not X.Y.Z-dev or X.Y.Zt): the newest patch release.
		release := regexp.MustCompile(`/` + regexp.QuoteMeta(v) + `\.\d+/bin/python$`)
		in := interpreter{version: v}
		var looked []string
		for _, root := range roots {
			pattern := filepath.Join(root, "versions", v+".*", "bin", "python")
			looked = append(looked, pattern)
			matches, _ := filepath.Glob(pattern)
			var ok []string
			for _, m := range matches {
				if release.MatchString(filepath.ToSlash(m)) {
					ok = append(ok, m)
				}
			}
			if len(ok) > 0 {
				sort.Slice(ok, func(a, b int) bool { return patchOf(ok[a]) < patchOf(ok[b]) })
				in.path = ok[len(ok)-1]
				break
			}
		}
		if in.path == "" {
			looked = append(looked, "python"+v+" on PATH")
			if p, err := exec.LookPath("python" + v); err == nil {
				in.path = p
			}
		}
		in.looked = strings.Join(looked, ", ")
		if in.path != "" {
			foundAny = true
		}
		list = append(list, in)
	}
	if !foundAny {
		if p, err := exec.LookPath("python3"); err == nil {
			list = append(list, interpreter{version: "python3", path: p})
		}
	}
	return list
}

func patchOf(path string) int {
	dir := filepath.Base(filepath.Dir(filepath.Dir(path))) // X.Y.Z
	var major, minor, patch int
	fmt.Sscanf(dir, "%d.%d.%d", &major, &minor, &patch)
	return patch
}

// hasBuildTools exits 0 when setuptools, wheel and pip are installed. It only finds them:
// importing setuptools is slow, and importing pip or wheel first breaks Debian's setuptools.
const hasBuildTools = `import sys
try:
    from importlib.util import find_spec
except ImportError:  # Python 2
    import imp
    def find_spec(name):
        try:
            return imp.find_module(name)
        except ImportError:
            return None
sys.exit(0 if all(find_spec(m) for m in ("setuptools", "wheel", "pip")) else 1)
`

// buildWheel builds the helper's wheel offline with the first interpreter that has
// setuptools, wheel and pip (any of the found ones, PATH's python3, /usr/bin/python3), from
// a copy of the sources (setuptools writes build/ and *.egg-info next to setup.py). It
// returns "" and why when no interpreter can; a build that fails fails the test.
func buildWheel(t *testing.T, interps []interpreter, dir string) (wheel, why string) {
	t.Helper()
	candidates := []string{}
	for _, in := range interps {
		if in.path != "" {
			candidates = append(candidates, in.path)
		}
	}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	candidates = append(candidates, "/usr/bin/python3")
	builder := ""
	for _, c := range candidates {
		if exec.Command(c, "-c", hasBuildTools).Run() == nil {
			builder = c
			break
		}
	}
	if builder == "" {
		return "", "no interpreter has setuptools, wheel and pip (no network to install them)"
	}
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"setup.py", "pyproject.toml", "csmutex_sidecar.py", "README.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dist := filepath.Join(dir, "dist")
	cmd := exec.Command(builder, "-m", "pip", "wheel", "--no-build-isolation", "--no-index", "--no-deps",
		"--disable-pip-version-check", "-q", "-w", dist, src)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s -m pip wheel ./examples/python: %v\n%s", builder, err, out)
	}
	wheels, _ := filepath.Glob(filepath.Join(dist, "*.whl"))
	if len(wheels) != 1 {
		t.Fatalf("pip wheel made %d wheels: %v", len(wheels), wheels)
	}
	t.Logf("built %s with %s", filepath.Base(wheels[0]), builder)
	return wheels[0], ""
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
		if !d.IsDir() && (strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".py") ||
			strings.HasSuffix(path, ".toml") || filepath.Base(path) == "README.md") {
			_, err = os.ReadFile(path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
