//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/syncbuf"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mockapi"
)

// mockProc is cmd/mockapi running as a subprocess with one reservation.
type mockProc struct {
	host string
	port int
	res  string
	base string // http://host:port
}

func startMock(t *testing.T, extra ...string) *mockProc {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	cmd := exec.Command(mockBin, append([]string{"-listen", "127.0.0.1:0", "-reservations", "1"}, extra...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	m := &mockProc{}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.After(20 * time.Second)
	for m.base == "" || m.res == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("mockapi exited before announcing itself")
			}
			if v, ok := strings.CutPrefix(l, "listening on "); ok {
				m.base = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(l, "reservation "); ok {
				m.res = strings.TrimSpace(v)
			}
		case <-deadline:
			t.Fatal("mockapi did not announce its address and reservation")
		}
	}
	go func() {
		for range lines { // keep draining
		}
	}()
	hostport := strings.TrimPrefix(m.base, "http://")
	i := strings.LastIndex(hostport, ":")
	m.host = hostport[:i]
	m.port, _ = strconv.Atoi(hostport[i+1:])
	return m
}

// env is the environment for csmutex against m: connection settings from the environment
// (as users would set them), millisecond retry jitter.
func (m *mockProc) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CLOUDSHELL_") && !strings.HasPrefix(kv, "CSMUTEX_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"CLOUDSHELL_HOST="+m.host, "CLOUDSHELL_PORT="+strconv.Itoa(m.port),
		"CLOUDSHELL_USER=admin", "CLOUDSHELL_PASSWORD=admin",
		"CLOUDSHELL_RESERVATION_ID="+m.res,
		testJitterEnv+"=5ms,20ms",
	)
}

// snapshot reads the reservation through the mock's admin endpoint.
func (m *mockProc) snapshot(t *testing.T) mockapi.Snapshot {
	t.Helper()
	resp, err := http.Get(m.base + "/admin/reservations/" + m.res)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s mockapi.Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (m *mockProc) hasService(t *testing.T, alias string) bool {
	for _, s := range m.snapshot(t).Services {
		if s.Alias == alias {
			return true
		}
	}
	return false
}

// client is a raw CloudShell client, to act behind csmutex's back.
func (m *mockProc) client(t *testing.T) *cloudshell.Client {
	t.Helper()
	c, err := cloudshell.Dial(context.Background(), cloudshell.Config{Host: m.host, Port: m.port, Username: "admin", Password: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// proc is a csmutex subprocess.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr syncbuf.Buffer
	done           chan struct{}
	code           int
}

func (m *mockProc) start(t *testing.T, args ...string) *proc {
	t.Helper()
	return m.startWith(t, nil, args...)
}

// startWith starts csmutex against the mock; setup may adjust the command first (stdin, a
// process group of its own). The process is reaped in the background and killed at the end.
func (m *mockProc) startWith(t *testing.T, setup func(*exec.Cmd), args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(csmutexBin, args...), done: make(chan struct{})}
	p.cmd.Env = m.env()
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	// A command orphaned by a killed csmutex keeps our output pipes open; don't wait for it.
	p.cmd.WaitDelay = time.Second
	if setup != nil {
		setup(p.cmd)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	return p
}

// wait waits for p to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("csmutex did not exit within %s\nstdout: %s\nstderr: %s", timeout, p.stdout.String(), p.stderr.String())
		return -1
	}
}

// csm runs csmutex to completion.
func (m *mockProc) csm(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := m.start(t, args...)
	code = p.wait(t, 30*time.Second)
	return code, p.stdout.String(), p.stderr.String()
}

// waitFile waits until path exists and is not empty, and returns its content.
func waitFile(t *testing.T, path string, p *proc) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return string(b)
		}
		select {
		case <-p.done:
			t.Fatalf("csmutex exited (%d) before %s appeared\nstderr: %s", p.code, filepath.Base(path), p.stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatalf("%s did not appear\nstderr: %s", path, p.stderr.String())
	return ""
}

// killGroupLater makes sure a command's process group (pid in file) is gone at the end.
func killGroupLater(t *testing.T, pidFile string) {
	t.Cleanup(func() {
		b, _ := os.ReadFile(pidFile)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
}

func TestProcessMutualExclusion(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	log := filepath.Join(testenv.TempDir(t), "log")
	script := fmt.Sprintf(`echo start >> %[1]s; sleep 0.03; echo end >> %[1]s`, log)
	const workers, rounds = 3, 4
	var wg sync.WaitGroup
	errs := make(chan string, workers*rounds)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				p := m.start(t, "run", "-w", "60", "--owner", fmt.Sprintf("worker-%d", w), "--", "sh", "-c", script)
				if code := p.wait(t, 60*time.Second); code != 0 {
					errs <- fmt.Sprintf("worker %d round %d: exit %d: %s", w, r, code, p.stderr.String())
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b))
	if len(lines) != 2*workers*rounds {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), 2*workers*rounds, b)
	}
	for i, l := range lines {
		want := "start"
		if i%2 == 1 {
			want = "end"
		}
		if l != want {
			t.Fatalf("line %d is %q, want %q: critical sections overlapped:\n%s", i+1, l, want, b)
		}
	}
	if m.hasService(t, "MUTEX") {
		t.Error("lock left behind")
	}
}

