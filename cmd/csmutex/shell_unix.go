//go:build !windows

package main

// shellCommand is the argv that runs line through the shell, as flock -c does.
func shellCommand(line string) []string { return []string{"sh", "-c", line} }
