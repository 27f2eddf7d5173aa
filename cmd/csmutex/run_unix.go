//go:build unix

package main

import (
	"errors"
	"os"
	"syscall"
)

// forwardSignals are the signals csmutex run catches and forwards to the command.
var forwardSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// sysProcAttr puts the command in a process group of its own when group is set, and, where
// the OS can, has it killed when csmutex dies.
func sysProcAttr(group bool) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: group}
	setParentDeathSignal(attr)
	return attr
}

// signalChild sends sig to the command: to its whole process group when it has one of
// its own (the group id is its pid), else to the process.
func signalChild(p *os.Process, sig os.Signal, group bool) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return p.Signal(sig)
	}
	if group {
		err := syscall.Kill(-p.Pid, s)
		if err == nil || errors.Is(err, syscall.ESRCH) {
			return err
		}
	}
	return p.Signal(s)
}

// terminateChild asks the command to stop (SIGTERM).
func terminateChild(p *os.Process, group bool) error { return signalChild(p, syscall.SIGTERM, group) }

// killChild kills the command (SIGKILL). With group set it also kills whatever is left
// in the command's process group after the command itself has exited.
func killChild(p *os.Process, group bool) error { return signalChild(p, syscall.SIGKILL, group) }

// exitStatus is the command's exit code as a shell reports it: 128+N when signal N killed
// it; -1 if there is no state.
func exitStatus(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignalBase + int(ws.Signal())
	}
	return ps.ExitCode()
}

// signalNumber is sig's number, for 128+N.
func signalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return int(syscall.SIGINT)
}