func TestProcessExitCodes(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	dir := testenv.TempDir(t)
	notExec := filepath.Join(dir, "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	envOut := filepath.Join(dir, "env")
	cases := []struct {
		name string
		cmd  []string
		want int
	}{
		{"ok", []string{"true"}, 0},
		{"exit 3", []string{"sh", "-c", "exit 3"}, 3},
		{"killed by SIGKILL", []string{"sh", "-c", "kill -KILL $$"}, 128 + 9},
		{"killed by SIGTERM", []string{"sh", "-c", "kill -TERM $$"}, 128 + 15},
		{"not found", []string{"csmutex-no-such-command-xyz"}, 127},
		{"not found (path)", []string{filepath.Join(dir, "missing")}, 127},
		{"not executable", []string{notExec}, 126},
		{"environment", []string{"sh", "-c", "env | grep ^CSMUTEX_ > " + envOut}, 0},
	}
	for _, c := range cases {
		code, _, stderr := m.csm(t, append([]string{"run", "--owner", "exit-test", "--"}, c.cmd...)...)
		if code != c.want {
			t.Errorf("%s: exit %d, want %d\n%s", c.name, code, c.want, stderr)
		}
		if m.hasService(t, "MUTEX") {
			t.Fatalf("%s: lock not released", c.name)
		}
	}
	b, _ := os.ReadFile(envOut)
	for _, want := range []string{"CSMUTEX_LOCK_HELD=1", "CSMUTEX_RESERVATION_ID=" + m.res, "CSMUTEX_LOCK_NAME=MUTEX", "CSMUTEX_OWNER=exit-test"} {
		if !strings.Contains(string(b), want+"\n") {
			t.Errorf("child environment lacks %s:\n%s", want, b)
		}
	}
}

func TestProcessSIGTERMReachesCommand(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	dir := testenv.TempDir(t)
	ready, marker := filepath.Join(dir, "ready"), filepath.Join(dir, "marker")
	script := fmt.Sprintf(`trap 'echo got-term > %s; exit 7' TERM; echo $$ > %s; while :; do sleep 0.02; done`, marker, ready)
	p := m.start(t, "run", "--", "sh", "-c", script)
	killGroupLater(t, ready)
	waitFile(t, ready, p)
	if !m.hasService(t, "MUTEX") {
		t.Fatal("lock not held while the command runs")
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 7 {
		t.Errorf("exit %d, want the command's 7\n%s", code, p.stderr.String())
	}
	if b, _ := os.ReadFile(marker); strings.TrimSpace(string(b)) != "got-term" {
		t.Errorf("the command did not get SIGTERM (marker %q)", b)
	}
	if m.hasService(t, "MUTEX") {
		t.Error("lock not released after the command exited")
	}
	if code, _, stderr := m.csm(t, "run", "-n", "--", "true"); code != 0 {
		t.Errorf("a later -n run failed: %d\n%s", code, stderr)
	}
}

// A signal while csmutex waits for the lock abandons the wait: exit 128+N, nothing held.
func TestProcessInterruptWhileWaiting(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	dir := testenv.TempDir(t)
	ready, stop := filepath.Join(dir, "ready"), filepath.Join(dir, "stop")
	holder := m.start(t, "run", "--owner", "holder", "--", "sh", "-c",
		fmt.Sprintf(`echo $$ > %s; while [ ! -e %s ]; do sleep 0.02; done`, ready, stop))
	killGroupLater(t, ready)
	waitFile(t, ready, holder)

	waiter := m.start(t, "run", "-w", "60", "--owner", "waiter", "--", "true")
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(waiter.stderr.String(), "waiting for lock") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	waiter.cmd.Process.Signal(syscall.SIGINT)
	if code := waiter.wait(t, 20*time.Second); code != 128+2 {
		t.Errorf("interrupted waiter: exit %d, want 130\n%s", code, waiter.stderr.String())
	}
	os.WriteFile(stop, []byte("x"), 0o644)
	if code := holder.wait(t, 20*time.Second); code != 0 {
		t.Errorf("holder: exit %d\n%s", code, holder.stderr.String())
	}
	if m.hasService(t, "MUTEX") {
		t.Error("lock left behind")
	}
}

// csmutex is SIGKILLed while its command runs: nothing releases the lock, so the next
// csmutex must observe the lease run out and break it.
func TestProcessRecoveryAfterSIGKILL(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	ready := filepath.Join(testenv.TempDir(t), "ready")
	holder := m.start(t, "run", "--lease", "300ms", "--owner", "doomed", "--", "sh", "-c",
		fmt.Sprintf(`echo $$ > %s; exec sleep 60`, ready))
	killGroupLater(t, ready)
	waitFile(t, ready, holder)
	holder.cmd.Process.Signal(syscall.SIGKILL)
	holder.wait(t, 10*time.Second)
	if !m.hasService(t, "MUTEX") {
		t.Fatal("the killed holder's lock should still be there")
	}
	if runtime.GOOS == "linux" {
		// The command must not outlive csmutex: nothing renews its lock any more.
		b, _ := os.ReadFile(ready)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		deadline := time.Now().Add(5 * time.Second)
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if processAlive(pid) {
			t.Fatalf("the command (pid %d) outlived its killed csmutex", pid)
		}
	}

	start := time.Now()
	code, _, stderr := m.csm(t, "run", "-w", "20", "--lease", "300ms", "--owner", "rescuer", "--", "true")
	waited := time.Since(start)
	if code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, stderr)
	}
	if waited < 300*time.Millisecond {
		t.Errorf("acquired after %s, before the 300ms lease could have been observed", waited)
	}
	if !strings.Contains(stderr, "broke a stale lock") || !strings.Contains(stderr, "doomed") {
		t.Errorf("expected a log of breaking doomed's stale lock:\n%s", stderr)
	}
}

