//go:build windows

package main

import (
	"os"

	"golang.org/x/sys/windows"
)

// termWidth is the width of the console window of f, 80 if it cannot be read.
func termWidth(f *os.File) int {
	var info windows.ConsoleScreenBufferInfo
	if err := windows.GetConsoleScreenBufferInfo(windows.Handle(f.Fd()), &info); err != nil {
		return 80
	}
	if w := int(info.Window.Right-info.Window.Left) + 1; w > 0 {
		return w
	}
	return 80
}

// enableLiveLine turns on the console's VT processing, which erase-in-line needs, and
// reports whether it could: older consoles fall back to periodic log lines.
func enableLiveLine(f *os.File) bool {
	h := windows.Handle(f.Fd())
	var mode uint32
	if windows.GetConsoleMode(h, &mode) != nil {
		return false
	}
	return windows.SetConsoleMode(h, mode|windows.ENABLE_VIRTUAL_TERMINAL_PROCESSING) == nil
}
