//go:build unix

package guardian

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Arg, as a program's first argument, asks it to run as the guardian: a program that
// starts guardians (Config.Self) must call Main, and exit with its result, when it sees
// it, before doing anything else.
const Arg = "__csmutex_guardian"

// lifelineFD is the guardian's descriptor for the read end of the lifeline (ExtraFiles[0]).
const lifelineFD = 3

// Config says what to run under a guardian.
type Config struct {
	// Path is the command's executable, already resolved (exec.LookPath); Args its argv,
	// Args[0] included.
	Path string
	Args []string
	// Env is the command's environment (nil: this process's).
	Env            []string
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	WaitDelay      time.Duration
	// Group gives the guardian and the command a process group of their own, led by the
	// guardian. Without it (an interactive command that must keep the terminal) they stay
	// in the caller's group, and signals go to the guardian, which forwards them.
	Group bool
	// Self is the guardian's executable; default: this program (/proc/self/exe on Linux,
	// so that a binary replaced on disk while it runs still starts its own guardian).
	Self string
}

// Process is a command running under a guardian, seen from the parent.
type Process struct {
	// Cmd is the guardian process. Its exit code is the command's, or 128+N when signal N
	// killed the command.
	Cmd      *exec.Cmd
	group    bool
	mu       sync.Mutex
	lifeline *os.File // write end; nil once closed
}

// Start starts the guardian, which starts the command. An error means neither runs.
func Start(c Config) (*Process, error) {
	self := c.Self
	if self == "" {
		var err error
		if self, err = selfExecutable(); err != nil {
			return nil, fmt.Errorf("guardian: cannot find csmutex's own executable: %w", err)
		}
	}
	if len(c.Args) == 0 {
		return nil, errors.New("guardian: no command")
	}
	r, w, err := os.Pipe() // close-on-exec: only the guardian inherits r, nobody w
	if err != nil {
		return nil, err
	}
	mode := "nogroup"
	if c.Group {
		mode = "group"
	}
	cmd := exec.Command(self, append([]string{Arg, mode, c.Path}, c.Args...)...)
	if exe, err := os.Executable(); err == nil && c.Self == "" {
		cmd.Args[0] = exe // what ps shows, rather than /proc/self/exe
	}
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.WaitDelay = c.Env, c.Stdin, c.Stdout, c.Stderr, c.WaitDelay
	cmd.ExtraFiles = []*os.File{r}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: c.Group}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, err
	}
	return &Process{Cmd: cmd, group: c.Group, lifeline: w}, nil
}

// Signal sends sig to the command: to the whole process group with Config.Group (the
// guardian, its leader, ignores it), else to the guardian, which forwards it.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.group {
		err := syscall.Kill(-p.Cmd.Process.Pid, sig)
		if err == nil || errors.Is(err, syscall.ESRCH) {
			return err
		}
	}
	return p.Cmd.Process.Signal(sig)
}

// Kill closes the lifeline: the guardian SIGKILLs the command's whole tree, then itself.
// It does not wait; Wait does.
func (p *Process) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lifeline == nil {
		return nil
	}
	err := p.lifeline.Close()
	p.lifeline = nil
	return err
}

// KillGroup SIGKILLs the process group (with Config.Group) or the guardian: the fallback
// when the guardian does not respond to Kill, and the way to reach what the command left
// in its group after it and the guardian have exited.
func (p *Process) KillGroup() error {
	if p.group {
		err := syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		if err == nil || errors.Is(err, syscall.ESRCH) {
			return err
		}
	}
	return p.Cmd.Process.Kill()
}

// Wait waits for the guardian to exit, which it does when the command exits or, after
// Kill or the parent's death, when the tree is dead. A guardian that was itself killed
// (SIGKILL, the OOM killer) left the command's tree unguarded: Wait SIGKILLs its group.
// (With a Stdout or Stderr other than an *os.File, Wait first waits for the copying, as
// exec.Cmd.Wait does, up to Config.WaitDelay.)
func (p *Process) Wait() error {
	err := p.Cmd.Wait()
	p.Kill() // nothing left to guard; releases the descriptor
	if ps := p.Cmd.ProcessState; p.group && ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	return err
}

