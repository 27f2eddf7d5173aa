package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/syncbuf"
	"github.com/csmutex/csmutex/mutex"
	"golang.org/x/sys/unix"
)

// On a terminal, a waiting run shows a live status line, rewritten in place (CR, erase to
// end of line), naming the holder, and erases it before its last words. A real csmutex
// process with its stderr on a pseudo-terminal; it waits -w 3s with millisecond attempts,
// so dozens of rewrites happen whatever the machine's load, and the test waits for the
// process, not for a time.
func TestRunLiveStatusLineOnTerminal(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	ctx := context.Background()
	lock, err := mutex.New(m.client(t), m.res, mutex.WithOwner("pty-holder"), mutex.WithLease(0)).TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock(ctx)

	screen, tty := ptyScreen(t)
	p := m.startWith(t, func(cmd *exec.Cmd) { cmd.Stderr = tty }, "run", "-w", "3s", "--", "true")
	if code := p.wait(t, 60*time.Second); code != exitConflict {
		t.Fatalf("exit %d, want 75\n%q", code, tail(screen.String()))
	}
	// The last words come after the process wrote them; give the pty a moment to pass them on.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(screen.String(), "lock not obtained") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	out := screen.String()
	lines := regexp.MustCompile(regexp.QuoteMeta(clearLine)+`waiting \d+s \(\d+ tries(, \d+ in line)?\) for lock "MUTEX": held by pty-holder \(host [^,]+, pid \d+\) for \d+s; no lease \(never expires\)`).FindAllString(out, -1)
	if len(lines) < 2 {
		t.Fatalf("want the status line rewritten in place at least twice, got %d:\n%q", len(lines), tail(out))
	}
	// The give-up message starts on a cleared line, not after the status text.
	i := strings.Index(out, "lock not obtained")
	j := strings.LastIndex(out[:i], clearLine)
	if j < 0 || strings.Contains(out[j+len(clearLine):i], "waiting for lock") {
		t.Errorf("the status line was not erased before the final message:\n%q", tail(out[:i+20]))
	}
}

// -q silences the status line (errors still print).
func TestRunQuietHasNoStatusLine(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	ctx := context.Background()
	lock, err := mutex.New(m.client(t), m.res, mutex.WithOwner("pty-holder"), mutex.WithLease(0)).TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock(ctx)
	screen, tty := ptyScreen(t)
	p := m.startWith(t, func(cmd *exec.Cmd) { cmd.Stderr = tty }, "run", "-q", "-w", "300ms", "--", "true")
	if code := p.wait(t, 60*time.Second); code != exitConflict {
		t.Fatalf("exit %d, want 75", code)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(screen.String(), "lock not obtained") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if out := screen.String(); strings.Contains(out, clearLine) || !strings.Contains(out, "lock not obtained") {
		t.Errorf("-q: want only the error, no status line:\n%q", tail(out))
	}
}

// ptyScreen opens a pseudo-terminal 200 columns wide and collects what is written to it.
func ptyScreen(t *testing.T) (*syncbuf.Buffer, *os.File) {
	t.Helper()
	master, tty := openPty(t)
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 50, Col: 200}); err != nil {
		t.Skipf("setting the terminal size: %v", err)
	}
	screen := &syncbuf.Buffer{}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			screen.Write(b[:n])
			if err != nil {
				return
			}
		}
	}()
	return screen, tty
}

// tail is the end of a long screen, for failure messages.
func tail(s string) string { return s[max(0, len(s)-600):] }
