package sim_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csmutex/csmutex/internal/sim"
)

var (
	shapeSeeds = flag.Int("sim.shapeseeds", 0, "how many seeds of lock shapes to simulate (0: the default for this mode)")
	shapeSeed  = flag.Uint64("sim.shapeseed", 0, "simulate only this lock-shape seed and print its trace")
)

// defaultShapeSeeds keeps TestShapeSimulation under about 30 s in each mode.
func defaultShapeSeeds() int {
	switch {
	case testing.Short():
		return 60
	case raceEnabled:
		return 120
	}
	return 600
}

func runShape(t *testing.T, seed uint64) *sim.ShapeResult {
	var res *sim.ShapeResult
	synctest.Test(t, func(t *testing.T) { res = sim.RunShape(sim.NewShapeScenario(seed)) })
	return res
}

// TestShapeSimulation runs the lock shapes of package locks (semaphore, shared/exclusive,
// sets, pools, counters, allocations; a seed picks one) under faults and crashes, and fails
// with the first failing seed's whole account. Reproduce one with:
// go test ./internal/sim -run TestShapeSimulation -sim.shapeseed=N -v
func TestShapeSimulation(t *testing.T) {
	if *shapeSeed != 0 {
		res := runShape(t, *shapeSeed)
		t.Log(res.Report())
		if res.Failed() {
			t.Fatalf("shape seed %d failed", *shapeSeed)
		}
		return
	}
	n := *shapeSeeds
	if n == 0 {
		n = defaultShapeSeeds()
	}
	var (
		failed            []uint64
		sections, calls   int
		legacyOverReaders int
		perKind           = map[sim.ShapeKind]int{}
		recovery          time.Duration
		started           = time.Now()
	)
	for seed := *first; seed < *first+uint64(n); seed++ {
		res := runShape(t, seed)
		sections += res.Sections
		calls += res.Stats.Calls
		legacyOverReaders += res.LegacyOverReaders
		perKind[res.Kind]++
		recovery = max(recovery, res.Recovery)
		if res.Failed() {
			failed = append(failed, seed)
			if *traceDir != "" {
				_ = os.WriteFile(filepath.Join(*traceDir, fmt.Sprintf("shape-seed-%d.txt", seed)), []byte(res.Report()), 0o644)
			}
			if len(failed) == 1 {
				t.Errorf("shape seed %d failed; reproduce with -run TestShapeSimulation -sim.shapeseed=%d -v\n%s", seed, seed, res.Report())
			}
		}
	}
	elapsed := time.Since(started)
	t.Logf("%d shape seeds in %s: %v, %d critical sections, %d calls, %d legacy writers over readers (documented limit), longest final recovery %s",
		n, elapsed.Round(time.Millisecond), perKind, sections, calls, legacyOverReaders, recovery)
	if len(failed) > 0 {
		t.Errorf("%d of %d shape seeds failed: %v", len(failed), n, failed[:min(len(failed), 40)])
	}
}

// One seed reproduces one whole shape run.
func TestShapeSameSeedSameRun(t *testing.T) {
	for seed := uint64(1); seed <= 2*uint64(len(sim.ShapeKinds)); seed++ { // each kind twice
		a, b := runShape(t, seed), runShape(t, seed)
		if d := traceDiff(a.Trace, b.Trace); d != "" {
			t.Fatalf("shape seed %d: %s", seed, d)
		}
	}
}
