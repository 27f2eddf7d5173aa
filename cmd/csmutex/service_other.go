//go:build !windows

package main

import (
	"context"
	"fmt"
	"io"
)

const serviceNotWindows = `csmutex service: Windows services exist only on Windows. Elsewhere, run
csmutex serve under the system's service manager: on Linux, the systemd unit
contrib/systemd/csmutex-sidecar.service (install steps in its header).
`

// serviceCmd exists on Windows only (service_windows.go); here it says where to look.
func serviceCmd(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdout, serviceNotWindows)
		return exitOK
	}
	fmt.Fprint(stderr, serviceNotWindows)
	return exitUsage
}
