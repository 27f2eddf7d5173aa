//go:build unix

package mutex_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mutex"
)

// TestMain doubles as the holder process of the tests below: the test binary re-executes
// itself with CSMUTEX_TEST_HOLDER set, so the holder is a real, separate process that can be
// killed or stopped.
func TestMain(m *testing.M) {
	if os.Getenv("CSMUTEX_TEST_HOLDER") != "" {
		os.Exit(runHolder())
	}
	os.Exit(m.Run())
}

// runHolder acquires the lock, says so, and holds it until stdin closes (then releases) or
// the lock is lost (then reports what Unlock says).
func runHolder() int {
	port, _ := strconv.Atoi(os.Getenv("CSMUTEX_TEST_PORT"))
	leaseD, _ := time.ParseDuration(os.Getenv("CSMUTEX_TEST_LEASE"))
	ctx := context.Background()
	c, err := cloudshell.Dial(ctx, cloudshell.Config{Host: "127.0.0.1", Port: port, Username: "admin", Password: "admin", MachineName: "holder-process"})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	l, err := mutex.New(c, os.Getenv("CSMUTEX_TEST_RES"), mutex.WithLease(leaseD)).Lock(ctx)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("acquired", l.Owner().Token)
	eof := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(eof) }()
	select {
	case <-eof:
	case <-l.Done():
		fmt.Println("lost:", l.Err())
	}
	fmt.Println("unlock:", l.Unlock(ctx))
	return 0
}

type holderProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	token string
}

func startHolder(t *testing.T, env *testenv.Env, leaseD time.Duration) *holderProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "CSMUTEX_TEST_HOLDER=1",
		"CSMUTEX_TEST_PORT="+strconv.Itoa(env.Port), "CSMUTEX_TEST_RES="+env.ReservationID,
		"CSMUTEX_TEST_LEASE="+leaseD.String())
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	h := &holderProc{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
	}()
	line := h.next(t)
	tok, ok := strings.CutPrefix(line, "acquired ")
	if !ok {
		t.Fatalf("holder: %s", line)
	}
	h.token = tok
	return h
}

func (h *holderProc) next(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-h.lines:
		if !ok {
			t.Fatal("holder exited")
		}
		return l
	case <-time.After(15 * time.Second):
		t.Fatal("holder said nothing")
	}
	return ""
}

// A holder process killed with SIGKILL releases nothing; the lease frees the lock.
func TestKilledHolderProcessRecovered(t *testing.T) {
	env := testenv.New(t)
	h := startHolder(t, env, lease)
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.cmd.Wait()
	start := time.Now()
	l, err := mutex.New(env.Client("waiter"), env.ReservationID, fast()...).Lock(ctxTimeout(t, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(context.Background())
	if waited := time.Since(start); waited < lease || waited > lease+retryMax+time.Second {
		t.Fatalf("acquired after %s; want just over the lease %s", waited, lease)
	}
}

// The documented limit (docs/PROTOCOL.md): a holder paused for longer than its lease is
// broken; on waking it finds its lease expired, reports the loss and removes nothing.
func TestPausedHolderProcess(t *testing.T) {
	env := testenv.New(t)
	h := startHolder(t, env, lease)
	if err := h.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	l, err := mutex.New(env.Client("waiter"), env.ReservationID, fast()...).Lock(ctxTimeout(t, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(context.Background())
	if err := h.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if line := h.next(t); !strings.HasPrefix(line, "lost:") || !strings.Contains(line, "lost") {
		t.Fatalf("woken holder said %q, want the loss", line)
	}
	if line := h.next(t); !strings.Contains(line, "not held") {
		t.Fatalf("woken holder's Unlock said %q, want ErrNotHeld", line)
	}
	if svc, _ := lockService(t, env, "MUTEX"); !strings.Contains(svc.Attributes["Mutex Owner"], l.Owner().Token) {
		t.Fatal("the woken holder removed the new holder's lock")
	}
}

// The normal path of the same process: closing stdin releases.
func TestHolderProcessReleases(t *testing.T) {
	env := testenv.New(t)
	h := startHolder(t, env, lease)
	h.stdin.Close()
	if line := h.next(t); line != "unlock: <nil>" {
		t.Fatalf("holder said %q", line)
	}
	if _, ok := lockService(t, env, "MUTEX"); ok {
		t.Fatal("lock still held")
	}
}
