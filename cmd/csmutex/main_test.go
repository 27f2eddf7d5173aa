package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/logon"
	"github.com/csmutex/csmutex/internal/syncbuf"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
)

// Binaries built once by TestMain for the process tests.
var (
	csmutexBin string
	mockBin    string
	buildErr   error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "csmutex-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// status remembers first sightings in the user's cache directory: never the real one.
	cache := filepath.Join(dir, "cache")
	os.Setenv("XDG_CACHE_HOME", cache)
	cacheDir = func() (string, error) { return cache, nil }
	csmutexBin = filepath.Join(dir, "csmutex")
	mockBin = filepath.Join(dir, "mockapi")
	for _, b := range []struct{ out, pkg string }{{csmutexBin, "."}, {mockBin, "../mockapi"}} {
		out, err := exec.Command("go", "build", "-o", b.out, b.pkg).CombinedOutput()
		if err != nil {
			buildErr = errors.Join(buildErr, fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out))
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Secrets used wherever a test passes credentials; none may ever be printed.
const (
	secretPassword = "pw-Zq8-hunter2-secret"
	secretToken    = "tok-Xy7-admin-secret"
)

// clearEnv unsets every variable csmutex reads, for the duration of the test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"CLOUDSHELL_HOST", "CLOUDSHELL_PORT", "CLOUDSHELL_SCHEME", "CLOUDSHELL_USER",
		"CLOUDSHELL_PASSWORD", "CLOUDSHELL_DOMAIN", "CLOUDSHELL_TOKEN", "CLOUDSHELL_RESERVATION_ID", testJitterEnv} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

// runMain runs Main in-process and returns the exit code, stdout and stderr.
func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr syncbuf.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := Main(ctx, args, nil, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// countingListener accepts and counts TCP connections: a server that must never be
// contacted.
func countingListener(t *testing.T) (port int, count func() int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port, n.Load
}

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{
		"30": 30 * time.Second, "0": 0, "1.5": 1500 * time.Millisecond, " 2 ": 2 * time.Second,
		"90s": 90 * time.Second, "5m": 5 * time.Minute, "1h30m": 90 * time.Minute, "300ms": 300 * time.Millisecond,
		"1e1": 10 * time.Second,
	}
	for in, want := range good {
		got, err := parseDuration(in)
		if err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	// "9223372036.854775808" is 2^63 ns, one past the largest time.Duration: it used to
	// wrap around to a negative wait.
	for _, in := range []string{"", "abc", "-1", "-5s", "inf", "NaN", "0x10", "5 minutes", "1e30", "9223372036.854775808", "1e400", "9999999h"} {
		if got, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) = %v, want an error", in, got)
		}
	}
}

// baseArgs are valid connection flags pointing at a server that must not be contacted.
func baseArgs(port int) []string {
	return []string{"--host", "127.0.0.1", "--port", strconv.Itoa(port), "--user", "admin", "--password", secretPassword}
}

