// Command release builds the release binaries of csmutex (and the mock CloudShell,
// mockapi) for every supported platform, reproducibly, and writes their SHA256SUMS:
//
//	go run ./internal/release -out dist
//
// writes dist/csmutex_<os>_<arch>[.exe], dist/mockapi_<os>_<arch>[.exe] and
// dist/SHA256SUMS (the format of sha256sum(1): `sha256sum -c SHA256SUMS` checks it) for
// linux, windows and darwin on amd64 and arm64.
//
// Every binary is static and reproducible: built with CGO_ENABLED=0 (so the Linux
// binaries need no libc: the net and os/user packages use their pure-Go versions),
// -trimpath (no local paths), -buildvcs=false, and the version and commit stamped with
// -ldflags -X instead, so the same source, version string and Go toolchain give the same
// bytes on any machine, in any directory. GOFLAGS is ignored and GOAMD64/GOARM64 are
// pinned to their defaults (v1, v8.0) so that the builder's environment cannot change
// the output. The version defaults to `git describe --tags --always --dirty` and the
// commit to `git rev-parse HEAD`; -version and -commit override them (needed outside a
// git checkout, where the binaries otherwise report "dev" and "unknown").
//
// It is a Go program rather than a script so that it runs the same on Windows.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// allTargets are the release platforms: every execution server a CloudShell driver
// runs on.
var allTargets = []target{
	{"linux", "amd64"}, {"linux", "arm64"},
	{"windows", "amd64"}, {"windows", "arm64"},
	{"darwin", "amd64"}, {"darwin", "arm64"},
}

// allCommands are the binaries built for each target, as package paths of the module.
var allCommands = []string{"csmutex", "mockapi"}

type target struct{ OS, Arch string }

func (t target) String() string { return t.OS + "/" + t.Arch }

// options of one release build.
type options struct {
	Src      string   // the module root; "" = the module containing the working directory
	Out      string   // output directory, created if missing
	Targets  []target // platforms
	Commands []string // commands under ./cmd
	Version  string   // stamped into main.version ("" = not stamped)
	Commit   string   // stamped into main.commit ("" = not stamped)
	Strip    bool     // -ldflags "-s -w": no symbol table or DWARF (stack traces still work)
	Log      io.Writer
}

// artifact is one built file.
type artifact struct {
	Name   string // file name in Out
	SHA256 string // hex
	Size   int64
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		out      = fs.String("out", "dist", "output `DIR` (created if missing)")
		targets  = fs.String("targets", "all", "comma-separated `OS/ARCH` list, or \"all\": "+targetList(allTargets))
		commands = fs.String("cmds", strings.Join(allCommands, ","), "comma-separated `COMMANDS` under ./cmd to build")
		version  = fs.String("version", "", "version to stamp (default: git describe --tags --always --dirty)")
		commit   = fs.String("commit", "", "commit to stamp (default: git rev-parse HEAD)")
		strip    = fs.Bool("strip", true, "strip the symbol table and DWARF (-ldflags \"-s -w\")")
		src      = fs.String("src", "", "module root `DIR` (default: the module of the working directory)")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./internal/release [flags]\n\nBuilds static, reproducible release binaries and their SHA256SUMS.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 64
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "release: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 64
	}
	ts, err := parseTargets(*targets)
	if err != nil {
		fmt.Fprintf(stderr, "release: -targets: %v\n", err)
		return 64
	}
	opts := options{Src: *src, Out: *out, Targets: ts, Commands: splitList(*commands), Version: *version, Commit: *commit, Strip: *strip, Log: stderr}
	if len(opts.Commands) == 0 {
		fmt.Fprintln(stderr, "release: -cmds is empty")
		return 64
	}
	root, err := moduleRoot(ctx, opts.Src)
	if err != nil {
		fmt.Fprintf(stderr, "release: %v\n", err)
		return 1
	}
	opts.Src = root
	if opts.Version == "" {
		if v, err := gitOutput(ctx, root, "describe", "--tags", "--always", "--dirty"); err == nil {
			opts.Version = v
		} else {
			fmt.Fprintf(stderr, "release: no version from git (%v); the binaries will say \"dev\" unless -version is given\n", err)
		}
	}
	if opts.Commit == "" {
		if c, err := gitOutput(ctx, root, "rev-parse", "HEAD"); err == nil {
			opts.Commit = c
		} else {
			fmt.Fprintf(stderr, "release: no commit from git (%v); the binaries will say \"unknown\" unless -commit is given\n", err)
		}
	}
	start := time.Now()
	arts, err := build(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "release: %v\n", err)
		return 1
	}
	for _, a := range arts {
		fmt.Fprintf(stdout, "%s  %s  %d bytes\n", a.SHA256, filepath.Join(opts.Out, a.Name), a.Size)
	}
	fmt.Fprintf(stdout, "wrote %s (version %s, commit %s) in %s\n", filepath.Join(opts.Out, "SHA256SUMS"),
		orDefault(opts.Version, "dev"), orDefault(opts.Commit, "unknown"), time.Since(start).Round(time.Millisecond))
	return 0
}

