//go:build unix

package guardian

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/syncbuf"
	"github.com/csmutex/csmutex/internal/testenv"
)

// The test binary is its own guardian: Config.Self is os.Args[0].
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == Arg {
		os.Exit(Main())
	}
	os.Exit(m.Run())
}

// run starts sh -c script under a guardian (the test binary). Its stderr is a file, as
// csmutex's is, so that Wait does not wait for processes that keep a pipe open.
func run(t *testing.T, group bool, script string) (*Process, *stderrFile) {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	f, err := os.Create(filepath.Join(testenv.TempDir(t), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	p, err := Start(Config{Self: os.Args[0], Path: sh, Args: []string{"sh", "-c", script}, Stderr: f, Group: group})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.KillGroup() })
	return p, &stderrFile{f.Name()}
}

type stderrFile struct{ path string }

func (s *stderrFile) String() string { b, _ := os.ReadFile(s.path); return string(b) }

// wait waits for the guardian; the generous limit only catches a hang.
func wait(t *testing.T, p *Process) int {
	t.Helper()
	done := make(chan struct{})
	go func() { p.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		p.KillGroup()
		t.Fatal("the guardian did not exit")
	}
	return p.Cmd.ProcessState.ExitCode()
}

// waitFile waits for a non-empty file and returns its lines.
func waitFile(t *testing.T, path string, lines int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if f := strings.Fields(string(b)); len(f) >= lines {
			return f
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s did not get %d lines", path, lines)
	return nil
}

// isLinux: only there does the guardian find processes that are not in its group.
const isLinux = runtime.GOOS == "linux"

// alive reports whether pid runs (a zombie does not: whoever inherited it may not reap it).
func alive(pid int) bool {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		f := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:])
		return len(f) > 0 && string(f[0]) != "Z"
	}
	return syscall.Kill(pid, 0) == nil
}

func TestExitCodePassedOn(t *testing.T) {
	t.Parallel()
	for _, group := range []bool{true, false} {
		for script, want := range map[string]int{"exit 0": 0, "exit 3": 3, "kill -TERM $$": 128 + 15, "kill -KILL $$": 128 + 9} {
			p, stderr := run(t, group, script)
			if got := wait(t, p); got != want {
				t.Errorf("group=%v %q: exit %d, want %d\n%s", group, script, got, want, stderr)
			}
		}
	}
}

// Signals reach the command: through the group, or forwarded by the guardian.
func TestSignalReachesCommand(t *testing.T) {
	t.Parallel()
	for _, group := range []bool{true, false} {
		ready := filepath.Join(testenv.TempDir(t), "ready")
		p, stderr := run(t, group, fmt.Sprintf(`trap 'exit 7' TERM; echo $$ > %s; while :; do sleep 0.02; done`, ready))
		waitFile(t, ready, 1)
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if got := wait(t, p); got != 7 {
			t.Errorf("group=%v: exit %d, want the command's 7\n%s", group, got, stderr)
		}
	}
}

// Kill (what the parent's death does) kills the command's whole tree, then the guardian.
func TestKillKillsTheTree(t *testing.T) {
	t.Parallel()
	for _, group := range []bool{true, false} {
		pids := filepath.Join(testenv.TempDir(t), "pids")
		p, _ := run(t, group, fmt.Sprintf(`sleep 300 & echo $! >> %[1]s; (sleep 300 & echo $! >> %[1]s; wait) & echo $$ >> %[1]s; wait`, pids))
		lines := waitFile(t, pids, 3)
		t.Cleanup(func() {
			for _, l := range lines {
				if pid, _ := strconv.Atoi(l); pid > 0 && alive(pid) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		})
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
		wait(t, p)
		// The guardian kills the tree before it exits; a moment for the kernel to finish.
		deadline := time.Now().Add(10 * time.Second)
		for _, l := range lines {
			pid, _ := strconv.Atoi(l)
			for alive(pid) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if alive(pid) && (group || isLinux) {
				t.Errorf("group=%v: process %d of the command survived its guardian", group, pid)
			}
		}
	}
}

func TestCommandNotFound(t *testing.T) {
	t.Parallel()
	var stderr syncbuf.Buffer
	p, err := Start(Config{Self: os.Args[0], Path: "/nonexistent/csmutex-no-such-command", Args: []string{"x"}, Stderr: &stderr, Group: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := wait(t, p); got != exitNotFound || !strings.Contains(stderr.String(), "no-such-command") {
		t.Errorf("exit %d, want 127 naming the command\n%s", got, stderr.String())
	}
}

// The guardian mode is internal: without a lifeline it refuses to run anything.
func TestGuardianNeedsALifeline(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(os.Args[0], Arg, "group", "/bin/sh", "sh", "-c", "echo ran").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage || strings.Contains(string(out), "ran") {
		t.Errorf("exit %v, want %d without running the command\n%s", err, exitUsage, out)
	}
}

// A guardian killed outright (SIGKILL, OOM) cannot kill the tree; its parent's Wait kills
// the group it led.
func TestGuardianKilled(t *testing.T) {
	t.Parallel()
	pids := filepath.Join(testenv.TempDir(t), "pids")
	p, _ := run(t, true, fmt.Sprintf(`sleep 300 & echo $! >> %[1]s; echo $$ >> %[1]s; wait`, pids))
	lines := waitFile(t, pids, 2)
	t.Cleanup(func() {
		for _, l := range lines {
			if pid, _ := strconv.Atoi(l); pid > 0 && alive(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	if err := p.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	wait(t, p)
	deadline := time.Now().Add(10 * time.Second)
	for _, l := range lines {
		pid, _ := strconv.Atoi(l)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("process %d of the command survived its killed guardian", pid)
		}
	}
}