func TestParseRunShortAndLongFlags(t *testing.T) {
	clearEnv(t)
	port, _ := countingListener(t)
	cases := []struct {
		name  string
		args  []string
		check func(o *runOptions) error
	}{
		{"defaults", []string{"-r", "R1"}, func(o *runOptions) error {
			if o.timeout != 5*time.Minute || o.lease != time.Minute || o.killGrace != 5*time.Second ||
				o.conflict != 75 || o.name != "MUTEX" || o.nonblock || o.reservation != "R1" {
				return fmt.Errorf("defaults: %+v", *o)
			}
			return nil
		}},
		{"short", []string{"-r", "R2", "-w", "30", "-n", "-E", "3", "-q"}, func(o *runOptions) error {
			if o.reservation != "R2" || o.timeout != 30*time.Second || !o.nonblock || o.conflict != 3 || !o.log.quiet {
				return fmt.Errorf("short: %+v", *o)
			}
			return nil
		}},
		{"long", []string{"--reservation", "R3", "--timeout", "1m30s", "--nonblock", "--conflict-exit-code", "9",
			"--verbose", "--lease", "2", "--kill-grace", "150ms", "--name", "LOCK2", "--owner", "me"}, func(o *runOptions) error {
			if o.reservation != "R3" || o.timeout != 90*time.Second || !o.nonblock || o.conflict != 9 || !o.log.verbose ||
				o.lease != 2*time.Second || o.killGrace != 150*time.Millisecond || o.name != "LOCK2" || o.owner != "me" {
				return fmt.Errorf("long: %+v", *o)
			}
			return nil
		}},
		{"double-dash-short", []string{"--r", "R4", "--w=0.5"}, func(o *runOptions) error {
			if o.reservation != "R4" || o.timeout != 500*time.Millisecond {
				return fmt.Errorf("--r/--w: %+v", *o)
			}
			return nil
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append(append(baseArgs(port), c.args...), "--", "echo", "hi")
			var stdout, stderr bytes.Buffer
			o, code := parseRun(args, &stdout, &stderr)
			if o == nil {
				t.Fatalf("parseRun: exit %d: %s", code, stderr.String())
			}
			if err := c.check(o); err != nil {
				t.Error(err)
			}
			if strings.Join(o.command, " ") != "echo hi" {
				t.Errorf("command = %q", o.command)
			}
		})
	}
}

