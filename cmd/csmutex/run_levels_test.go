//go:build unix

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/testenv"
)

// shellWords quotes words for sh -c.
func shellWords(words ...string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// A csmutex run inside a levelled one may take a finer level: it inherits the levels, and
// its own command learns the level it now holds, while the outer run's locks are still held.
func TestRunNestedLevelFiner(t *testing.T) {
	m := newShapeMock(t)
	dir := testenv.TempDir(t)
	envFile, heldFile := filepath.Join(dir, "env"), filepath.Join(dir, "held")
	inner := shellWords(append(append([]string{csmutexBin, "run"}, m.conn...),
		"--at-level", "port", "--name", "P-1", "-c", "env > "+envFile)...)
	code, _, stderr := m.run(t, "--levels", "reservation,device,port", "--at-level", "device", "--name", "SW-2", "--name", "SW-1",
		"-c", "env > "+heldFile+" && "+inner)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	read := func(path string) map[string]string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("the command did not run: %v", err)
		}
		env := map[string]string{}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok && strings.HasPrefix(k, "CSMUTEX_LEVEL") {
				env[k] = v
			}
		}
		return env
	}
	if got, want := read(heldFile), map[string]string{levelsEnv: "reservation,device,port", levelEnv: "device"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the outer run's command saw %v, want %v", got, want)
	}
	if got, want := read(envFile), map[string]string{levelsEnv: "reservation,device,port", levelEnv: "port"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the nested run's command saw %v, want %v", got, want)
	}
	if left := m.aliases(t); len(left) != 0 {
		t.Errorf("left %v in the reservation", left)
	}
}

// A nested run at the level its enclosing run holds, or a coarser one, or with other levels,
// exits 64 at once, naming both levels, without contacting CloudShell: the server it is
// pointed at counts connections and gets none. The enclosing run is unaffected.
func TestRunNestedLevelRefused(t *testing.T) {
	m := newShapeMock(t)
	port, conns := countingListener(t)
	dir := testenv.TempDir(t)
	var script []string
	cases := []struct {
		flags []string
		want  string
	}{
		{[]string{"--at-level", "device"}, `at level "device" inside a csmutex run that holds level "device"`},
		{[]string{"--at-level", "reservation"}, `at level "reservation" inside a csmutex run that holds level "device"`},
		{[]string{"--levels", "reservation,device", "--at-level", "device"}, "differs from the levels of the csmutex run this one runs under (CSMUTEX_LEVELS=reservation,device,port)"},
	}
	for i, c := range cases {
		inner := append([]string{csmutexBin, "run", "--host", "127.0.0.1", "--port", strconv.Itoa(port),
			"--user", "u", "--password", secretPassword, "-r", "R"}, c.flags...)
		inner = append(inner, "--name", "SW-9", "--", "true")
		script = append(script, fmt.Sprintf("%s 2> %s; echo $? > %s", shellWords(inner...),
			filepath.Join(dir, fmt.Sprint(i, ".err")), filepath.Join(dir, fmt.Sprint(i, ".code"))))
	}
	code, _, stderr := m.run(t, "--levels", "reservation,device,port", "--at-level", "device", "--name", "SW-1",
		"-c", strings.Join(script, "; "))
	if code != 0 {
		t.Fatalf("the enclosing run: exit %d\n%s", code, stderr)
	}
	for i, c := range cases {
		b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprint(i, ".code")))
		msg, _ := os.ReadFile(filepath.Join(dir, fmt.Sprint(i, ".err")))
		if got := strings.TrimSpace(string(b)); got != strconv.Itoa(exitUsage) {
			t.Errorf("nested %v: exit %q, want 64\n%s", c.flags, got, msg)
		}
		if !strings.Contains(string(msg), c.want) || !strings.Contains(string(msg), "usage: ") {
			t.Errorf("nested %v said\n%s\nwant %q and the usage", c.flags, msg, c.want)
		}
		if strings.Contains(string(msg), secretPassword) {
			t.Errorf("nested %v printed the password", c.flags)
		}
	}
	time.Sleep(20 * time.Millisecond) // any connection in flight is accepted
	if n := conns(); n != 0 {
		t.Fatalf("refused nested runs made %d connection(s)", n)
	}
}
