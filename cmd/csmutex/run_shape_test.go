//go:build unix

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
)

// shapeMock is an in-process mock CloudShell with one reservation, and a client for the
// test's own moves (holding a lock as someone else, removing a service).
type shapeMock struct {
	srv    *mockapi.Server
	conn   []string
	res    string
	client *cloudshell.Client
}

func newShapeMock(t *testing.T) *shapeMock {
	t.Helper()
	clearEnv(t)
	host, port, res := inProcessMock(t)
	c, err := cloudshell.Dial(context.Background(), cloudshell.Config{Host: host, Port: port, Username: "admin", Password: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	// Fast attempts: the tests wait for conditions, never for the production interval.
	t.Setenv(testJitterEnv, "2ms,5ms")
	return &shapeMock{conn: []string{"--host", host, "--port", strconv.Itoa(port), "--user", "admin", "--password", "admin", "-r", res},
		res: res, client: c}
}

func (m *shapeMock) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runMain(t, append(append([]string{"run"}, m.conn...), args...)...)
}

func (m *shapeMock) cmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runMain(t, append(append([]string{args[0]}, m.conn...), args[1:]...)...)
}

// aliases lists the lock services in the reservation now.
func (m *shapeMock) aliases(t *testing.T) []string {
	t.Helper()
	d, err := m.client.GetReservationDetails(context.Background(), m.res, true)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range d.Services {
		out = append(out, s.Alias)
	}
	sort.Strings(out)
	return out
}

// holdAs takes the plain lock name as another driver would, until the test ends or the
// returned release is called.
func (m *shapeMock) holdAs(t *testing.T, name, owner string) (release func()) {
	t.Helper()
	ctx := context.Background()
	l, err := mutex.New(m.client, m.res, mutex.WithName(name), mutex.WithOwner(owner), mutex.WithLease(0)).TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { l.Unlock(ctx) }) }
	t.Cleanup(release)
	return release
}

// envOf runs a shape and returns the CSMUTEX_* variables its command saw.
func envOf(t *testing.T, m *shapeMock, args ...string) map[string]string {
	t.Helper()
	out := filepath.Join(testenv.TempDir(t), "env")
	code, _, stderr := m.run(t, append(args, "-c", "env > "+out)...)
	if code != 0 {
		t.Fatalf("run %v: exit %d\n%s", args, code, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && strings.HasPrefix(k, "CSMUTEX_") && k != testJitterEnv {
			env[k] = v
		}
	}
	return env
}

// Each shape tells its command what it got, and leaves nothing behind.
func TestRunShapeEnvironment(t *testing.T) {
	m := newShapeMock(t)
	base := func(shape, name string) map[string]string {
		return map[string]string{"CSMUTEX_LOCK_HELD": "1", "CSMUTEX_RESERVATION_ID": m.res, "CSMUTEX_OWNER": "drv",
			"CSMUTEX_SHAPE": shape, "CSMUTEX_LOCK_NAME": name}
	}
	with := func(env map[string]string, kv ...string) map[string]string {
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	cases := []struct {
		args []string
		want map[string]string
	}{
		{nil, with(base("exclusive", "MUTEX"), "CSMUTEX_ALIASES", "MUTEX")},
		{[]string{"-s", "--name", "TOPO"}, with(base("shared", "TOPO"), "CSMUTEX_SLOT", "1", "CSMUTEX_READERS", "16", "CSMUTEX_ALIASES", "TOPO.read.1")},
		{[]string{"--shared", "--readers", "4", "--name", "TOPO"}, with(base("shared", "TOPO"), "CSMUTEX_SLOT", "1", "CSMUTEX_READERS", "4", "CSMUTEX_ALIASES", "TOPO.read.1")},
		{[]string{"--slots", "3", "--name", "SW"}, with(base("semaphore", "SW"), "CSMUTEX_SLOT", "1", "CSMUTEX_SLOTS", "3", "CSMUTEX_ALIASES", "SW.slot.1")},
		{[]string{"--name", "SWITCH-2", "--name", "SWITCH-1"}, with(base("set", "SWITCH-1,SWITCH-2"), "CSMUTEX_NAMES", "SWITCH-1,SWITCH-2", "CSMUTEX_ALIASES", "SWITCH-1,SWITCH-2")},
		{[]string{"--pool", "P1,P2,P3", "--count", "2"}, with(base("pool", "P1,P2"), "CSMUTEX_MEMBERS", "P1,P2", "CSMUTEX_POOL", "P1,P2,P3", "CSMUTEX_ALIASES", "P1,P2")},
		// A name no shape can have (a slot's) is the plain lock.
		{[]string{"--name", "X.slot.2"}, with(base("exclusive", "X.slot.2"), "CSMUTEX_ALIASES", "X.slot.2")},
	}
	for _, c := range cases {
		got := envOf(t, m, append([]string{"--owner", "drv"}, c.args...)...)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("run %v: the command saw\n%v\nwant\n%v", c.args, got, c.want)
		}
		if left := m.aliases(t); len(left) != 0 {
			t.Errorf("run %v left %v in the reservation", c.args, left)
		}
	}
}

// interval is when one command ran, by the machine's clock, in nanoseconds.
type interval struct {
	tag        string
	start, end int64
}

// intervalScript records the command's run as "tag start end" in dir: the command's own
// interval lies within its hold, so overlapping intervals are overlapping holds.
func intervalScript(dir, tag, body string) string {
	return fmt.Sprintf(`s=$(date +%%s%%N); %s e=$(date +%%s%%N); echo "%s $s $e" > %s/$$`, body, tag, dir)
}

func readIntervals(t *testing.T, dir string) []interval {
	t.Helper()
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []interval
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var iv interval
		if _, err := fmt.Sscan(string(b), &iv.tag, &iv.start, &iv.end); err != nil {
			continue // a marker, not an interval
		}
		out = append(out, iv)
	}
	return out
}

