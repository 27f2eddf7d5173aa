//go:build unix

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// termWidth is the width of the terminal f, 80 if it cannot be read.
func termWidth(f *os.File) int {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 {
		return 80
	}
	return int(ws.Col)
}

// enableLiveLine reports whether terminal f can show a status line rewritten in place:
// every Unix terminal understands CR and erase-in-line.
func enableLiveLine(*os.File) bool { return true }
