//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
)

// lockedMock is an in-process mock whose reservation's lock is held by "holder-x" (a
// csmutex record, no lease) until release is called.
type lockedMock struct {
	srv     *mockapi.Server
	conn    []string // connection flags for csmutex
	res     string
	release func()
}

func newLockedMock(t *testing.T) *lockedMock {
	t.Helper()
	clearEnv(t)
	s := mockapi.New()
	if _, err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	host, port := s.Addr()
	res := s.CreateReservation("test", "admin")
	ctx := context.Background()
	c, err := cloudshell.Dial(ctx, cloudshell.Config{Host: host, Port: port, Username: "admin", Password: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	lock, err := mutex.New(c, res, mutex.WithOwner("holder-x"), mutex.WithLease(0)).TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			if err := lock.Unlock(ctx); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(release)
	// Fast attempts: the test waits for conditions, never for the production interval.
	t.Setenv(testJitterEnv, "2ms,5ms")
	return &lockedMock{srv: s, res: res, release: release,
		conn: []string{"--host", host, "--port", strconv.Itoa(port), "--user", "admin", "--password", "admin", "-r", res}}
}

func (m *lockedMock) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runMain(t, append(append([]string{"run"}, m.conn...), args...)...)
}

// jsonLines parses stderr as JSON log lines.
func jsonLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON log line: %q", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// A script (or the Python helper) learns who holds the lock from the "lock not obtained"
// event's fields, without parsing its message.
func TestRunNotObtainedJSONFields(t *testing.T) {
	m := newLockedMock(t)
	for _, mode := range [][]string{{"-w", "200ms"}, {"-n"}} {
		code, _, stderr := m.run(t, append(append([]string{"--log-format", "json"}, mode...), "--", "true")...)
		if code != exitConflict {
			t.Fatalf("%v: exit %d, want 75\n%s", mode, code, stderr)
		}
		var ev map[string]any
		for _, l := range jsonLines(t, stderr) {
			if msg, _ := l["message"].(string); strings.HasPrefix(msg, "lock not obtained") {
				ev = l
			}
		}
		if ev == nil {
			t.Fatalf("%v: no \"lock not obtained\" event:\n%s", mode, stderr)
		}
		host, _ := os.Hostname()
		if ev["holder"] != "holder-x" || ev["holder_host"] != host || ev["holder_pid"] != float64(os.Getpid()) ||
			ev["holder_token"] == "" || ev["holder_token"] == nil || ev["exit_code"] != float64(exitConflict) {
			t.Errorf("%v: holder fields: %v", mode, ev)
		}
		if since, err := time.Parse(time.RFC3339Nano, ev["held_since"].(string)); err != nil || time.Since(since) > time.Minute {
			t.Errorf("%v: held_since %v (%v)", mode, ev["held_since"], err)
		}
		if w, ok := ev["waited_ms"].(float64); !ok || w < 0 || (mode[0] == "-w" && w < 200) {
			t.Errorf("%v: waited_ms %v", mode, ev["waited_ms"])
		}
		if n, ok := ev["tries"].(float64); !ok || n < 1 || (mode[0] == "-n" && n != 1) {
			t.Errorf("%v: tries %v", mode, ev["tries"])
		}
	}
}

// --sandbox-messages tells the sandbox's user, rate-limited: one "waiting" message however
// many attempts fit in the interval, then "acquired".
func TestRunSandboxMessages(t *testing.T) {
	m := newLockedMock(t)
	done := make(chan struct{})
	var code int
	var stderr string
	go func() {
		defer close(done)
		code, _, stderr = m.run(t, "--sandbox-messages", "-w", "60s", "--", "true")
	}()
	deadline := time.Now().Add(20 * time.Second)
	for len(m.srv.Messages(m.res)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no waiting message in the Output window")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // many attempts (2-5 ms apart), still one message
	m.release()
	<-done
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	msgs := m.srv.Messages(m.res)
	if len(msgs) != 2 || !strings.Contains(msgs[0], "Waiting for the reservation lock") || !strings.Contains(msgs[0], "holder-x") ||
		!strings.HasPrefix(msgs[1], `Lock "MUTEX" acquired after`) {
		t.Errorf("Output window messages: %q", msgs)
	}

	// Off by default.
	m2 := newLockedMock(t)
	m2.run(t, "-w", "50ms", "--", "true")
	if msgs := m2.srv.Messages(m2.res); len(msgs) != 0 {
		t.Errorf("messages without --sandbox-messages: %q", msgs)
	}
}

// The command does not inherit csmutex's CloudShell credentials; it learns what it needs
// from CSMUTEX_* variables.
func TestRunScrubsCredentials(t *testing.T) {
	m := newLockedMock(t)
	m.release()
	out := filepath.Join(testenv.TempDir(t), "env")
	// The password from the environment, as users set it. (A token there would be used to
	// log on, which the mock refuses: commandEnv's test below covers CLOUDSHELL_TOKEN.)
	t.Setenv("CLOUDSHELL_PASSWORD", "admin")
	conn := []string{}
	for i := 0; i < len(m.conn); i++ {
		if m.conn[i] == "--password" {
			i++
			continue
		}
		conn = append(conn, m.conn[i])
	}
	code, _, stderr := runMain(t, append(append([]string{"run"}, conn...), "-c", "env > "+out)...)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	env := "\n" + string(b)
	for _, bad := range []string{"\nCLOUDSHELL_PASSWORD=", "\nCLOUDSHELL_TOKEN="} {
		if strings.Contains(env, bad) {
			t.Errorf("the command's environment has %s", strings.TrimSpace(bad))
		}
	}
	for _, want := range []string{"\nCSMUTEX_LOCK_HELD=1\n", "\nCSMUTEX_RESERVATION_ID=" + m.res + "\n", "\nCSMUTEX_LOCK_NAME=MUTEX\n", "\nCSMUTEX_OWNER="} {
		if !strings.Contains(env, want) {
			t.Errorf("the command's environment lacks %s", strings.TrimSpace(want))
		}
	}

	got := commandEnv([]string{"A=1", "CLOUDSHELL_TOKEN=" + secretToken, "CLOUDSHELL_PASSWORD=" + secretPassword, "CLOUDSHELL_USER=u"}, "X=2")
	if strings.Join(got, " ") != "A=1 CLOUDSHELL_USER=u X=2" {
		t.Errorf("commandEnv = %q", got)
	}
	// A run nested in another's command: what the outer run held is not passed on, and
	// what this run sets appears once.
	outer := []string{"A=1", "CSMUTEX_LOCK_HELD=1", "CSMUTEX_SHAPE=semaphore", "CSMUTEX_SLOT=2", "CSMUTEX_SLOTS=3", "CSMUTEX_LOCK_NAME=SW"}
	got = commandEnv(outer, "CSMUTEX_LOCK_HELD=1", "CSMUTEX_SHAPE=exclusive", "CSMUTEX_LOCK_NAME=MUTEX")
	if strings.Join(got, " ") != "A=1 CSMUTEX_LOCK_HELD=1 CSMUTEX_SHAPE=exclusive CSMUTEX_LOCK_NAME=MUTEX" {
		t.Errorf("nested commandEnv = %q", got)
	}
}

// -c runs a command line through the shell; its exit code is passed through.
func TestRunCommandLine(t *testing.T) {
	m := newLockedMock(t)
	m.release()
	out := filepath.Join(testenv.TempDir(t), "out")
	code, _, stderr := m.run(t, "-c", "echo \"$CSMUTEX_LOCK_HELD\" > "+out+"; exit 3")
	if code != 3 {
		t.Fatalf("exit %d, want the line's 3\n%s", code, stderr)
	}
	if b, _ := os.ReadFile(out); strings.TrimSpace(string(b)) != "1" {
		t.Errorf("the line did not run under the lock: %q", b)
	}
}

// --service-model reaches the lock: a model the server does not have is a setup error (65),
// and status lists only the locks of the model it is given.
func TestServiceModelFlag(t *testing.T) {
	m := newLockedMock(t)
	if code, _, stderr := m.run(t, "--service-model", "No Such Model", "-n", "--", "true"); code != exitDataErr {
		t.Errorf("run with an unknown model: exit %d, want 65\n%s", code, stderr)
	}
	status := append([]string{"status"}, m.conn...)
	if code, stdout, stderr := runMain(t, append(status, "--service-model", "No Such Model")...); code != 0 || strings.TrimSpace(stdout) != "no locks" {
		t.Errorf("status of another model: exit %d %q\n%s", code, stdout, stderr)
	}
	if code, stdout, _ := runMain(t, status...); code != 0 || !strings.Contains(stdout, "holder-x") {
		t.Errorf("status of the default model: exit %d %q", code, stdout)
	}
}
