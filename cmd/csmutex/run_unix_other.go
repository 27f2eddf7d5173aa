//go:build unix && !linux

package main

import "syscall"

// setParentDeathSignal: macOS and the BSDs have no parent-death signal. A command whose
// csmutex was killed keeps running there; its lock is freed by the lease.
func setParentDeathSignal(*syscall.SysProcAttr) {}