// Exit codes of the guardian itself.
const (
	exitUsage      = 64
	exitCannotExec = 126
	exitNotFound   = 127
	exitKilled     = 128 + 9
)

// Main is the guardian: os.Args are [program, Arg, "group"|"nogroup", path, argv...], and
// the lifeline's read end is descriptor 3. It returns the command's exit code (128+N when
// signal N killed it). It does not return when the lifeline closes: it kills the tree and
// the guardian with it.
func Main() int {
	args := os.Args[2:]
	if len(args) < 3 || (args[0] != "group" && args[0] != "nogroup") {
		fmt.Fprintf(os.Stderr, "csmutex: %s is internal to csmutex run\n", Arg)
		return exitUsage
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(lifelineFD, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		fmt.Fprintf(os.Stderr, "csmutex: %s is internal to csmutex run (no lifeline)\n", Arg)
		return exitUsage
	}
	syscall.CloseOnExec(lifelineFD) // the command must not inherit it
	g := &guard{group: args[0] == "group"}

	// Catch what csmutex sends (and a terminal's Ctrl-C or Ctrl-\), so that the guardian
	// outlives it: with a group the command got the signal too; without, forward it.
	// signal.Notify, not signal.Ignore: ignored signals would stay ignored in the command.
	sigc := make(chan os.Signal, 8)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	setSubreaper()

	lifeline := os.NewFile(lifelineFD, "lifeline")
	go func() {
		io.Copy(io.Discard, lifeline) // returns when the parent is gone or closed it
		g.killTree()
	}()

	pid, err := g.start(args[1], args[2:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "csmutex: cannot run %s: %v\n", args[1], err)
		if errors.Is(err, fs.ErrNotExist) {
			return exitNotFound
		}
		return exitCannotExec
	}
	go func() {
		for s := range sigc {
			if !g.group && s != syscall.SIGQUIT { // a terminal sends SIGQUIT to the command itself
				g.signal(s.(syscall.Signal))
			}
		}
	}()
	return g.reap(pid)
}

// guard is the guardian's state. mu orders starting, signalling and reaping the command
// against killing the tree: once killTree holds it, nothing else happens.
type guard struct {
	group  bool
	mu     sync.Mutex
	pid    int  // the command; 0 before it starts
	exited bool // the command has been reaped
}

func (g *guard) start(path string, argv []string) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   commandAttr(),
	})
	if err != nil {
		return 0, err
	}
	g.pid = pid
	return pid, nil
}

func (g *guard) signal(s syscall.Signal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pid > 0 && !g.exited {
		syscall.Kill(g.pid, s)
	}
}

// reap waits for the command and returns its exit code. On Linux it also reaps the
// orphans re-parented to the guardian, which would otherwise stay zombies.
func (g *guard) reap(pid int) int {
	for {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil: // ECHILD: cannot happen while the command is ours to reap
			fmt.Fprintf(os.Stderr, "csmutex: waiting for the command: %v\n", err)
			return exitCannotExec
		case wpid != pid:
			continue // an adopted orphan
		}
		// A pid reaped here could be reused before mu is taken; that needs the whole pid
		// space to cycle in between, and signal and killTree would have to pick it then.
		g.mu.Lock() // blocks for good if killTree runs: the tree dies with the guardian
		g.exited = true
		g.mu.Unlock()
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// killTree kills every process of the command's tree, then the guardian. It never returns.
func (g *guard) killTree() {
	g.mu.Lock() // never released
	killDescendants()
	if g.group {
		// The guardian leads the group: this kills it with everything left in it.
		syscall.Kill(-os.Getpid(), syscall.SIGKILL)
	} else if g.pid > 0 && !g.exited {
		syscall.Kill(g.pid, syscall.SIGKILL)
	}
	os.Exit(exitKilled)
}