// maxOverlap is the most intervals running at one instant.
func maxOverlap(ivs []interval) int {
	type ev struct {
		at    int64
		delta int
	}
	var evs []ev
	for _, iv := range ivs {
		evs = append(evs, ev{iv.start, 1}, ev{iv.end, -1})
	}
	sort.Slice(evs, func(i, j int) bool {
		return evs[i].at < evs[j].at || (evs[i].at == evs[j].at && evs[i].delta < evs[j].delta)
	})
	n, most := 0, 0
	for _, e := range evs {
		n += e.delta
		most = max(most, n)
	}
	return most
}

func needNanoDate(t *testing.T) {
	out, err := exec.Command("date", "+%s%N").Output()
	if err != nil || strings.Contains(string(out), "N") {
		t.Skip("date +%N is not supported here")
	}
}

// A semaphore of 2 never has 3 commands running at once, however many runs compete; the
// same commands without it do overlap (the control shows the check can fail). Real time:
// each command sleeps 200ms so that competing runs really contend; the bound is wide (runs
// take their turns within runMain's 20s).
func TestRunSemaphoreOccupancy(t *testing.T) {
	needNanoDate(t)
	m := newShapeMock(t)
	const runs, slots = 6, 2
	body := "sleep 0.2;"

	control := testenv.TempDir(t)
	var cmds []*exec.Cmd
	for range runs {
		c := exec.Command("sh", "-c", intervalScript(control, "free", body))
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	for _, c := range cmds {
		c.Wait()
	}
	if got := maxOverlap(readIntervals(t, control)); got <= slots {
		t.Fatalf("control: without the semaphore at most %d commands overlapped; the check cannot see a violation", got)
	}

	dir := testenv.TempDir(t)
	var wg sync.WaitGroup
	codes := make([]int, runs)
	errs := make([]string, runs)
	for i := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, errs[i] = m.run(t, "--slots", strconv.Itoa(slots), "--name", "SW", "-w", "60s", "-c", intervalScript(dir, "sem", body))
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 0 {
			t.Fatalf("run %d: exit %d\n%s", i, c, errs[i])
		}
	}
	ivs := readIntervals(t, dir)
	if len(ivs) != runs {
		t.Fatalf("%d commands ran, want %d", len(ivs), runs)
	}
	if got := maxOverlap(ivs); got > slots {
		t.Errorf("%d commands held a semaphore of %d at once", got, slots)
	}
}