// The lock service is removed behind csmutex's back: the command gets SIGTERM and csmutex
// exits 70 saying the lock was lost.
func TestProcessLockLost(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	dir := testenv.TempDir(t)
	ready, marker := filepath.Join(dir, "ready"), filepath.Join(dir, "marker")
	p := m.start(t, "run", "--lease", "6s", "--kill-grace", "500ms", "--", "sh", "-c",
		fmt.Sprintf(`trap 'echo got-term > %s; exit 0' TERM; echo $$ > %s; while :; do sleep 0.02; done`, marker, ready))
	killGroupLater(t, ready)
	waitFile(t, ready, p)
	if err := m.client(t).RemoveServicesFromReservation(context.Background(), m.res, []string{"MUTEX"}); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != exitLockLost {
		t.Errorf("exit %d, want 70\n%s", code, p.stderr.String())
	}
	if b, _ := os.ReadFile(marker); strings.TrimSpace(string(b)) != "got-term" {
		t.Errorf("the command did not get SIGTERM (marker %q)", b)
	}
	if !strings.Contains(p.stderr.String(), "was lost while the command ran") {
		t.Errorf("no lost-lock message:\n%s", p.stderr.String())
	}
}

// A command that ignores SIGTERM is killed after --kill-grace when the lock is lost.
func TestProcessLockLostKillAfterGrace(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	ready := filepath.Join(testenv.TempDir(t), "ready")
	p := m.start(t, "run", "--lease", "6s", "--kill-grace", "500ms", "--", "sh", "-c",
		fmt.Sprintf(`trap '' TERM; echo $$ > %s; while :; do sleep 0.02; done`, ready))
	killGroupLater(t, ready)
	waitFile(t, ready, p)
	if err := m.client(t).RemoveServicesFromReservation(context.Background(), m.res, []string{"MUTEX"}); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != exitLockLost {
		t.Errorf("exit %d, want 70\n%s", code, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "killing it") {
		t.Errorf("expected a SIGKILL after the grace period:\n%s", p.stderr.String())
	}
	b, _ := os.ReadFile(ready)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if live := liveGroupMembers(t, pid); len(live) > 0 {
		t.Errorf("processes %v of the command's group are still alive after csmutex exited", live)
	}
}

// liveGroupMembers lists the processes of group pgid that are not zombies (a container's
// init may never reap the orphans). Linux only: it reads /proc.
func liveGroupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	var live []int
	deadline := time.Now().Add(5 * time.Second)
	for {
		live = live[:0]
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil {
				continue
			}
			// pid (comm) state ppid pgrp ...; comm may contain spaces, so split after ')'.
			f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
			if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
				live = append(live, pid)
			}
		}
		if len(live) == 0 || time.Now().After(deadline) {
			return live
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProcessConflict(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	dir := testenv.TempDir(t)
	ready, stop := filepath.Join(dir, "ready"), filepath.Join(dir, "stop")
	holder := m.start(t, "run", "--owner", "the-holder", "--", "sh", "-c",
		fmt.Sprintf(`echo $$ > %s; while [ ! -e %s ]; do sleep 0.02; done`, ready, stop))
	killGroupLater(t, ready)
	waitFile(t, ready, holder)

	code, _, stderr := m.csm(t, "run", "-n", "--", "true")
	if code != exitConflict || !strings.Contains(stderr, "the-holder") {
		t.Errorf("-n: exit %d, want 75 naming the-holder\n%s", code, stderr)
	}
	if code, _, stderr := m.csm(t, "run", "-n", "-E", "3", "--", "true"); code != 3 {
		t.Errorf("-n -E 3: exit %d, want 3\n%s", code, stderr)
	}
	if code, _, stderr := m.csm(t, "run", "-w", "0", "--", "true"); code != exitConflict {
		t.Errorf("-w 0: exit %d, want 75\n%s", code, stderr)
	}
	code, _, stderr = m.csm(t, "run", "-w", "0.2", "--conflict-exit-code", "9", "--", "true")
	if code != 9 || !strings.Contains(stderr, "gave up") || !strings.Contains(stderr, "the-holder") {
		t.Errorf("-w 0.2: exit %d, want 9 naming the-holder\n%s", code, stderr)
	}
	os.WriteFile(stop, []byte("x"), 0o644)
	if code := holder.wait(t, 20*time.Second); code != 0 {
		t.Errorf("holder: exit %d\n%s", code, holder.stderr.String())
	}
}

func TestProcessConnectionErrors(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	cases := []struct {
		name    string
		args    []string
		want    int
		mention string
	}{
		{"unknown flag", []string{"run", "--frobnicate", "--", "true"}, exitUsage, "frobnicate"},
		{"missing reservation", []string{"run", "-r", "", "--", "true"}, exitUsage, "reservation"},
		{"unreachable", []string{"run", "--host", "127.0.0.1", "--port", "1", "--", "true"}, exitUnavailable, "127.0.0.1:1"},
		{"wrong password", []string{"run", "--password", secretPassword, "--", "true"}, exitNoPerm, fmt.Sprintf("%s:%d", m.host, m.port)},
		{"unknown reservation", []string{"run", "-r", "no-such-reservation", "--", "true"}, exitDataErr, "no-such-reservation"},
	}
	for _, c := range cases {
		code, _, stderr := m.csm(t, c.args...)
		if code != c.want || !strings.Contains(stderr, c.mention) {
			t.Errorf("%s: exit %d, want %d mentioning %q\n%s", c.name, code, c.want, c.mention, stderr)
		}
		if strings.Contains(stderr, secretPassword) {
			t.Errorf("%s: password printed", c.name)
		}
	}
}

// A CloudShell whose Mutex Service model lacks "Mutex Owner" (the public package) is a
// setup problem: exit 65 with advice, nothing left behind.
func TestProcessSetupError(t *testing.T) {
	t.Parallel()
	m := startMock(t, "-legacy-model")
	code, _, stderr := m.csm(t, "run", "--", "true")
	if code != exitDataErr || !strings.Contains(stderr, "Mutex_Package.zip") {
		t.Errorf("exit %d, want 65 with advice\n%s", code, stderr)
	}
	if m.hasService(t, "MUTEX") {
		t.Error("lock left behind")
	}
}

func TestProcessStatusAndRelease(t *testing.T) {
	t.Parallel()
	m := startMock(t)
	code, stdout, stderr := m.csm(t, "status")
	if code != 0 || strings.TrimSpace(stdout) != "no locks" {
		t.Fatalf("status with no locks: exit %d, %q %s", code, stdout, stderr)
	}
	if code, stdout, _ = m.csm(t, "status", "--json"); code != 0 || strings.TrimSpace(stdout) != "[]" {
		t.Fatalf("status --json with no locks: exit %d, %q", code, stdout)
	}

	dir := testenv.TempDir(t)
	ready := filepath.Join(dir, "ready")
	holder := m.start(t, "run", "--owner", "status-holder", "--lease", "900ms", "--", "sh", "-c",
		fmt.Sprintf(`echo $$ > %s; while :; do sleep 0.02; done`, ready))
	killGroupLater(t, ready)
	waitFile(t, ready, holder)
	// Wait for a heartbeat (the first renewal is after lease/3).
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, stdout, stderr = m.csm(t, "status")
		if code != 0 {
			t.Fatalf("status: exit %d\n%s", code, stderr)
		}
		if strings.Contains(stdout, "renewing (heartbeat") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{"MUTEX", "csmutex", "status-holder", "900ms", "renewing (heartbeat"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, stdout)
		}
	}

	code, stdout, _ = m.csm(t, "status", "--json", "--name", "MUTEX")
	var locks []lockStatus
	if err := json.Unmarshal([]byte(stdout), &locks); err != nil || code != 0 {
		t.Fatalf("status --json: exit %d, %v\n%s", code, err, stdout)
	}
	if len(locks) != 1 {
		t.Fatalf("want 1 lock, got %+v", locks)
	}
	l := locks[0]
	if l.Name != "MUTEX" || l.Kind != "csmutex" || l.Owner != "status-holder" || l.Lease != "900ms" ||
		l.Token == "" || l.PID == 0 || l.Host == "" || l.Held == "" || !strings.HasPrefix(l.State, "renewing") {
		t.Errorf("unexpected lock: %+v", l)
	}
	if code, stdout, _ = m.csm(t, "status", "--json", "--name", "OTHER"); code != 0 || strings.TrimSpace(stdout) != "[]" {
		t.Errorf("status --name OTHER: exit %d %q", code, stdout)
	}

	code, _, stderr = m.csm(t, "release")
	if code != exitUsage || !strings.Contains(stderr, "--force") {
		t.Errorf("release without --force: exit %d, want 64\n%s", code, stderr)
	}
	if !m.hasService(t, "MUTEX") {
		t.Fatal("release without --force removed the lock")
	}
	code, stdout, stderr = m.csm(t, "release", "--force", "--owner", "the-admin")
	if code != 0 || !strings.Contains(stdout, "status-holder") || !strings.Contains(stdout, "the-admin") {
		t.Errorf("release --force: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "force-released") {
		t.Errorf("release --force should log who broke which owner:\n%s", stderr)
	}
	// The holder finds out at its next renewal and stops its command.
	if code := holder.wait(t, 20*time.Second); code != exitLockLost {
		t.Errorf("holder after force release: exit %d, want 70\n%s", code, holder.stderr.String())
	}
	if code, _, stderr = m.csm(t, "release", "--force"); code != exitNotHeld || !strings.Contains(stderr, "nothing to release") {
		t.Errorf("release of a free lock: exit %d, want 1\n%s", code, stderr)
	}
}

// processAlive reports whether pid is a live process. A zombie counts as dead: its parent
// died and whatever adopted it may not reap it promptly.
func processAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}
