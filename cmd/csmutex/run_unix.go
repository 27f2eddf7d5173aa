//go:build unix

package main

import (
	"io"
	"os"
	"syscall"
	"time"

	"github.com/csmutex/csmutex/internal/guardian"
	"github.com/rs/zerolog"
)

// A csmutex process started with guardian.Arg is the guardian of a command (see
// internal/guardian): it runs before anything else, and only that.
func init() {
	if len(os.Args) > 1 && os.Args[1] == guardian.Arg {
		os.Exit(guardian.Main())
	}
}

// forwardSignals are the signals csmutex run catches and forwards to the command.
var forwardSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// child is the command, started under a guardian: csmutex → guardian → command. The
// guardian holds the command's process group (group set) and kills the command's whole
// tree when csmutex dies, SIGKILL included: nothing renews the lock any more, waiters will
// break it after the lease, and a command still running then would edit the reservation
// alongside the next holder. See internal/guardian for how, and why a process of its own.
type child struct{ p *guardian.Process }

// startChild starts argv (argv[0] resolved to path) under a guardian. With group set the
// guardian and the command get a process group of their own, so that signals reach the
// command's whole tree; without (an interactive command) they stay in csmutex's group,
// keeping the terminal, and the guardian forwards signals to the command.
func startChild(path string, argv, env []string, stdin io.Reader, stdout, stderr io.Writer, group bool, waitDelay time.Duration) (*child, error) {
	p, err := guardian.Start(guardian.Config{Path: path, Args: argv, Env: env,
		Stdin: stdin, Stdout: stdout, Stderr: stderr, WaitDelay: waitDelay, Group: group})
	if err != nil {
		return nil, err
	}
	return &child{p}, nil
}

func (c *child) logStart(e *zerolog.Event) *zerolog.Event {
	return e.Int("guardian_pid", c.p.Cmd.Process.Pid)
}

// signal sends sig to the command: to its whole process group when it has one.
func (c *child) signal(sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return c.p.Cmd.Process.Signal(sig)
	}
	return c.p.Signal(s)
}

// terminate asks the command to stop (SIGTERM).
func (c *child) terminate() error { return c.p.Signal(syscall.SIGTERM) }

// kill has the guardian SIGKILL the command's whole tree, and exit.
func (c *child) kill() error { return c.p.Kill() }

// forceKill SIGKILLs the process group (or the guardian) directly: for a guardian that did
// not exit after kill.
func (c *child) forceKill() error { return c.p.KillGroup() }

func (c *child) wait() error { return c.p.Wait() }

// exitStatus is the command's exit code as a shell reports it, as the guardian passes it
// on (128+N when signal N killed the command); -1 if there is no state.
func (c *child) exitStatus() int {
	ps := c.p.Cmd.ProcessState
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignalBase + int(ws.Signal()) // the guardian itself was killed
	}
	return ps.ExitCode()
}

// cleanup, after the command exited with its lock lost, SIGKILLs whatever it left running
// in its process group (the guardian has exited: nothing else is hit).
func (c *child) cleanup() { c.p.KillGroup() }

// close releases what startChild holds, once the command has exited.
func (c *child) close() {}

// signalNumber is sig's number, for 128+N.
func signalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return int(syscall.SIGINT)
}
