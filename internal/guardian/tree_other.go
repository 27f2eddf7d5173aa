//go:build unix && !linux

package guardian

import (
	"os"
	"syscall"
)

func selfExecutable() (string, error) { return os.Executable() }

// setSubreaper: only Linux has child subreapers; orphans go to init (launchd) here.
func setSubreaper() {}

// commandAttr: no parent-death signal on macOS and most BSDs.
func commandAttr() *syscall.SysProcAttr { return nil }

// killDescendants: without a subreaper an orphan cannot be traced back to the tree; the
// group kill in killTree is what reaches the tree here.
func killDescendants() {}
