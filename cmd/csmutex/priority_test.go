//go:build unix

package main

import (
	"strings"
	"testing"
	"time"
)

// --priority reaches the waiting room; out-of-range values are usage errors.
func TestRunPriority(t *testing.T) {
	m := newLockedMock(t)
	if code, _, stderr := m.run(t, "--priority", "10", "--", "true"); code != exitUsage || !strings.Contains(stderr, "--priority must be 0 to 9") {
		t.Fatalf("--priority 10: exit %d, %s", code, stderr)
	}
	done := make(chan int, 1)
	go func() {
		code, _, _ := m.run(t, "--priority", "5", "-w", "1m", "--", "true")
		done <- code
	}()
	// Real time (an in-process run against a real HTTP mock): wait with a wide margin for the
	// waiter's entry, then release.
	deadline := time.Now().Add(30 * time.Second)
	for !roomHas(t, m, "p=5") {
		if time.Now().After(deadline) {
			t.Fatal("no waiting-room entry with priority 5 appeared")
		}
		time.Sleep(5 * time.Millisecond)
	}
	m.release()
	if code := <-done; code != exitOK {
		t.Fatalf("the waiting run exited %d", code)
	}
}

func roomHas(t *testing.T, m *lockedMock, sub string) bool {
	t.Helper()
	snap, err := m.srv.Snapshot(m.res)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range snap.SandboxData {
		if strings.HasPrefix(k, "csmutex.queue.") && strings.Contains(v, sub) {
			return true
		}
	}
	return false
}
