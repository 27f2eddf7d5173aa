package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/syncbuf"
	"golang.org/x/sys/windows"
)

// asCsmutexEnv makes the test binary run as csmutex itself (Main), so the Windows process
// tests need no Go toolchain where they run (under Wine, for instance).
const asCsmutexEnv = "CSMUTEX_TEST_AS_CSMUTEX"

func init() {
	if os.Getenv(asCsmutexEnv) == "1" {
		os.Unsetenv(asCsmutexEnv) // not for the command
		os.Exit(Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
}

// winProc is csmutex (the test binary as csmutex) running against an in-process mock.
type winProc struct {
	cmd            *exec.Cmd
	stdout, stderr syncbuf.Buffer
	done           chan struct{}
}

func startWinCsmutex(t *testing.T, host string, port int, res string, args ...string) *winProc {
	t.Helper()
	return startWinCsmutexStdin(t, nil, nil, host, port, res, args...)
}

// startWinCsmutexStdin starts csmutex with stdin and variables added to its environment.
func startWinCsmutexStdin(t *testing.T, stdin io.Reader, env []string, host string, port int, res string, args ...string) *winProc {
	t.Helper()
	p := &winProc{cmd: exec.Command(os.Args[0], args...), done: make(chan struct{})}
	p.cmd.Stdin = stdin
	p.cmd.Env = append(os.Environ(), asCsmutexEnv+"=1",
		"CLOUDSHELL_HOST="+host, "CLOUDSHELL_PORT="+strconv.Itoa(port),
		"CLOUDSHELL_USER=admin", "CLOUDSHELL_PASSWORD=admin", "CLOUDSHELL_RESERVATION_ID="+res,
		testJitterEnv+"=5ms,20ms")
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.WaitDelay = time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	return p
}

func (p *winProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("csmutex did not exit within %s\nstderr: %s", timeout, p.stderr.String())
		return -1
	}
}

// winTreeProc is a process of csmutex's tree, with a handle opened while it ran: waiting
// on the handle cannot be fooled by a reused pid.
type winTreeProc struct {
	pid  uint32
	name string
	h    windows.Handle
}

func (p winTreeProc) String() string { return fmt.Sprintf("%d(%s)", p.pid, p.name) }

// descendantsWin lists root's descendants from a process snapshot.
func descendantsWin(t *testing.T, root uint32) []winTreeProc {
	t.Helper()
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPPROCESS, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer windows.CloseHandle(snap)
	children := map[uint32][]winTreeProc{}
	pe := windows.ProcessEntry32{Size: uint32(unsafe.Sizeof(windows.ProcessEntry32{}))}
	for err = windows.Process32First(snap, &pe); err == nil; err = windows.Process32Next(snap, &pe) {
		if pe.ProcessID == pe.ParentProcessID {
			continue
		}
		children[pe.ParentProcessID] = append(children[pe.ParentProcessID],
			winTreeProc{pid: pe.ProcessID, name: strings.ToLower(windows.UTF16ToString(pe.ExeFile[:]))})
	}
	var out []winTreeProc
	queue := children[root]
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, p)
		queue = append(queue, children[p.pid]...)
	}
	return out
}

// waitForPing waits until csmutex's tree runs ping.exe and returns the tree, with handles.
func waitForPing(t *testing.T, p *winProc) []winTreeProc {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		tree := descendantsWin(t, uint32(p.cmd.Process.Pid))
		for _, q := range tree {
			if strings.HasSuffix(q.name, "ping.exe") {
				for i := range tree {
					h, err := windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_TERMINATE, false, tree[i].pid)
					if err != nil {
						t.Fatalf("opening %v: %v", tree[i], err)
					}
					tree[i].h = h
				}
				t.Cleanup(func() {
					for _, q := range tree {
						windows.TerminateProcess(q.h, 1)
						windows.CloseHandle(q.h)
					}
				})
				return tree
			}
		}
		select {
		case <-p.done:
			t.Fatalf("csmutex exited before ping ran\nstderr: %s", p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("ping did not start under csmutex: tree %v\nstderr: %s", tree, p.stderr.String())
		}
	}
}

// treeGoneWithinWin: the job is killed as csmutex's handle closes, at once; the margin is
// for a busy machine (and Wine's wineserver). ping runs 60 s: a surviving tree fails.
const treeGoneWithinWin = 10 * time.Second

// waitGone waits for every process of tree to exit and returns those still running.
func waitGone(tree []winTreeProc, within time.Duration) []winTreeProc {
	deadline := time.Now().Add(within)
	var live []winTreeProc
	for _, q := range tree {
		ms := uint32(max(0, time.Until(deadline).Milliseconds()))
		if ev, _ := windows.WaitForSingleObject(q.h, ms); ev != windows.WAIT_OBJECT_0 {
			live = append(live, q)
		}
	}
	return live
}

