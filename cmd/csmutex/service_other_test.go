//go:build !windows

package main

import (
	"strings"
	"testing"
)

func TestServiceNotWindows(t *testing.T) {
	for _, args := range [][]string{{"service"}, {"service", "install", "--listen", "127.0.0.1:0"}, {"service", "bogus"}} {
		code, stdout, stderr := runMain(t, args...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, "contrib/systemd/csmutex-sidecar.service") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 64 and a pointer to contrib/systemd", args, code, stdout, stderr)
		}
	}
	if code, stdout, _ := runMain(t, "help", "service"); code != exitOK || !strings.Contains(stdout, "contrib/systemd") {
		t.Errorf("help service: exit %d, stdout %q", code, stdout)
	}
}
