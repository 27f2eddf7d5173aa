package main

import "syscall"

// setParentDeathSignal has Linux SIGKILL the command if csmutex dies (SIGKILL, OOM): nothing
// renews the lock any more, waiters will break it after the lease, and a command still
// running then would edit the reservation alongside the next holder. SIGKILL, not SIGTERM,
// because no one is left to escalate if the command ignores a gentler signal.
func setParentDeathSignal(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }
