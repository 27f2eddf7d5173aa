package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
)

// TempDir is t.TempDir, except that on Windows the directory is removed one entry at a time.
//
// Why: since Go 1.26, os.RemoveAll (and so t.TempDir's cleanup) deletes through a Windows
// call that Wine does not implement ("unlinkat …: Invalid function"), so every test using
// t.TempDir fails at cleanup when the suite runs as Windows programs under Wine, which is how
// this project tests its Windows builds. os.Remove of one file or one empty directory works
// on real Windows and under Wine alike. Elsewhere this is exactly t.TempDir.
func TempDir(tb testing.TB) string {
	tb.Helper()
	if runtime.GOOS != "windows" {
		return tb.TempDir()
	}
	dir, err := os.MkdirTemp("", "csmutex-test-")
	if err != nil {
		tb.Fatalf("TempDir: %v", err)
	}
	tb.Cleanup(func() {
		if err := removeTree(dir); err != nil {
			tb.Errorf("TempDir cleanup: %v", err)
		}
	})
	return dir
}

// removeTree removes dir and everything under it, deepest entries first, with os.Remove.
func removeTree(dir string) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return err
	}
	// Longer paths are deeper or later siblings: removing in reverse lexical order deletes
	// every entry before its parent directory.
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}