func TestEnvFallbacks(t *testing.T) {
	clearEnv(t)
	t.Setenv("CLOUDSHELL_HOST", "cs.example")
	t.Setenv("CLOUDSHELL_PORT", "9000")
	t.Setenv("CLOUDSHELL_SCHEME", "https")
	t.Setenv("CLOUDSHELL_USER", "envuser")
	t.Setenv("CLOUDSHELL_PASSWORD", secretPassword)
	t.Setenv("CLOUDSHELL_DOMAIN", "Dom")
	t.Setenv("CLOUDSHELL_RESERVATION_ID", "ENV-RES")

	var stderr bytes.Buffer
	o, code := parseRun([]string{"--", "true"}, io.Discard, &stderr)
	if o == nil {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	c := o.conn
	if c.host != "cs.example" || c.port != 9000 || c.scheme != "https" || c.user != "envuser" ||
		c.password != secretPassword || c.domain != "Dom" || o.reservation != "ENV-RES" {
		t.Errorf("env not applied: host=%q port=%d scheme=%q user=%q domain=%q res=%q", c.host, c.port, c.scheme, c.user, c.domain, o.reservation)
	}

	// Flags win, short or long.
	o, code = parseRun([]string{"-r", "FLAG-RES", "--port", "9001", "--user", "u2", "--", "true"}, io.Discard, &stderr)
	if o == nil {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if o.reservation != "FLAG-RES" || o.conn.port != 9001 || o.conn.user != "u2" || o.conn.host != "cs.example" {
		t.Errorf("flags should win: res=%q port=%d user=%q", o.reservation, o.conn.port, o.conn.user)
	}

	// A bad environment value is a usage error.
	t.Setenv("CLOUDSHELL_PORT", "eighty")
	stderr.Reset()
	if o, code = parseRun([]string{"--", "true"}, io.Discard, &stderr); o != nil || code != exitUsage {
		t.Fatalf("bad CLOUDSHELL_PORT: exit %d, want 64", code)
	}
	if !strings.Contains(stderr.String(), "CLOUDSHELL_PORT") {
		t.Errorf("message should name the variable: %s", stderr.String())
	}
}

// Every usage error exits 64 before any network call: the server at --port counts the
// connections it gets and must get none.
func TestUsageErrorsNeverContactServer(t *testing.T) {
	clearEnv(t)
	port, conns := countingListener(t)
	base := baseArgs(port)
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	cases := map[string][]string{
		"no command":              {},
		"unknown command":         {"frobnicate"},
		"unknown flag":            append([]string{"run"}, with("--bogus", "-r", "R", "--", "true")...),
		"-c and a command":        append([]string{"run"}, with("-r", "R", "-c", "true", "--", "true")...),
		"-c and a command word":   append([]string{"run"}, with("-r", "R", "-c", "true", "echo")...),
		"empty -c":                append([]string{"run"}, with("-r", "R", "-c", "")...),
		"poll below the floor":    append([]string{"run"}, with("-r", "R", "--poll-interval", "100ms", "--", "true")...),
		"poll max below min":      append([]string{"run"}, with("-r", "R", "--poll-interval", "5s-2s", "--", "true")...),
		"bad poll interval":       append([]string{"run"}, with("-r", "R", "--poll-interval", "often", "--", "true")...),
		"short legacy max age":    append([]string{"run"}, with("-r", "R", "--legacy-max-age", "5s", "--", "true")...),
		"empty service model":     append([]string{"run"}, with("-r", "R", "--service-model", " ", "--", "true")...),
		"sandbox messages often":  append([]string{"run"}, with("-r", "R", "--sandbox-messages=1s", "--", "true")...),
		"sandbox messages rarely": append([]string{"run"}, with("-r", "R", "--sandbox-messages=25h", "--", "true")...),
		"sandbox messages value":  append([]string{"run"}, with("-r", "R", "--sandbox-messages", "30s", "--", "true")...),
		"serve poll too fast":     append([]string{"serve"}, with("--poll-interval", "10ms")...),
		"status empty model":      append([]string{"status"}, with("-r", "R", "--service-model", "")...),
		"unknown global option":   append([]string{"--bogus"}, append([]string{"run"}, with("-r", "R", "--", "true")...)...),
		"global options only":     {"--log-format", "json"},
		"missing command":         append([]string{"run"}, with("-r", "R", "--")...),
		"missing reservation":     append([]string{"run"}, with("--", "true")...),
		"bad duration":            append([]string{"run"}, with("-r", "R", "-w", "soon", "--", "true")...),
		"negative lease":          append([]string{"run"}, with("-r", "R", "--lease", "-1s", "--", "true")...),
		"tiny lease":              append([]string{"run"}, with("-r", "R", "--lease", "1ms", "--", "true")...),
		"bad kill grace":          append([]string{"run"}, with("-r", "R", "--kill-grace", "x", "--", "true")...),
		"exit code out of range":  append([]string{"run"}, with("-r", "R", "-E", "300", "--", "true")...),
		"bad log format":          append([]string{"run"}, with("-r", "R", "--log-format", "xml", "--", "true")...),
		"quiet and verbose":       append([]string{"run"}, with("-r", "R", "-q", "-v", "--", "true")...),
		"bad scheme":              append([]string{"run"}, with("-r", "R", "--scheme", "ftp", "--", "true")...),
		"bad port":                append([]string{"run"}, with("-r", "R", "--port", "70000", "--", "true")...),
		"empty name":              append([]string{"run"}, with("-r", "R", "--name", "", "--", "true")...),
		"no host":                 {"run", "-r", "R", "--user", "u", "--", "true"},
		"no credentials":          {"run", "-r", "R", "--host", "127.0.0.1", "--port", strconv.Itoa(port), "--", "true"},
		"status extra arg":        append([]string{"status"}, with("-r", "R", "extra")...),
		"status no reservation":   append([]string{"status"}, base...),
		"status unknown flag":     append([]string{"status"}, with("-r", "R", "--frob")...),
		"release without --force": append([]string{"release"}, with("-r", "R")...),
		"release no reservation":  append([]string{"release", "--force"}, base...),
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := runMain(t, args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want 64\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) < 2 || !strings.Contains(stderr, "usage: ") {
				t.Errorf("want a one-line reason and the usage on stderr, got:\n%s", stderr)
			}
			if strings.Contains(stderr, secretPassword) || strings.Contains(stdout, secretPassword) {
				t.Errorf("password printed:\n%s%s", stdout, stderr)
			}
		})
	}
	// Brief pause for any connection attempt in flight to be accepted.
	time.Sleep(20 * time.Millisecond)
	if n := conns(); n != 0 {
		t.Fatalf("usage errors made %d connection(s) to the server", n)
	}
}