// Shared runs hold the lock together; an exclusive run waits for all of them to finish and
// runs alone. The readers meet at a barrier (each waits, up to 20s, until all three are
// in), which they pass only if they hold the lock at once; the exclusive run starts once
// they are all in, and must not start its command before the last has left.
func TestRunSharedAndExclusive(t *testing.T) {
	needNanoDate(t)
	m := newShapeMock(t)
	dir, marks := testenv.TempDir(t), testenv.TempDir(t)
	const readers = 3
	barrier := fmt.Sprintf(`touch %s/$$; i=0; while [ $(ls %s | wc -l) -lt %d ]; do i=$((i+1)); [ $i -gt 2000 ] && exit 9; sleep 0.01; done; sleep 0.3;`,
		marks, marks, readers)
	var wg sync.WaitGroup
	codes := make([]int, readers+1)
	errs := make([]string, readers+1)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, errs[i] = m.run(t, "-s", "--name", "TOPO", "-w", "60s", "-c", intervalScript(dir, "reader", barrier))
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if files, _ := os.ReadDir(marks); len(files) == readers {
			break
		}
		if time.Now().After(deadline) {
			wg.Wait()
			t.Fatalf("the shared runs never held the lock together: exits %v\n%s", codes, strings.Join(errs, "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	codes[readers], _, errs[readers] = m.run(t, "--name", "TOPO", "-w", "60s", "-c", intervalScript(dir, "writer", ""))
	wg.Wait()
	for i, c := range codes {
		if c != 0 {
			t.Fatalf("run %d: exit %d\n%s", i, c, errs[i])
		}
	}
	var writer interval
	lastReader := int64(0)
	for _, iv := range readIntervals(t, dir) {
		if iv.tag == "writer" {
			writer = iv
		} else {
			lastReader = max(lastReader, iv.end)
		}
	}
	if writer.start == 0 || writer.start < lastReader {
		t.Errorf("the exclusive run started at %d, before the last shared run ended at %d", writer.start, lastReader)
	}

	// While someone holds the name exclusively, a shared run is refused (-n) and so is an
	// exclusive one while a shared run is in.
	release := m.holdAs(t, "TOPO", "rewirer")
	if code, _, stderr := m.run(t, "-s", "--name", "TOPO", "-n", "--", "true"); code != exitConflict || !strings.Contains(stderr, "rewirer") {
		t.Errorf("shared run while held exclusively: exit %d, want 75 naming the holder\n%s", code, stderr)
	}
	release()
}

// An exclusive run of a name that shared runs hold waits for them (-n: is refused, naming
// the reader) rather than joining them.
func TestRunExclusiveRefusedWhileShared(t *testing.T) {
	m := newShapeMock(t)
	in := filepath.Join(testenv.TempDir(t), "in")
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.run(t, "-s", "--name", "TOPO", "--owner", "reader-1", "-c", "touch "+in+"; sleep 1")
	}()
	awaitFile(t, in)
	code, _, stderr := m.run(t, "--name", "TOPO", "-n", "--", "true")
	if code != exitConflict || !strings.Contains(stderr, "reader-1") {
		t.Errorf("exclusive -n while a shared run holds: exit %d, want 75 naming reader-1\n%s", code, stderr)
	}
	<-done
	if left := m.aliases(t); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

func awaitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A set is all or nothing: when one name is held, a one-try run gets none (the names it
// took are released) and a waiting run gets them all once the name is free.
func TestRunSetAllOrNothing(t *testing.T) {
	m := newShapeMock(t)
	release := m.holdAs(t, "SWITCH-2", "other")
	code, _, stderr := m.run(t, "--name", "SWITCH-1", "--name", "SWITCH-2", "-n", "--", "true")
	if code != exitConflict || !strings.Contains(stderr, "SWITCH-2") || !strings.Contains(stderr, "other") {
		t.Errorf("set with a held name, -n: exit %d, want 75 naming SWITCH-2 and its holder\n%s", code, stderr)
	}
	if got := m.aliases(t); !slices.Equal(got, []string{"SWITCH-2"}) {
		t.Errorf("after a refused set the reservation holds %v, want only the other driver's SWITCH-2", got)
	}
	code, _, stderr = m.run(t, "--name", "SWITCH-1", "--name", "SWITCH-2", "-w", "100ms", "--", "true")
	if code != exitConflict || !strings.Contains(stderr, "gave up after") {
		t.Errorf("set timing out: exit %d, want 75\n%s", code, stderr)
	}
	if got := m.aliases(t); !slices.Equal(got, []string{"SWITCH-2"}) {
		t.Errorf("after a set timed out the reservation holds %v", got)
	}

	out := filepath.Join(testenv.TempDir(t), "names")
	done := make(chan struct{})
	var code2 int
	go func() {
		defer close(done)
		code2, _, stderr = m.run(t, "--name", "SWITCH-2", "--name", "SWITCH-1", "-w", "60s", "-c", `echo "$CSMUTEX_NAMES" > `+out)
	}()
	time.Sleep(50 * time.Millisecond) // let it wait a little: it holds SWITCH-1 meanwhile
	release()
	<-done
	if b, _ := os.ReadFile(out); code2 != 0 || strings.TrimSpace(string(b)) != "SWITCH-1,SWITCH-2" {
		t.Errorf("waiting set: exit %d, names %q\n%s", code2, b, stderr)
	}
}

// Two pool runs held at once get distinct members; a third finds the pool short (-n).
func TestRunPoolDistinctMembers(t *testing.T) {
	m := newShapeMock(t)
	dir := testenv.TempDir(t)
	// Each writes its members, then waits (up to 20s) until both have: they hold at once.
	script := fmt.Sprintf(`echo "$CSMUTEX_MEMBERS" > %s/$$; i=0; while [ $(ls %s | wc -l) -lt 2 ]; do i=$((i+1)); [ $i -gt 2000 ] && exit 9; sleep 0.01; done; sleep 0.3`, dir, dir)
	var wg sync.WaitGroup
	codes := make([]int, 2)
	errs := make([]string, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, errs[i] = m.run(t, "--pool", "TG-1,TG-2,TG-3,TG-4,TG-5", "--count", "2", "-w", "60s", "-c", script)
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if files, _ := os.ReadDir(dir); len(files) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the two pool runs never held at once")
		}
		time.Sleep(5 * time.Millisecond)
	}
	code, _, stderr := m.run(t, "--pool", "TG-1,TG-2,TG-3,TG-4,TG-5", "--count", "2", "-n", "--", "true")
	if code != exitConflict || !strings.Contains(stderr, "pool") {
		t.Errorf("third pool run with one member free: exit %d, want 75\n%s", code, stderr)
	}
	wg.Wait()
	for i, c := range codes {
		if c != 0 {
			t.Fatalf("pool run: exit %d\n%s", c, errs[i])
		}
	}
	seen := map[string]bool{}
	files, _ := os.ReadDir(dir)
	for _, f := range files {
		b, _ := os.ReadFile(filepath.Join(dir, f.Name()))
		ms := strings.Split(strings.TrimSpace(string(b)), ",")
		if len(ms) != 2 {
			t.Errorf("members %q, want 2", b)
		}
		for _, mb := range ms {
			if seen[mb] {
				t.Errorf("member %s handed out twice", mb)
			}
			seen[mb] = true
		}
	}
}

// A part of a shape lost while the command runs terminates it, and run exits 70, as for
// the plain lock. Real time: the lease is 600ms (renewals every 200ms), the command sleeps
// 30s: the loss must end it long before.
func TestRunShapeLost(t *testing.T) {
	m := newShapeMock(t)
	in := filepath.Join(testenv.TempDir(t), "in")
	done := make(chan struct{})
	var code int
	var stderr string
	start := time.Now()
	go func() {
		defer close(done)
		code, _, stderr = m.run(t, "--slots", "2", "--name", "SW", "--lease", "600ms", "-c", "touch "+in+"; sleep 30")
	}()
	awaitFile(t, in)
	if err := m.client.RemoveServicesFromReservation(context.Background(), m.res, []string{"SW.slot.1"}); err != nil {
		t.Fatal(err)
	}
	<-done
	if code != exitLockLost || !strings.Contains(stderr, `semaphore "SW"`) || time.Since(start) > 15*time.Second {
		t.Errorf("slot removed under the command: exit %d after %s, want 70 naming the semaphore\n%s", code, time.Since(start), stderr)
	}
}
