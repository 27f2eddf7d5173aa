package guardian

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func selfExecutable() (string, error) { return "/proc/self/exe", nil }

// setSubreaper makes the guardian the child subreaper of the command's tree: a process
// whose parent dies is re-parented to the guardian, not to init, so killDescendants still
// finds it, whatever process group or session it moved to.
func setSubreaper() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }

// commandAttr has Linux SIGKILL the command if the guardian itself dies (SIGKILL, OOM):
// the command's own children are then orphans in a group that nobody kills, but the
// command cannot go on. The guardian never ends a thread, so the signal cannot come early.
func commandAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }

// killDescendants SIGKILLs every live descendant of the guardian, again and again, until
// none is left: a killed process's children are re-parented to the guardian (subreaper)
// and found by the next pass, and a process cannot fork once SIGKILL is pending for it.
// It gives up after a few seconds (processes stuck in uninterruptible sleep).
func killDescendants() {
	self := os.Getpid()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := descendants(self)
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(2 * time.Millisecond) // let them die and hand their children over
	}
}

// descendants lists the live (not zombie) descendants of root, from /proc.
func descendants(root int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	live := map[int]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, ppid, ok := procStat(pid)
		if !ok {
			continue
		}
		children[ppid] = append(children[ppid], pid)
		live[pid] = state != 'Z' && state != 'X'
	}
	var out []int
	queue := children[root]
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if live[pid] {
			out = append(out, pid)
		}
		queue = append(queue, children[pid]...)
	}
	return out
}

// procStat reads a process's state and parent from /proc/PID/stat.
func procStat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(string(f[1]))
	return f[0][0], ppid, err == nil
}
