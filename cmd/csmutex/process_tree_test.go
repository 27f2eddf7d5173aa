//go:build unix

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/testenv"
)

// treeGoneWithin is how long the command's tree may outlive its killed csmutex. The
// guardian sees csmutex die at once (its lifeline pipe reads EOF) and kills the tree in
// milliseconds; the margin is for a machine busy running this suite in parallel under
// -race, where a process may wait seconds to be scheduled. The command sleeps 300 s: a tree
// that is not killed fails the test, however slow the machine.
const treeGoneWithin = 10 * time.Second

// treeScript is a command whose tree goes beyond the shell csmutex starts: a background
// job, a subshell with a child, a foreground sleep and, where it can be checked (Linux with
// setsid(1)), a process that left the group for a session of its own. Every sleep runs
// 300 s, then "edits" (echo). It writes the shell's pid to ready once all are started.
func treeScript(t *testing.T, ready string) (script string, sleeps int) {
	escape := ""
	sleeps = 3
	if _, err := exec.LookPath("setsid"); err == nil && runtime.GOOS == "linux" {
		// Only Linux follows processes out of the group (the guardian is a subreaper).
		escape = `setsid sleep 300 & `
		sleeps++
	}
	return fmt.Sprintf(`sleep 300 & (sleep 300; echo edited) & %secho $$ > %s; sleep 300; echo edited`, escape, ready), sleeps
}

// csmutex is SIGKILLed while its command runs: nothing renews the lock any more, so every
// process of the command's tree must die with it, not only the direct child.
func TestProcessTreeDiesWithCsmutex(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	ready := filepath.Join(testenv.TempDir(t), "ready")
	script, sleeps := treeScript(t, ready)
	p := m.start(t, "run", "--owner", "tree", "--", "sh", "-c", script)
	killGroupLater(t, ready)
	waitFile(t, ready, p)
	tree := waitForTree(t, p.cmd.Process.Pid, sleeps)
	t.Logf("csmutex %d, its tree: %v", p.cmd.Process.Pid, tree)

	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 10*time.Second)
	if live := waitTreeGone(tree, treeGoneWithin); len(live) > 0 {
		t.Fatalf("processes of the command outlived their killed csmutex by %s: %v", treeGoneWithin, live)
	}
}

// proc is a process of the command's tree. start tells it from a later process that got
// the same pid (Linux: start time in clock ticks; elsewhere empty).
type treeProc struct {
	pid   int
	ppid  int
	name  string
	start string
	live  bool // not a zombie
}

func (p treeProc) String() string { return fmt.Sprintf("%d(%s)", p.pid, p.name) }

// processTable lists every process: from /proc on Linux, from ps(1) elsewhere.
func processTable(t *testing.T) []treeProc {
	t.Helper()
	if _, err := os.Stat("/proc/self/stat"); err == nil {
		var out []treeProc
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if p, ok := procEntry(pid); ok {
				out = append(out, p)
			}
		}
		return out
	}
	b, err := exec.Command("ps", "-A", "-o", "pid=,ppid=,stat=,comm=").Output()
	if err != nil {
		t.Skipf("cannot list processes: no /proc, and ps: %v", err)
	}
	var out []treeProc
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		pid, _ := strconv.Atoi(f[0])
		ppid, _ := strconv.Atoi(f[1])
		out = append(out, treeProc{pid: pid, ppid: ppid, name: filepath.Base(f[3]), live: !strings.HasPrefix(f[2], "Z")})
	}
	return out
}

// procEntry reads /proc/PID/stat: "pid (comm) state ppid ... starttime(22nd field) ...".
func procEntry(pid int) (treeProc, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return treeProc{}, false
	}
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return treeProc{}, false
	}
	f := strings.Fields(string(b[j+1:]))
	if len(f) < 20 {
		return treeProc{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	return treeProc{pid: pid, ppid: ppid, name: string(b[i+1 : j]), start: f[19], live: f[0] != "Z" && f[0] != "X"}, true
}

// descendantsOf lists root's live descendants in table.
func descendantsOf(table []treeProc, root int) []treeProc {
	children := map[int][]treeProc{}
	for _, p := range table {
		children[p.ppid] = append(children[p.ppid], p)
	}
	var out []treeProc
	queue := children[root]
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p.live {
			out = append(out, p)
		}
		queue = append(queue, children[p.pid]...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}

// waitForTree waits until csmutex's tree holds the command's sleeps, and returns the tree.
// Its processes are killed when the test ends, in case the test fails.
func waitForTree(t *testing.T, csmutexPid, sleeps int) []treeProc {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		tree := descendantsOf(processTable(t), csmutexPid)
		n := 0
		for _, p := range tree {
			if p.name == "sleep" {
				n++
			}
		}
		if n >= sleeps {
			t.Cleanup(func() {
				for _, p := range tree {
					if stillRunning(p) {
						syscall.Kill(p.pid, syscall.SIGKILL)
					}
				}
			})
			return tree
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command's tree did not reach %d sleeps: %v", sleeps, tree)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stillRunning reports whether p is alive and still the same process.
func stillRunning(p treeProc) bool {
	if p.start != "" {
		q, ok := procEntry(p.pid)
		return ok && q.live && q.start == p.start
	}
	return processAlive(p.pid)
}

// waitTreeGone waits up to within for every process of tree to be gone (a zombie counts as
// gone), and returns those still running.
func waitTreeGone(tree []treeProc, within time.Duration) []treeProc {
	deadline := time.Now().Add(within)
	for {
		var live []treeProc
		for _, p := range tree {
			if stillRunning(p) {
				live = append(live, p)
			}
		}
		if len(live) == 0 || time.Now().After(deadline) {
			return live
		}
		time.Sleep(20 * time.Millisecond)
	}
}
