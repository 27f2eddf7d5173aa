package main

import (
	"bytes"
	"context"
	"debug/elf"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/testenv"
)

var linuxAMD64 = target{"linux", "amd64"}

// copyModule copies the module source at src (everything but dot-directories, such as
// .git, and the default output directory dist) to dst, so that a build can run from a
// frozen copy at another path.
func copyModule(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || rel == "dist") {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		// The release build runs the go command; a test binary run where no toolchain is
		// installed (the Windows suite under Wine) cannot.
		t.Skipf("needs the go command: %v", err)
	}
	root, err := moduleRoot(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// releaseLinuxAMD64 builds csmutex for linux/amd64 from a frozen copy of the module and
// returns the output directory. The copy keeps the test independent of edits made to the
// working tree while it runs.
func releaseLinuxAMD64(t *testing.T, src string) (out string, arts []artifact) {
	t.Helper()
	out = filepath.Join(testenv.TempDir(t), "out")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	arts, err := build(ctx, options{Src: src, Out: out, Targets: []target{linuxAMD64}, Commands: []string{"csmutex"},
		Version: "v9.8.7-test", Commit: "0123456789abcdef0123456789abcdef01234567", Strip: true})
	if err != nil {
		t.Fatal(err)
	}
	return out, arts
}

// TestReproducible builds linux/amd64 twice, from two copies of the source at different
// paths, and requires identical bytes. The other targets use the same flags. By default
// the second build reuses the compiled packages of the first (the build cache) and so
// checks the link and the stamping; CSMUTEX_RELEASE_COLD=1 makes it compile everything
// again in an empty cache.
func TestReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds csmutex twice")
	}
	srcA := filepath.Join(testenv.TempDir(t), "a", "csmutex")
	copyModule(t, repoRoot(t), srcA)
	outA, artsA := releaseLinuxAMD64(t, srcA)
	srcB := filepath.Join(testenv.TempDir(t), "elsewhere", "b")
	copyModule(t, srcA, srcB)
	if os.Getenv("CSMUTEX_RELEASE_COLD") == "1" {
		// Recompile everything, the standard library included, instead of relinking
		// cached packages: what a build on another machine does. About 30 s more.
		t.Setenv("GOCACHE", testenv.TempDir(t))
	}
	outB, artsB := releaseLinuxAMD64(t, srcB)

	sumsA, errA := os.ReadFile(filepath.Join(outA, "SHA256SUMS"))
	sumsB, errB := os.ReadFile(filepath.Join(outB, "SHA256SUMS"))
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if !bytes.Equal(sumsA, sumsB) {
		t.Fatalf("not reproducible:\n%s\nvs\n%s", sumsA, sumsB)
	}
	if len(artsA) != 1 || artsA[0].Name != "csmutex_linux_amd64" || artsA[0] != artsB[0] {
		t.Fatalf("artifacts %+v %+v", artsA, artsB)
	}
	if want := artsA[0].SHA256 + "  csmutex_linux_amd64\n"; string(sumsA) != want {
		t.Errorf("SHA256SUMS = %q, want %q", sumsA, want)
	}
	bin := filepath.Join(outA, "csmutex_linux_amd64")
	if a, err := hashFile(bin); err != nil || a.SHA256 != artsA[0].SHA256 {
		t.Errorf("SHA256SUMS does not match the file: %+v %v", a, err)
	}
	if entries, _ := os.ReadDir(outA); len(entries) != 2 {
		t.Errorf("output holds %d entries, want the binary and SHA256SUMS (scratch left behind?)", len(entries))
	}

	// The linux binary is static: no interpreter, no shared libraries.
	if err := checkStatic(bin); err != nil {
		t.Error(err)
	}

	// Stamped: the binary reports the version and commit it was given.
	if runtime.GOOS == linuxAMD64.OS && runtime.GOARCH == linuxAMD64.Arch {
		out, err := exec.Command(bin, "version").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"csmutex v9.8.7-test\n", "commit:  0123456789abcdef0123456789abcdef01234567\n", "os/arch: linux/amd64\n"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("version output lacks %q:\n%s", want, out)
			}
		}
	}
}

