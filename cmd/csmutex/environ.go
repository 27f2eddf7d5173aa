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

// heldEnv are the variables that tell a command what its run holds (heldInfo.env). A run
// nested in another's command drops the outer run's, so that its own command never reads
// a slot, a pool or a set that this run did not take. The level variables are not among
// them: a nested run without --at-level still runs inside the outer run's level.
var heldEnv = []string{"CSMUTEX_LOCK_HELD", "CSMUTEX_RESERVATION_ID", "CSMUTEX_LOCK_NAME", "CSMUTEX_OWNER",
	"CSMUTEX_SHAPE", "CSMUTEX_ALIASES", "CSMUTEX_SLOT", "CSMUTEX_SLOTS", "CSMUTEX_READERS", "CSMUTEX_NAMES",
	"CSMUTEX_MEMBERS", "CSMUTEX_POOL"}

// commandEnv is environ without secretEnv, without an outer run's heldEnv and without the
// variables extra sets, plus extra: one value of each, whatever the platform makes of
// duplicates.
func commandEnv(environ []string, extra ...string) []string {
	drop := append(append([]string{}, secretEnv...), heldEnv...)
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		drop = append(drop, k)
	}
	out := make([]string, 0, len(environ)+len(extra))
	for _, kv := range environ {
		if !hasEnvKey(kv, drop) {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// hasEnvKey says whether kv's name is one of keys.
func hasEnvKey(kv string, keys []string) bool {
	k, _, _ := strings.Cut(kv, "=")
	for _, s := range keys {
		// Windows variable names are case-insensitive.
		if k == s || (runtime.GOOS == "windows" && strings.EqualFold(k, s)) {
			return true
		}
	}
	return false
}
