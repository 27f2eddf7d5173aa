package testenv

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// wsaeafnosupport is Winsock's "address family not supported".
const wsaeafnosupport = syscall.Errno(10047)

// SkipWithoutUnixSockets skips the test when this Windows cannot listen on a unix-domain
// socket. Windows 10 (1803) and later can, so the tests run there; Wine, which this project
// uses to run its Windows builds, cannot (WSAEAFNOSUPPORT, winapi error 10047). Anywhere
// else a failure to listen is a real failure and is left to the test.
func SkipWithoutUnixSockets(tb testing.TB) {
	tb.Helper()
	if runtime.GOOS != "windows" {
		return
	}
	dir := TempDir(tb)
	l, err := net.Listen("unix", filepath.Join(dir, "probe.sock"))
	if err == nil {
		l.Close()
		_ = os.Remove(filepath.Join(dir, "probe.sock"))
		return
	}
	if errors.Is(err, wsaeafnosupport) {
		tb.Skipf("this Windows has no unix-domain sockets (Wine?): %v", err)
	}
}
