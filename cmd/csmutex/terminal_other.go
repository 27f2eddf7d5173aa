//go:build !unix && !windows

package main

import "os"

// termWidth is 80: a status line that fits the classic console width is never wrapped.
func termWidth(*os.File) int { return 80 }

// enableLiveLine is false where the terminal's escape sequences are unknown.
func enableLiveLine(*os.File) bool { return false }