// checkStatic reports why the ELF file at path is not a static executable: it names an
// interpreter (PT_INTERP, the dynamic loader) or needs shared libraries (DT_NEEDED).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var problems []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			problems = append(problems, "has PT_INTERP (a dynamic loader)")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil {
		problems = append(problems, "reading DT_NEEDED: "+err.Error())
	} else if len(libs) > 0 {
		problems = append(problems, "needs shared libraries (DT_NEEDED) "+strings.Join(libs, ", "))
	}
	if len(problems) > 0 {
		return &staticError{path: path, problems: problems}
	}
	return nil
}

type staticError struct {
	path     string
	problems []string
}

func (e *staticError) Error() string {
	return filepath.Base(e.path) + " is not static: " + strings.Join(e.problems, "; ")
}

// TestCheckStaticDetectsCgo is the control for checkStatic: a cgo build of a program
// using net and os/user (what csmutex uses) is dynamic, and checkStatic says so. Without
// it, a checkStatic that never fails would pass TestReproducible.
func TestCheckStaticDetectsCgo(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs a native ELF build")
	}
	if out, err := exec.Command("go", "env", "CGO_ENABLED").Output(); err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Skip("cgo unavailable (no C compiler)")
	}
	dir := testenv.TempDir(t)
	files := map[string]string{
		"go.mod": "module cgoprobe\n\ngo 1.22\n",
		"main.go": `package main

import (
	"fmt"
	"net"
	"os/user"
)

func main() {
	u, _ := user.Current()
	addrs, _ := net.LookupHost("localhost")
	fmt.Println(u, addrs)
}
`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build := func(cgo string) string {
		bin := filepath.Join(dir, "probe-cgo"+cgo)
		cmd := exec.Command("go", "build", "-o", bin, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo, "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cgo build: %v\n%s", err, out)
		}
		return bin
	}
	if err := checkStatic(build("1")); err == nil {
		t.Error("checkStatic passed a cgo build, which links libc dynamically")
	} else {
		t.Logf("cgo build, as expected: %v", err)
	}
	if err := checkStatic(build("0")); err != nil {
		t.Errorf("CGO_ENABLED=0: %v", err)
	}
}

func TestBuildEnvPinsOutputSettings(t *testing.T) {
	env := buildEnv([]string{"PATH=/bin", "GOFLAGS=-race", "CGO_ENABLED=1", "GOAMD64=v3", "GOOS=plan9", "HOME=/h"}, target{"darwin", "amd64"})
	got := map[string]int{}
	for _, kv := range env {
		got[kv]++
	}
	for _, want := range []string{"PATH=/bin", "HOME=/h", "GOOS=darwin", "GOARCH=amd64", "CGO_ENABLED=0", "GOFLAGS=", "GOAMD64=v1"} {
		if got[want] != 1 {
			t.Errorf("env lacks %q once: %q", want, env)
		}
	}
	for _, bad := range []string{"GOFLAGS=-race", "CGO_ENABLED=1", "GOAMD64=v3", "GOOS=plan9"} {
		if got[bad] != 0 {
			t.Errorf("env keeps %q", bad)
		}
	}
	if env := buildEnv(nil, target{"linux", "arm64"}); !strings.Contains(strings.Join(env, " "), "GOARM64=v8.0") {
		t.Errorf("arm64 env %q", env)
	}
}

func TestParseTargets(t *testing.T) {
	all, err := parseTargets("all")
	if err != nil || len(all) != 6 {
		t.Fatalf("all: %v %v", all, err)
	}
	ts, err := parseTargets("linux/amd64, windows/amd64,darwin/arm64,linux/amd64")
	if err != nil || len(ts) != 3 || ts[0] != linuxAMD64 || ts[1] != (target{"windows", "amd64"}) || ts[2] != (target{"darwin", "arm64"}) {
		t.Errorf("list: %v %v", ts, err)
	}
	for _, bad := range []string{"", "linux", "plan9/amd64", "linux/386", ","} {
		if _, err := parseTargets(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{{"-targets", "linux/mips"}, {"-nope"}, {"extra"}, {"-cmds", ","}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 64 {
			t.Errorf("%v: exit %d, want 64; stderr %s", args, code, stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, &stdout, &stderr); code != 0 || !strings.Contains(stderr.String(), "-targets") {
		t.Errorf("-h: %d %s", code, stderr.String())
	}
	if _, err := build(context.Background(), options{Out: testenv.TempDir(t), Version: "v1 bad"}); err == nil {
		t.Error("a version with a space was accepted")
	}
}
