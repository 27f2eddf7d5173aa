package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/csmutex/csmutex/mutex"
)

// Defect: with the defaults (60s lease, 10s grace) SIGKILL landed exactly when waiters could
// break the lock, and a command that trapped SIGTERM kept editing after another driver took
// it. SIGKILL must land well inside the loss margin: the default grace shrinks with the
// lease, and a grace that does not fit is refused with a message naming the bound.
func TestKillGraceFitsTheLossMargin(t *testing.T) {
	clearEnv(t)
	parse := func(extra ...string) (*runOptions, string) {
		args := append(append(baseArgs(8029), append([]string{"-r", "R"}, extra...)...), "--", "true")
		var stderr bytes.Buffer
		o, _ := parseRun(args, &bytes.Buffer{}, &stderr)
		return o, stderr.String()
	}
	for _, lease := range []time.Duration{0, 2 * time.Second, 10 * time.Second, time.Minute, 10 * time.Minute} {
		o, errText := parse("--lease", lease.String())
		if o == nil {
			t.Fatalf("--lease %s with the default grace refused: %s", lease, errText)
		}
		if lease > 0 && o.killGrace+mutex.LossMargin(lease)/2 > mutex.LossMargin(lease) {
			t.Errorf("--lease %s: default grace %s leaves less than half the loss margin (%s) for the kill", lease, o.killGrace, mutex.LossMargin(lease))
		}
		if lease == 0 && o.killGrace != defaultKillGrace {
			t.Errorf("--lease 0: grace %s, want the default %s", o.killGrace, defaultKillGrace)
		}
	}
	if o, errText := parse("--lease", "60s", "--kill-grace", "10s"); o != nil || !strings.Contains(errText, "at most 5s") {
		t.Errorf("--lease 60s --kill-grace 10s accepted (or without naming the bound): %q", errText)
	}
	if o, errText := parse("--lease", "60s", "--kill-grace", "5s"); o == nil {
		t.Errorf("--lease 60s --kill-grace 5s refused: %s", errText)
	}
}

// Lock names are checked by the one validator in mutex/: what the CLI refuses, the Go API
// and the sidecar refuse too.
func TestRunRefusesInvalidNames(t *testing.T) {
	clearEnv(t)
	for _, name := range []string{"", "  ", "A\nB", "MUTEX<x>&", "MUTEX.break.0123456789abcdef", strings.Repeat("x", 101)} {
		args := append(append(baseArgs(8029), "-r", "R", "--name", name), "--", "true")
		var stderr bytes.Buffer
		o, code := parseRun(args, &bytes.Buffer{}, &stderr)
		if o != nil || code != exitUsage || !strings.Contains(stderr.String(), "invalid lock name") {
			t.Errorf("--name %q: exit %d, stderr %q; want a usage error naming the lock name", name, code, stderr.String())
		}
		if mutex.ValidateName(name) == nil {
			t.Errorf("mutex.ValidateName(%q) accepted what the CLI refuses", name)
		}
	}
}
