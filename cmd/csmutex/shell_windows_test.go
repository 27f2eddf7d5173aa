//go:build windows

package main

import (
	"strings"
	"testing"
)

// -c's line reaches cmd.exe verbatim inside one pair of quotes (/s strips only those):
// Go's argument quoting would escape its inner quotes the way cmd.exe does not read them.
func TestShellCommandWindows(t *testing.T) {
	t.Setenv("ComSpec", `C:\Windows\system32\cmd.exe`)
	line := `echo "a b" && dir "C:\Program Files"`
	argv := shellCommand(line)
	if len(argv) != 5 || argv[0] != `C:\Windows\system32\cmd.exe` || argv[4] != line {
		t.Fatalf("shellCommand = %q", argv)
	}
	want := `C:\Windows\system32\cmd.exe /d /s /c "` + line + `"`
	if got := shellCmdLine(argv); got != want {
		t.Errorf("shellCmdLine = %s, want %s", got, want)
	}
	if got := shellCmdLine([]string{"prog.exe", "a", "b"}); got != "" {
		t.Errorf("an ordinary command gets a verbatim command line: %q", got)
	}
	if !strings.EqualFold(shellCommand("x")[3], "/c") {
		t.Error("no /c")
	}
}