func TestTestJitterEnv(t *testing.T) {
	clearEnv(t)
	t.Setenv(testJitterEnv, "5ms,20ms")
	if opts, err := testJitter(); err != nil || len(opts) != 1 {
		t.Fatalf("testJitter = %v, %v", opts, err)
	}
	for _, bad := range []string{"5ms", "x,y", "20ms,5ms", "0s,1ms"} {
		t.Setenv(testJitterEnv, bad)
		if _, err := testJitter(); err == nil {
			t.Errorf("%s=%q accepted", testJitterEnv, bad)
		}
	}
}

func TestExitCodeMapping(t *testing.T) {
	_, permanent := mutex.New(nil, "R").TryLock(context.Background())
	if !mutex.IsPermanent(permanent) {
		t.Fatalf("expected a permanent error, got %v", permanent)
	}
	holder := mutex.Owner{Name: "other", Token: "abc"}
	transport := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"locked", &mutex.LockedError{Name: "MUTEX", Holder: holder}, 42},
		{"timeout with holder", &mutex.TimeoutError{Name: "MUTEX", Holder: holder}, 42},
		{"timeout, holder seen, last error transient", &mutex.TimeoutError{Name: "MUTEX", Holder: holder, Last: transport}, 42},
		{"timeout, never reached the server", &mutex.TimeoutError{Name: "MUTEX", Last: transport, Unavailable: true}, exitUnavailable},
		{"usage", usageErrorf("bad"), exitUsage},
		{"dial", &logon.Error{Addr: "h:1", Err: transport}, exitUnavailable},
		{"logon refused", &logon.Error{Addr: "h:1", Err: &cloudshell.APIError{Method: "Logon", Code: 100, Message: "User 'x' is not authorized"}}, exitNoPerm},
		{"unauthorized", fmt.Errorf("x: %w", cloudshell.ErrUnauthorized), exitNoPerm},
		{"setup", fmt.Errorf("x: %w", mutex.ErrSetup), exitDataErr},
		{"owner attribute missing", mutex.ErrOwnerAttributeMissing, exitDataErr},
		{"permanent (bad reservation)", permanent, exitDataErr},
		{"transient", transport, exitUnavailable},
		{"canceled", context.Canceled, 130},
	}
	for _, c := range cases {
		if got := lockFailureCode(c.err, 42); got != c.want {
			t.Errorf("%s: lockFailureCode = %d, want %d", c.name, got, c.want)
		}
	}
	if exitCodeFor(nil) != 0 {
		t.Error("exitCodeFor(nil) != 0")
	}
	// The help table and the constants agree.
	for _, code := range []int{exitOK, exitNotHeld, exitUsage, exitDataErr, exitUnavailable, exitLockLost, exitConflict, exitNoPerm, exitCannotExec, exitNotFound} {
		if !strings.Contains(exitCodesHelp, fmt.Sprintf("\n  %-7d ", code)) {
			t.Errorf("exit code %d missing from the help table", code)
		}
	}
}

func TestHelp(t *testing.T) {
	clearEnv(t)
	for _, args := range [][]string{{"--help"}, {"help"}, {"-h"}, {"run", "--help"}, {"run", "-h"}, {"help", "run"},
		{"status", "--help"}, {"release", "--help"}, {"help", "status"}} {
		code, stdout, stderr := runMain(t, args...)
		if code != 0 || stderr != "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
		if !strings.Contains(stdout, "Exit codes:") || !strings.Contains(stdout, "75") {
			t.Errorf("%v: help lacks the exit code table:\n%s", args, stdout)
		}
	}
	_, stdout, _ := runMain(t, "run", "--help")
	for _, want := range []string{"-w, --timeout DURATION", "-n, --nonblock", "-E, --conflict-exit-code CODE", "-r, --reservation ID",
		"$CLOUDSHELL_PASSWORD", "$CLOUDSHELL_HOST", "-q, --quiet", "-v, --verbose", "--kill-grace", "--lease"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("run --help lacks %q", want)
		}
	}
	code, stdout, _ := runMain(t, "version")
	if code != 0 || !strings.HasPrefix(stdout, "csmutex ") {
		t.Errorf("version: %d %q", code, stdout)
	}
}

