//go:build unix

package main

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"
)

// state add, allocate, free and get print what they did, and agree with each other.
func TestStateCommands(t *testing.T) {
	m := newShapeMock(t)
	state := func(args ...string) (int, string) {
		t.Helper()
		code, stdout, stderr := runMain(t, append(append([]string{"state", args[0]}, m.conn...), args[1:]...)...)
		if code != 0 && code != exitExhausted {
			t.Logf("state %v: exit %d\n%s", args, code, stderr)
		}
		return code, strings.TrimSpace(stdout)
	}
	steps := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"add", "MUTEX", "deployments", "5"}, 0, "5"},
		{[]string{"add", "--", "MUTEX", "deployments", "-2"}, 0, "3"},
		{[]string{"add", "MUTEX", "deployments", "-1"}, 0, "2"}, // after NAME, -1 is DELTA
		{[]string{"get", "MUTEX", "deployments"}, 0, "2"},
		{[]string{"allocate", "MUTEX", "vlans", "100-101"}, 0, "100"},
		{[]string{"allocate", "-w", "10s", "MUTEX", "vlans", "100-101"}, 0, "101"},
		{[]string{"allocate", "MUTEX", "vlans", "100-101"}, exitExhausted, ""},
		{[]string{"free", "MUTEX", "vlans", "100-101", "100"}, 0, ""},
		{[]string{"allocate", "MUTEX", "vlans", "100-101"}, 0, "100"},
		// Freeing what is not allocated, or another range for the key: the stored value does
		// not fit (65), nothing is written.
		{[]string{"free", "MUTEX", "vlans", "100-101", "100"}, 0, ""},
		{[]string{"free", "MUTEX", "vlans", "100-101", "100"}, exitDataErr, ""},
		{[]string{"allocate", "MUTEX", "vlans", "100-199"}, exitDataErr, ""},
	}
	for _, s := range steps {
		code, out := state(s.args...)
		if code != s.code || out != s.out {
			t.Errorf("state %v: exit %d %q, want %d %q", s.args, code, out, s.code, s.out)
		}
	}
	if left := m.aliases(t); len(left) != 0 {
		t.Errorf("state left locks behind: %v", left)
	}

	// The lock not obtained within -w: exit 75, as for run.
	m.holdAs(t, "MUTEX", "holder-x")
	if code, _ := state("add", "-w", "50ms", "MUTEX", "deployments", "1"); code != exitConflict {
		t.Errorf("state add with the lock held: exit %d, want 75", code)
	}
	if code, out := state("get", "MUTEX", "deployments"); code != 0 || out != "2" {
		t.Errorf("get after a refused add: %d %q, want 2", code, out)
	}
}

// Concurrent adds under the lock lose no increment.
func TestStateConcurrentAdds(t *testing.T) {
	m := newShapeMock(t)
	const n = 6
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, _ = runMain(t, append(append([]string{"state", "add"}, m.conn...), "-w", "60s", "COUNTERS", "hits", "1")...)
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 0 {
			t.Fatalf("add %d: exit %d", i, c)
		}
	}
	_, out, _ := runMain(t, append(append([]string{"state", "get"}, m.conn...), "COUNTERS", "hits")...)
	if strings.TrimSpace(out) != "6" {
		t.Errorf("after %d concurrent adds of 1: %q", n, out)
	}
}

// Bad state command lines are usage errors naming what is wrong, before any contact.
func TestStateUsageErrors(t *testing.T) {
	clearEnv(t)
	port, contacted := countingListener(t)
	conn := append(baseArgs(port), "-r", "R")
	cases := map[string]struct {
		args []string
		want string
	}{
		"no subcommand":     {nil, "missing subcommand"},
		"unknown":           {[]string{"incr", "MUTEX", "k", "1"}, `unknown subcommand "incr"`},
		"missing args":      {[]string{"add", "MUTEX", "k"}, "want NAME KEY DELTA (3 arguments), got 2"},
		"too many":          {[]string{"get", "MUTEX", "k", "x"}, "want NAME KEY (2 arguments), got 3"},
		"bad delta":         {[]string{"add", "MUTEX", "k", "one"}, `DELTA "one" is not an integer`},
		"bad key":           {[]string{"add", "MUTEX", "a/b", "1"}, `KEY "a/b" must be`},
		"long key":          {[]string{"add", "MUTEX", strings.Repeat("k", 65), "1"}, "must be 1 to 64"},
		"bad name":          {[]string{"add", "A<b>", "k", "1"}, "NAME:"},
		"bad range":         {[]string{"allocate", "MUTEX", "k", "100"}, `range "100": want LOW-HIGH`},
		"descending range":  {[]string{"allocate", "MUTEX", "k", "200-100"}, "HIGH is below LOW"},
		"huge range":        {[]string{"allocate", "MUTEX", "k", "1-5000"}, "spans more than 4096"},
		"free out of range": {[]string{"free", "MUTEX", "k", "1-10", "11"}, `VALUE "11" is not an integer in 1-10`},
		"short lease":       {[]string{"add", "--lease", "1ms", "MUTEX", "k", "1"}, "--lease must be 0"},
	}
	for name, c := range cases {
		var stderr bytes.Buffer
		args := []string{"state"}
		if len(c.args) > 0 {
			args = append(append(append(args, c.args[0]), conn...), c.args[1:]...)
		}
		code := Main(t.Context(), args, nil, io.Discard, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%s: exit %d, want 64 with %q:\n%s", name, code, c.want, stderr.String())
		}
	}
	if n := contacted(); n != 0 {
		t.Errorf("usage errors contacted the server %d times", n)
	}
	if code, stdout, _ := runMain(t, "help", "state"); code != 0 || !strings.Contains(stdout, "allocate NAME KEY LOW-HIGH") {
		t.Errorf("help state: exit %d\n%s", code, stdout)
	}
}
