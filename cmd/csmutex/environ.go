package main

import (
	"runtime"
	"strings"
)

// secretEnv are the credentials csmutex reads from its environment. The command does not
// get them: it runs with the lock, not with csmutex's CloudShell logon, and a command that
// prints its environment (a failing build, `env` in a debug step) would leak them. What
// the command needs to know comes in CSMUTEX_* variables.
var secretEnv = []string{"CLOUDSHELL_PASSWORD", "CLOUDSHELL_TOKEN"}

// commandEnv is environ without secretEnv, plus extra.
func commandEnv(environ []string, extra ...string) []string {
	out := make([]string, 0, len(environ)+len(extra))
	for _, kv := range environ {
		if !isSecretEnv(kv) {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

func isSecretEnv(kv string) bool {
	k, _, _ := strings.Cut(kv, "=")
	for _, s := range secretEnv {
		// Windows variable names are case-insensitive.
		if k == s || (runtime.GOOS == "windows" && strings.EqualFold(k, s)) {
			return true
		}
	}
	return false
}
