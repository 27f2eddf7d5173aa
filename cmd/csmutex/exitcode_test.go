package main

import (
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/csmutex/csmutex/mutex"
)

// Refused credentials do not heal by themselves, so every subcommand that logs on exits 77
// for them, apart from 69 (CloudShell unreachable, which may pass): a supervisor such as
// the systemd unit restarts on 69 and must stop on 77 instead of retrying a wrong password
// forever.
func TestRefusedCredentialsExitNoPerm(t *testing.T) {
	clearEnv(t)
	host, port, res := inProcessMock(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	subcommands := map[string][]string{
		"run":     {"run", "-r", res, "--", trueCommand()},
		"serve":   {"serve", "--listen", "127.0.0.1:0"},
		"status":  {"status", "-r", res},
		"release": {"release", "-r", res, "--force"},
	}
	for name, args := range subcommands {
		t.Run(name, func(t *testing.T) {
			wrong := append(args[:1:1], "--host", host, "--port", strconv.Itoa(port), "--user", "admin", "--password", secretPassword)
			code, _, stderr := runMain(t, append(wrong, args[1:]...)...)
			if addr := net.JoinHostPort(host, strconv.Itoa(port)); code != exitNoPerm || !strings.Contains(stderr, "refused to log on") || !strings.Contains(stderr, addr) {
				t.Errorf("wrong password: exit %d, want %d saying %s refused the logon:\n%s", code, exitNoPerm, addr, stderr)
			}
			if strings.Contains(stderr, secretPassword) {
				t.Error("the password was printed")
			}

			unreachable := append(args[:1:1], "--host", "127.0.0.1", "--port", strconv.Itoa(closed), "--user", "admin", "--password", "admin")
			code, _, stderr = runMain(t, append(unreachable, args[1:]...)...)
			if code != exitUnavailable || !strings.Contains(stderr, "cannot reach CloudShell") {
				t.Errorf("unreachable: exit %d, want %d:\n%s", code, exitUnavailable, stderr)
			}
		})
	}
}

// A session CloudShell stops accepting after the logon (class Auth from any mutex call)
// is refused credentials too, not CloudShell being unavailable.
func TestSessionRefusedExitNoPerm(t *testing.T) {
	err := fmt.Errorf("reading the reservation: %w", mutex.ErrAuth)
	if got := exitCodeFor(err); got != exitNoPerm {
		t.Errorf("exitCodeFor(%v) = %d, want %d", err, got, exitNoPerm)
	}
	if got := lockFailureCode(err, exitConflict); got != exitNoPerm {
		t.Errorf("lockFailureCode(%v) = %d, want %d", err, got, exitNoPerm)
	}
}

// trueCommand is a command that exists and exits 0 (csmutex resolves it before logging on).
func trueCommand() string {
	if runtime.GOOS == "windows" {
		return "cmd.exe"
	}
	return "true"
}