// build builds every command for every target into opts.Out and writes
// opts.Out/SHA256SUMS listing them, sorted by name.
func build(ctx context.Context, opts options) ([]artifact, error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	for _, s := range []string{opts.Version, opts.Commit} {
		if strings.ContainsAny(s, " \t\r\n'\"") {
			return nil, fmt.Errorf("version and commit must not contain spaces or quotes: %q", s)
		}
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, err
	}
	// Build into a scratch directory inside Out, so the final renames stay on one file
	// system and a failed build leaves no half-written binary behind.
	scratch, err := os.MkdirTemp(opts.Out, ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)

	ldflags := []string{}
	if opts.Strip {
		ldflags = append(ldflags, "-s", "-w")
	}
	if opts.Version != "" {
		ldflags = append(ldflags, "-X", "main.version="+opts.Version)
	}
	if opts.Commit != "" {
		ldflags = append(ldflags, "-X", "main.commit="+opts.Commit)
	}
	var arts []artifact
	for _, t := range opts.Targets {
		dir := filepath.Join(scratch, t.OS+"_"+t.Arch)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, err
		}
		args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=" + strings.Join(ldflags, " "), "-o", dir + string(filepath.Separator)}
		for _, c := range opts.Commands {
			args = append(args, "./cmd/"+c)
		}
		began := time.Now()
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = opts.Src
		cmd.Env = buildEnv(os.Environ(), t)
		var errBuf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &errBuf, &errBuf
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("go build for %s: %v\n%s", t, err, errBuf.String())
		}
		fmt.Fprintf(opts.Log, "built %s in %s\n", t, time.Since(began).Round(time.Millisecond))
		for _, c := range opts.Commands {
			exe := ""
			if t.OS == "windows" {
				exe = ".exe"
			}
			name := fmt.Sprintf("%s_%s_%s%s", c, t.OS, t.Arch, exe)
			dst := filepath.Join(opts.Out, name)
			if err := os.Rename(filepath.Join(dir, c+exe), dst); err != nil {
				return nil, err
			}
			a, err := hashFile(dst)
			if err != nil {
				return nil, err
			}
			a.Name = name
			arts = append(arts, a)
		}
	}
	slices.SortFunc(arts, func(a, b artifact) int { return strings.Compare(a.Name, b.Name) })
	var sums bytes.Buffer
	for _, a := range arts {
		fmt.Fprintf(&sums, "%s  %s\n", a.SHA256, a.Name)
	}
	if err := os.WriteFile(filepath.Join(opts.Out, "SHA256SUMS"), sums.Bytes(), 0o644); err != nil {
		return nil, err
	}
	return arts, nil
}

// buildEnv is env with the settings that decide the output bytes fixed: the target,
// no cgo, the default instruction-set levels, and no GOFLAGS (whose -race, -tags or
// -ldflags would change the binaries behind our back).
func buildEnv(env []string, t target) []string {
	drop := []string{"GOOS", "GOARCH", "CGO_ENABLED", "GOFLAGS", "GOAMD64", "GOARM64", "GO386", "GOARM"}
	out := make([]string, 0, len(env)+6)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if runtime.GOOS == "windows" {
			k = strings.ToUpper(k)
		}
		if !slices.Contains(drop, k) {
			out = append(out, kv)
		}
	}
	out = append(out, "GOOS="+t.OS, "GOARCH="+t.Arch, "CGO_ENABLED=0", "GOFLAGS=")
	switch t.Arch {
	case "amd64":
		out = append(out, "GOAMD64=v1")
	case "arm64":
		out = append(out, "GOARM64=v8.0")
	}
	return out
}

func hashFile(path string) (artifact, error) {
	f, err := os.Open(path)
	if err != nil {
		return artifact{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return artifact{}, err
	}
	return artifact{SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// moduleRoot returns src, or the root of the module containing the working directory.
func moduleRoot(ctx context.Context, src string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "env", "GOMOD")
	cmd.Dir = src
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: run from the csmutex repository or give -src")
	}
	return filepath.Dir(gomod), nil
}

func gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(errBuf.String()); msg != "" {
			return "", fmt.Errorf("git %s: %s", args[0], msg)
		}
		return "", fmt.Errorf("git %s: %v", args[0], err)
	}
	return strings.TrimSpace(string(out)), nil
}

func parseTargets(s string) ([]target, error) {
	if s == "all" {
		return slices.Clone(allTargets), nil
	}
	var ts []target
	for _, item := range splitList(s) {
		goos, goarch, ok := strings.Cut(item, "/")
		t := target{goos, goarch}
		if !ok || !slices.Contains(allTargets, t) {
			return nil, fmt.Errorf("%q is not one of %s", item, targetList(allTargets))
		}
		if !slices.Contains(ts, t) {
			ts = append(ts, t)
		}
	}
	if len(ts) == 0 {
		return nil, errors.New("no targets")
	}
	return ts, nil
}

func targetList(ts []target) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.String()
	}
	return strings.Join(s, ",")
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
