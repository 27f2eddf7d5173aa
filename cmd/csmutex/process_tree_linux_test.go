package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/csmutex/csmutex/internal/testenv"
)

// openPty returns a pseudo-terminal's master and slave ends.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("ptsname: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("opening the pty's slave: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// With a terminal on stdin the command keeps csmutex's process group (it must keep the
// terminal), so no group kill can reach its tree: on Linux the guardian, a child subreaper,
// finds the tree through /proc and kills it when csmutex is SIGKILLed.
func TestProcessTreeDiesWithCsmutexInteractive(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	_, tty := openPty(t)
	ready := filepath.Join(testenv.TempDir(t), "ready")
	script, sleeps := treeScript(t, ready)

	p := m.startWith(t, func(cmd *exec.Cmd) {
		cmd.Stdin = tty
		// csmutex in a group of its own, as a shell runs a job: the test's group stays out of it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}, "run", "--owner", "tree-tty", "--", "sh", "-c", script)

	sh, _ := strconv.Atoi(strings.TrimSpace(waitFile(t, ready, p)))
	tree := waitForTree(t, p.cmd.Process.Pid, sleeps)
	t.Logf("csmutex %d, its tree: %v", p.cmd.Process.Pid, tree)
	if pgid, err := syscall.Getpgid(sh); err != nil || pgid != p.cmd.Process.Pid {
		t.Fatalf("the command (pid %d) is in group %d (%v), not csmutex's (%d): the terminal case was not exercised",
			sh, pgid, err, p.cmd.Process.Pid)
	}

	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 10*time.Second)
	if live := waitTreeGone(tree, treeGoneWithin); len(live) > 0 {
		t.Fatalf("processes of the command outlived their killed csmutex by %s: %v", treeGoneWithin, live)
	}
}
