// Package term tells whether a stream is a terminal, to choose colours and job control.
// The command and the mock server both ask it, so they agree on what a terminal is.
package term

import "os"

// IsTerminal reports whether f is a terminal: an *os.File that is a character device other
// than the null device (which is a character device too, and where colours help nobody).
// Portable and dependency-free; good enough to choose colours and job control.
func IsTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok || file == nil {
		return false
	}
	fi, err := file.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	if null, err := os.Stat(os.DevNull); err == nil && os.SameFile(fi, null) {
		return false
	}
	return true
}