const pingCommand = "ping -n 60 127.0.0.1 > nul"

// csmutex.exe is killed (TerminateProcess, as Task Manager or a crash would) while its
// command runs: the Job Object it holds kills the command's whole tree, ping included.
func TestWindowsTreeDiesWithCsmutex(t *testing.T) {
	t.Parallel()
	host, port, res := inProcessMock(t)
	p := startWinCsmutex(t, host, port, res, "run", "--owner", "win-tree", "--", "cmd", "/c", pingCommand)
	tree := waitForPing(t, p)
	t.Logf("csmutex %d, its tree: %v", p.cmd.Process.Pid, tree)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 10*time.Second)
	if live := waitGone(tree, treeGoneWithinWin); len(live) > 0 {
		t.Fatalf("processes of the command outlived their killed csmutex by %s: %v", treeGoneWithinWin, live)
	}
}

// The lock is removed behind csmutex's back: the whole job is terminated, csmutex exits 70.
func TestWindowsLockLostKillsTree(t *testing.T) {
	t.Parallel()
	host, port, res := inProcessMock(t)
	p := startWinCsmutex(t, host, port, res, "run", "--lease", "6s", "--owner", "win-lost", "--", "cmd", "/c", pingCommand)
	tree := waitForPing(t, p)
	c, err := cloudshell.Dial(context.Background(), cloudshell.Config{Host: host, Port: port, Username: "admin", Password: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveServicesFromReservation(context.Background(), res, []string{"MUTEX"}); err != nil {
		t.Fatal(err)
	}
	// The loss is seen at the next renewal (lease/3 = 2 s); the rest is a busy machine.
	if code := p.wait(t, 30*time.Second); code != exitLockLost {
		t.Errorf("exit %d, want 70\n%s", code, p.stderr.String())
	}
	if live := waitGone(tree, treeGoneWithinWin); len(live) > 0 {
		t.Fatalf("processes of the command outlived the lost lock: %v\n%s", live, p.stderr.String())
	}
}

// The command's exit code comes through the job, and the lock is released.
func TestWindowsRunExitCode(t *testing.T) {
	t.Parallel()
	host, port, res := inProcessMock(t)
	p := startWinCsmutex(t, host, port, res, "run", "--", "cmd", "/c", "exit 3")
	if code := p.wait(t, 30*time.Second); code != 3 {
		t.Errorf("exit %d, want 3\n%s", code, p.stderr.String())
	}
	q := startWinCsmutex(t, host, port, res, "run", "-n", "--", "cmd", "/c", "exit 0")
	if code := q.wait(t, 30*time.Second); code != 0 {
		t.Errorf("a later -n run: exit %d, want 0 (lock released)\n%s", code, q.stderr.String())
	}
}

// leftoverEnv makes the test binary a process a command leaves behind: it writes its pid
// to the file named by the variable, then sleeps.
const leftoverEnv = "CSMUTEX_TEST_LEFTOVER"

func init() {
	if path := os.Getenv(leftoverEnv); path != "" && os.Getenv(asCsmutexEnv) == "" {
		os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())), 0o644)
		time.Sleep(60 * time.Second)
		os.Exit(0)
	}
}

// What a command leaves running after it exits normally (its lock released) is not killed
// when csmutex exits: the job's kill-on-close limit is lifted first, as on Unix, where only a
// lost lock or csmutex's death kills the leftovers.
func TestWindowsLeftoversOutliveNormalExit(t *testing.T) {
	t.Parallel()
	host, port, res := inProcessMock(t)
	f, err := os.CreateTemp("", "csmutex-leftover-*")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	pidFile := f.Name()
	os.Remove(pidFile)
	t.Cleanup(func() { os.Remove(pidFile) })

	// cmd starts the leftover in the background, then waits for a line on stdin: the test
	// lets it exit once the leftover runs.
	stdin, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The variable is inherited by csmutex, then by the command and the leftover.
	p := startWinCsmutexStdin(t, stdin, []string{leftoverEnv + "=" + pidFile}, host, port, res, "run", "--", "cmd", "/c", "start /b "+os.Args[0]+" & set /p x=")
	stdin.Close()

	var pid int
	for deadline := time.Now().Add(30 * time.Second); pid == 0; {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(string(b))
		if pid == 0 && time.Now().After(deadline) {
			t.Fatalf("the leftover did not start\nstderr: %s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	h, err := windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_TERMINATE, false, uint32(pid))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { windows.TerminateProcess(h, 1); windows.CloseHandle(h) })

	if _, err := io.WriteString(w, "go\r\n"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, p.stderr.String())
	}
	if ev, _ := windows.WaitForSingleObject(h, 0); ev == windows.WAIT_OBJECT_0 {
		t.Errorf("the process the command left running died with csmutex's normal exit")
	}
}