// inProcessMock starts an in-process mock CloudShell with one reservation.
func inProcessMock(t *testing.T, opts ...mockapi.Option) (host string, port int, res string) {
	t.Helper()
	s := mockapi.New(opts...)
	if _, err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	host, port = s.Addr()
	return host, port, s.CreateReservation("test", "admin")
}

// No output of any kind (help, usage errors, logon failures, debug logs of API calls,
// status) contains the password or the token, whether given as flags or in the environment.
func TestSecretsNeverPrinted(t *testing.T) {
	clearEnv(t)
	host, port, res := inProcessMock(t)
	p := strconv.Itoa(port)
	check := func(name string, code int, stdout, stderr string) {
		t.Helper()
		for _, s := range []string{secretPassword, secretToken} {
			if strings.Contains(stdout, s) || strings.Contains(stderr, s) {
				t.Errorf("%s (exit %d): secret %q printed:\nstdout: %s\nstderr: %s", name, code, s, stdout, stderr)
			}
		}
	}
	scenarios := map[string][]string{
		"help":                    {"--help"},
		"run help":                {"run", "--help"},
		"status help":             {"status", "--help"},
		"usage error":             {"run", "--password", secretPassword, "--token", secretToken, "--bogus"},
		"mistyped short flag":     {"run", "-P" + secretPassword},
		"mistyped short flag =":   {"run", "-r", "R", "-P=" + secretPassword},
		"mistyped long flag =":    {"status", "--passwd=" + secretPassword},
		"bad syntax":              {"status", "---password=" + secretPassword},
		"global mistyped":         {"-P" + secretPassword, "status"},
		"wrong password":          {"run", "-v", "--host", host, "--port", p, "--user", "admin", "--password", secretPassword, "-r", res, "--", "true"},
		"bad token":               {"status", "-v", "--host", host, "--port", p, "--token", secretToken, "-r", res},
		"unreachable":             {"status", "-v", "--host", "127.0.0.1", "--port", "1", "--user", "admin", "--password", secretPassword, "-r", res},
		"control char in token":   {"status", "--host", host, "--port", p, "--token", secretToken + "\n", "-r", res},
		"json log, wrong pw":      {"status", "--log-format", "json", "-v", "--host", host, "--port", p, "--user", "admin", "--password", secretPassword, "-r", res},
		"release without --force": {"release", "--host", host, "--port", p, "--user", "admin", "--password", secretPassword, "-r", res},
	}
	for name, args := range scenarios {
		code, stdout, stderr := runMain(t, args...)
		check(name, code, stdout, stderr)
	}

	// The same with the secrets in the environment.
	t.Setenv("CLOUDSHELL_PASSWORD", secretPassword)
	t.Setenv("CLOUDSHELL_TOKEN", secretToken)
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"release", "--help"}, {"run", "--frob"},
		{"status", "-v", "--host", host, "--port", p, "-r", res}} {
		code, stdout, stderr := runMain(t, args...)
		check(strings.Join(args, " "), code, stdout, stderr)
	}
}

func TestDialFailures(t *testing.T) {
	clearEnv(t)
	host, port, res := inProcessMock(t)
	code, _, stderr := runMain(t, "status", "--host", "127.0.0.1", "--port", "1", "--user", "admin", "--password", "x", "-r", res)
	if code != exitUnavailable || !strings.Contains(stderr, "127.0.0.1:1") {
		t.Errorf("unreachable: exit %d, want 69 naming 127.0.0.1:1:\n%s", code, stderr)
	}
	code, _, stderr = runMain(t, "status", "--host", host, "--port", strconv.Itoa(port), "--user", "admin", "--password", "wrong", "-r", res)
	if code != exitNoPerm || !strings.Contains(stderr, fmt.Sprintf("%s:%d", host, port)) {
		t.Errorf("wrong password: exit %d, want 77 naming the address:\n%s", code, stderr)
	}
	code, stdout, stderr := runMain(t, "status", "--host", host, "--port", strconv.Itoa(port), "--user", "admin", "--password", "admin", "-r", "no-such-reservation")
	if code != exitDataErr {
		t.Errorf("unknown reservation: exit %d, want 65:\n%s%s", code, stdout, stderr)
	}
}
