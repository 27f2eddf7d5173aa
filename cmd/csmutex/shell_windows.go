//go:build windows

package main

import (
	"os"
	"strings"
	"syscall"
)

// shellCommand is the argv that runs line through cmd.exe, as flock -c runs sh -c. /d skips
// AutoRun, /s with /c makes cmd strip only the outer quotes that shellCmdLine adds.
func shellCommand(line string) []string {
	comspec := os.Getenv("ComSpec")
	if comspec == "" {
		comspec = "cmd.exe"
	}
	return []string{comspec, "/d", "/s", "/c", line}
}

// shellCmdLine is the verbatim command line for an argv from shellCommand, "" for any
// other: cmd.exe does not parse its command line by the rules Go's argument quoting
// follows, so the line must reach it as the user wrote it, inside one pair of quotes.
func shellCmdLine(argv []string) string {
	if len(argv) != 5 || !strings.EqualFold(argv[1], "/d") || !strings.EqualFold(argv[2], "/s") || !strings.EqualFold(argv[3], "/c") {
		return ""
	}
	return syscall.EscapeArg(argv[0]) + ` /d /s /c "` + argv[4] + `"`
}
