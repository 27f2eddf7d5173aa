package sim_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csmutex/csmutex/internal/sim"
)

var (
	seeds    = flag.Int("sim.seeds", 0, "how many seeds to simulate (0: the default for this mode)")
	first    = flag.Uint64("sim.first", 1, "the first seed")
	oneSeed  = flag.Uint64("sim.seed", 0, "simulate only this seed and print its trace")
	traceDir = flag.String("sim.tracedir", "", "write each failing seed's report to this directory")
)

// defaultSeeds keeps the simulation well inside CI's budget: the race detector slows it
// about tenfold, and -short is for a quick look.
func defaultSeeds() int {
	switch {
	case testing.Short():
		return 100
	case raceEnabled:
		return 600
	}
	return 3000
}

func run(t *testing.T, seed uint64) *sim.Result {
	var res *sim.Result
	synctest.Test(t, func(t *testing.T) { res = sim.Run(sim.NewScenario(seed)) })
	return res
}

// TestSimulation runs many seeds and fails with the first failing seed's whole account.
// Reproduce one with: go test ./internal/sim -run TestSimulation -sim.seed=N
func TestSimulation(t *testing.T) {
	if *oneSeed != 0 {
		res := run(t, *oneSeed)
		t.Log(res.Report())
		if res.Failed() {
			t.Fatalf("seed %d failed", *oneSeed)
		}
		return
	}
	n := *seeds
	if n == 0 {
		n = defaultSeeds()
	}
	var (
		total    sim.Stats
		failed   []uint64
		excused  int
		started  = time.Now()
		recovery time.Duration
		idle     idleRatios
	)
	total.Faults = map[string]int{}
	for seed := *first; seed < *first+uint64(n); seed++ {
		res := run(t, seed)
		add(&total, res.Stats)
		excused += len(res.Excused)
		recovery = max(recovery, res.Recovery)
		idle.add(res)
		if res.Failed() {
			failed = append(failed, seed)
			if *traceDir != "" {
				_ = os.WriteFile(filepath.Join(*traceDir, fmt.Sprintf("seed-%d.txt", seed)), []byte(res.Report()), 0o644)
			}
			if len(failed) == 1 {
				t.Errorf("seed %d failed; reproduce with -run TestSimulation -sim.seed=%d\n%s", seed, seed, res.Report())
			}
		}
	}
	elapsed := time.Since(started)
	t.Logf("%d seeds in %s (%.0f seeds/s): %d acquisitions, %d critical sections, %d calls, faults %v, "+
		"%d lost, %d timeouts, %d other failures, %d late writes, %d excused, longest final recovery %s, "+
		"%d waiting-room entries left by crashed waiters or late writes",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), total.Acquisitions, total.Sections, total.Calls,
		total.Faults, total.Lost, total.Timeouts, total.Failed, total.Late, excused, recovery, total.RoomLeft)
	t.Logf("lock idle while csmutex waiters waited: %s in %d spans; per seed, in leases (the scenario's longest): %s",
		total.IdleWaiting.Round(time.Millisecond), total.IdleSpans, idle)
	if len(failed) > 0 {
		t.Errorf("%d of %d seeds failed: %v", len(failed), n, failed[:min(len(failed), 40)])
	}
}

func add(t *sim.Stats, s sim.Stats) {
	t.Acquisitions += s.Acquisitions
	t.Sections += s.Sections
	t.Lost += s.Lost
	t.Timeouts += s.Timeouts
	t.Failed += s.Failed
	t.LegacyGaveUp += s.LegacyGaveUp
	t.Calls += s.Calls
	t.Late += s.Late
	t.RoomLeft += s.RoomLeft
	t.IdleWaiting += s.IdleWaiting
	t.IdleSpans += s.IdleSpans
	for k, v := range s.Faults {
		t.Faults[k] += v
	}
}

// TestSameSeedSameRun: one seed reproduces one whole run, faults included.
func TestSameSeedSameRun(t *testing.T) {
	for _, seed := range []uint64{3, 17, 101, 2024} {
		a, b := run(t, seed), run(t, seed)
		if d := traceDiff(a.Trace, b.Trace); d != "" {
			t.Fatalf("seed %d: %s", seed, d)
		}
		if len(a.Trace) < 20 {
			t.Fatalf("seed %d: a trace of %d lines is too short to prove anything", seed, len(a.Trace))
		}
	}
}

// One seed replays the same run in another process, on another machine: what the run does
// must not depend on the process (its pid, its host name), only on the seed. Records carry
// host and pid, so those are masked; everything else, down to the waiting-room slots, must
// agree. (It did not when the room's slots were spread by host and pid.)
func TestSeedReplaysInAnotherProcess(t *testing.T) {
	const seed = 777 // a seed whose run queues in the waiting room
	if os.Getenv("CSMUTEX_SIM_CHILD") != "" {
		for _, l := range run(t, seed).Trace {
			fmt.Println("trace:", strconv.Quote(l)) // a trace line may span lines
		}
		return
	}
	here := run(t, seed).Trace
	cmd := exec.Command(os.Args[0], "-test.run=^TestSeedReplaysInAnotherProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CSMUTEX_SIM_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the child: %v\n%s", err, out)
	}
	var there []string
	for _, l := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(l, "trace: "); ok {
			line, err := strconv.Unquote(rest)
			if err != nil {
				t.Fatalf("the child's trace line %q: %v", rest, err)
			}
			there = append(there, line)
		}
	}
	mask := regexp.MustCompile(`host=\S+ pid=\d+`)
	if !slices.ContainsFunc(here, func(l string) bool { return strings.Contains(l, "csmutex.queue.") }) {
		t.Fatalf("seed %d no longer uses the waiting room: pick another", seed)
	}
	masked := func(trace []string) []string {
		out := make([]string, len(trace))
		for i, l := range trace {
			out[i] = mask.ReplaceAllString(l, "host=H pid=P")
		}
		return out
	}
	if d := traceDiff(masked(here), masked(there)); d != "" {
		t.Fatalf("seed %d, here and in another process: %s", seed, d)
	}
}

// traceDiff says where two traces of one seed part, or "" if they are the same.
func traceDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("traces differ at line %d:\n  %s\n  %s", i+1, a[i], b[i])
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("traces differ in length: %d and %d lines", len(a), len(b))
	}
	return ""
}

// idleRatios collects each seed's longest idle span and longest unexcused stretch, in
// leases, for the distribution TestSimulation logs.
type idleRatios struct{ longest, unexcused, bound []float64 }

func (r *idleRatios) add(res *sim.Result) {
	var lease time.Duration
	for _, p := range res.Scenario.Procs {
		lease = max(lease, p.Lease)
	}
	l := lease.Seconds()
	r.longest = append(r.longest, res.Stats.IdleLongest.Seconds()/l)
	r.unexcused = append(r.unexcused, res.Stats.IdleUnexcused.Seconds()/l)
	r.bound = append(r.bound, res.Stats.IdleBound.Seconds()/l)
}

func (r idleRatios) String() string {
	q := func(xs []float64, p float64) float64 {
		if len(xs) == 0 {
			return 0
		}
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[min(len(s)-1, int(p*float64(len(s))))]
	}
	return fmt.Sprintf("longest span p50 %.2f p99 %.2f max %.2f; longest unexcused stretch p50 %.2f p99 %.2f max %.2f (bound %.2f–%.2f)",
		q(r.longest, 0.5), q(r.longest, 0.99), q(r.longest, 1), q(r.unexcused, 0.5), q(r.unexcused, 0.99), q(r.unexcused, 1),
		q(r.bound, 0), q(r.bound, 1))
}
