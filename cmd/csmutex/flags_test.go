package main

import (
	"bytes"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The spellings flock and consul users type: combined short flags, attached values,
// --name=value, and the flag package's old spellings (-timeout, --w) that scripts written
// for earlier csmutex versions use.
func TestRunFlagSpellings(t *testing.T) {
	clearEnv(t)
	port, _ := countingListener(t)
	cases := []struct {
		name    string
		args    []string
		command []string
		check   func(o *runOptions) bool
	}{
		{"combined short", []string{"-r", "R", "-qn", "--", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.log.quiet && o.nonblock }},
		{"attached value", []string{"-rR", "-w5m", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.reservation == "R" && o.timeout == 5*time.Minute }},
		{"separate value", []string{"-r", "R", "-w", "5m", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.timeout == 5*time.Minute }},
		{"long with =", []string{"--reservation=R", "--timeout=5m", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.timeout == 5*time.Minute }},
		{"combined with value last", []string{"-r", "R", "-nw", "7", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.nonblock && o.timeout == 7*time.Second }},
		{"short with =", []string{"-r=R", "-E=3", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.reservation == "R" && o.conflict == 3 }},
		{"old single-dash long", []string{"-reservation", "R", "-timeout", "30", "-nonblock", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.reservation == "R" && o.timeout == 30*time.Second && o.nonblock }},
		{"old single-dash long with =", []string{"-reservation=R", "-lease=2s", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.lease == 2*time.Second }},
		{"old double-dash short", []string{"--r", "R", "--w=0.5", "--n", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.timeout == 500*time.Millisecond && o.nonblock }},
		{"a value is never respelled", []string{"-r", "R", "--owner", "-name", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.owner == "-name" && o.name == "MUTEX" }},
		{"a short flag's value is never respelled", []string{"-r", "-timeout", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.reservation == "-timeout" && o.timeout == 5*time.Minute }},
		// Everything from the command word on is the command's, flags included.
		{"command word ends the options", []string{"-r", "R", "sh", "-c", "x -n", "-q"}, []string{"sh", "-c", "x -n", "-q"},
			func(o *runOptions) bool { return !o.nonblock && !o.log.quiet }},
		{"the command's -name is its own", []string{"-r", "R", "find", "-name", "x"}, []string{"find", "-name", "x"},
			func(o *runOptions) bool { return o.name == "MUTEX" }},
		{"after --", []string{"-r", "R", "--", "-weird", "-n"}, []string{"-weird", "-n"},
			func(o *runOptions) bool { return !o.nonblock }},
		{"-c line", []string{"-r", "R", "-c", "echo a && echo b"}, shellCommand("echo a && echo b"),
			func(o *runOptions) bool { return true }},
		{"--command=line", []string{"-r", "R", "--command=exit 3"}, shellCommand("exit 3"),
			func(o *runOptions) bool { return true }},
		{"lock options", []string{"-r", "R", "--service-model", "My Mutex", "--legacy-max-age", "10m", "--poll-interval", "1s-3s", "x"}, []string{"x"},
			func(o *runOptions) bool {
				return o.lock.model == "My Mutex" && o.lock.legacyMaxAge == 10*time.Minute && o.lock.poll == pollInterval{time.Second, 3 * time.Second}
			}},
		{"sandbox messages default", []string{"-r", "R", "--sandbox-messages", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.sandboxEvery == defaultSandboxEvery }},
		{"sandbox messages every", []string{"-r", "R", "--sandbox-messages=30s", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.sandboxEvery == 30*time.Second }},
		{"sandbox messages off by default", []string{"-r", "R", "x"}, []string{"x"},
			func(o *runOptions) bool { return o.sandboxEvery == 0 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stderr bytes.Buffer
			o, code := parseRun(append(baseArgs(port), c.args...), io.Discard, &stderr)
			if o == nil {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if !reflect.DeepEqual(o.command, c.command) {
				t.Errorf("command = %q, want %q", o.command, c.command)
			}
			if !c.check(o) {
				t.Errorf("options not as given: %+v", *o)
			}
		})
	}
}

func TestShellCommand(t *testing.T) {
	want := []string{"sh", "-c", "a | b"}
	if runtime.GOOS == "windows" {
		return // shell_windows_test.go
	}
	if got := shellCommand("a | b"); !reflect.DeepEqual(got, want) {
		t.Errorf("shellCommand = %q, want %q", got, want)
	}
}

// Connection and logging options may come before the command word.
func TestGlobalOptionsBeforeCommand(t *testing.T) {
	cases := map[string]struct{ in, want []string }{
		"none":        {[]string{"run", "-r", "R", "--", "x"}, []string{"run", "-r", "R", "--", "x"}},
		"log options": {[]string{"--log-format", "json", "-q", "run", "-r", "R", "--", "x"}, []string{"run", "--log-format", "json", "-q", "-r", "R", "--", "x"}},
		"attached":    {[]string{"--log-format=json", "-rR", "status", "--json"}, []string{"status", "--log-format=json", "-rR", "--json"}},
		"old -host":   {[]string{"-host", "h", "status"}, []string{"status", "--host", "h"}},
		"help":        {[]string{"--help"}, []string{"--help"}},
	}
	for name, c := range cases {
		got, err := globalOptions(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: globalOptions(%q) = %q, %v; want %q", name, c.in, got, err, c.want)
		}
	}
	if _, err := globalOptions([]string{"--json", "status"}); err == nil || !strings.Contains(err.Error(), "connection and logging") {
		t.Errorf("a command's own flag before the command: err = %v", err)
	}

	clearEnv(t)
	port, conns := countingListener(t)
	// End to end: the option before the command is applied (json logs on stderr).
	code, _, stderr := runMain(t, append(append([]string{"--log-format", "json"}, "run"), append(baseArgs(port), "-r", "R", "--", "no-such-command-xyz")...)...)
	if code != exitNotFound || !strings.HasPrefix(strings.TrimSpace(stderr), "{") {
		t.Errorf("exit %d, stderr not JSON:\n%s", code, stderr)
	}
	if conns() != 0 {
		t.Error("an unknown command contacted the server")
	}
}

func TestPollInterval(t *testing.T) {
	good := map[string]pollInterval{
		"2s-5s": {2 * time.Second, 5 * time.Second}, "3s": {3 * time.Second, 3 * time.Second},
		"1-2": {time.Second, 2 * time.Second}, "500ms": {minPollInterval, minPollInterval}, "1m-1m": {time.Minute, time.Minute},
	}
	for in, want := range good {
		var p pollInterval
		if err := p.Set(in); err != nil || p != want {
			t.Errorf("Set(%q) = %v, %v; want %v", in, p, err, want)
		}
	}
	for _, in := range []string{"", "100ms", "499ms-5s", "5s-2s", "x", "2s-", "-2s", "2s-5s-9s", "0"} {
		var p pollInterval
		err := p.Set(in)
		if err == nil {
			t.Errorf("Set(%q) accepted: %v", in, p)
			continue
		}
		if !strings.Contains(err.Error(), "") {
			t.Errorf("Set(%q): %v", in, err)
		}
	}
	var p pollInterval
	if err := p.Set("100ms"); err == nil || !strings.Contains(err.Error(), "500ms") || !strings.Contains(err.Error(), "MIN[-MAX]") {
		t.Errorf("the floor error must name the range: %v", err)
	}

	// The default is the snippet's 2s-5s; CSMUTEX_TEST_JITTER replaces it, below the floor.
	clearEnv(t)
	port, _ := countingListener(t)
	o, code := parseRun(append(baseArgs(port), "-r", "R", "x"), io.Discard, io.Discard)
	if o == nil || o.lock.poll != (pollInterval{2 * time.Second, 5 * time.Second}) {
		t.Fatalf("default poll interval: %v (exit %d)", o, code)
	}
	t.Setenv(testJitterEnv, "1ms,2ms")
	if opts, err := o.lock.options(); err != nil || len(opts) != 2 {
		t.Errorf("options with %s: %d, %v", testJitterEnv, len(opts), err)
	}
}

func TestHelpListsNewFlags(t *testing.T) {
	clearEnv(t)
	_, stdout, _ := runMain(t, "run", "--help")
	for _, want := range []string{"-c, --command LINE", "--poll-interval MIN[-MAX]", "--legacy-max-age DURATION",
		"--service-model MODEL", "--sandbox-messages[=EVERY]", "(default 2s-5s)", "--owner LABEL", "Exit codes:"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("run --help lacks %q:\n%s", want, stdout)
		}
	}
	for _, hidden := range []string{"\n  --r ", "\n  --w "} {
		if strings.Contains(stdout, hidden) {
			t.Errorf("run --help lists the hidden alias %q", hidden)
		}
	}
	_, stdout, _ = runMain(t, "serve", "--help")
	for _, want := range []string{"--poll-interval MIN[-MAX]", "--legacy-max-age", "--service-model"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("serve --help lacks %q", want)
		}
	}
	_, stdout, _ = runMain(t, "status", "--help")
	if !strings.Contains(stdout, "--service-model") || strings.Contains(stdout, "--poll-interval") {
		t.Errorf("status --help: want --service-model only:\n%s", stdout)
	}
}
