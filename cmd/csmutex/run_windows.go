//go:build windows

package main

import (
	"os"
	"syscall"
)

// forwardSignals: on Windows only Ctrl-C/Ctrl-Break (os.Interrupt) can be caught. The
// console delivers it to every process attached to it, the command included, so there is
// nothing to forward: catching it only keeps csmutex alive to release the lock.
var forwardSignals = []os.Signal{os.Interrupt}

func sysProcAttr(bool) *syscall.SysProcAttr { return nil }

// signalChild does nothing: Windows cannot send a signal to another process, and the
// console has already delivered Ctrl-C to the command.
func signalChild(*os.Process, os.Signal, bool) error { return nil }

// terminateChild kills the command: Windows has no SIGTERM, so a lost lock ends the
// command at once (TerminateProcess); --kill-grace has no effect.
func terminateChild(p *os.Process, _ bool) error { return p.Kill() }

func killChild(p *os.Process, _ bool) error { return p.Kill() }

func exitStatus(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	return ps.ExitCode()
}

// signalNumber is 2 (SIGINT) for Ctrl-C, the only signal Windows delivers.
func signalNumber(os.Signal) int { return 2 }
