package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/csmutex/csmutex/internal/testenv"
)

// A command that cannot run fails at once (127, or 126 as a shell would), before logging on
// or waiting for the lock (-w 5m here): the server at --port counts connections and must
// get none.
func TestRunCommandNotFoundBeforeLock(t *testing.T) {
	clearEnv(t)
	port, conns := countingListener(t)
	type tc struct {
		name, cmd string
		want      int
		mention   string
	}
	cases := []tc{
		{"not in PATH", "csmutex-no-such-command-xyz", exitNotFound, "command not found"},
		{"missing path", filepath.Join(os.TempDir(), "csmutex-no-such-dir-xyz", "missing"), exitNotFound, "command not found"},
	}
	// Windows has no execute bit: both are "not found" there. (Nor does Wine remove a
	// t.TempDir: Go's os.RemoveAll of nested directories uses a call it does not implement.)
	if runtime.GOOS != "windows" {
		dir := testenv.TempDir(t)
		notExec := filepath.Join(dir, "script")
		if err := os.WriteFile(notExec, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, tc{"not executable", notExec, exitCannotExec, "cannot be executed"},
			tc{"a directory", dir, exitCannotExec, "cannot be executed"})
	}
	for _, c := range cases {
		args := append(append([]string{"run"}, baseArgs(port)...), "-r", "R", "-w", "5m", "--", c.cmd, "arg")
		code, _, stderr := runMain(t, args...)
		if code != c.want || !strings.Contains(stderr, c.mention) || !strings.Contains(stderr, filepath.Base(c.cmd)) ||
			!strings.Contains(stderr, "the lock was not requested") {
			t.Errorf("%s: exit %d, want %d with %q naming the command\n%s", c.name, code, c.want, c.mention, stderr)
		}
	}
	if n := conns(); n != 0 {
		t.Errorf("the server was contacted %d times", n)
	}
}
