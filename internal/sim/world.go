package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/csmutex/csmutex/mutex"
)

// ReservationID is the one reservation every simulated process locks.
const ReservationID = "sim-reservation"

// ProcSpec is one simulated process and the faults it meets.
type ProcSpec struct {
	Name        string
	Legacy      bool // the public Python snippet (generation B: add, hold, remove unconditionally)
	Lease       time.Duration
	HTTPTimeout time.Duration
	Rounds      int           // critical sections it runs
	Hold        time.Duration // the longest critical section
	Faults      FaultRates
	Pauses      []window
	Partitions  []window
	CrashAt     time.Duration // since the start; 0: never
	StartAt     time.Duration
	// Members > 1 makes the process a cohort (mutex.WithCohort): that many goroutines share
	// one Mutex, each running Rounds critical sections, passing the lock within Cohort.
	Members int
	Cohort  mutex.CohortBound
	// Priority in the waiting room (mutex.WithPriority).
	Priority int
}

// Scenario is everything one seed decides.
type Scenario struct {
	Seed  uint64
	Procs []ProcSpec
}

func (sc Scenario) maxLease() time.Duration {
	var m time.Duration
	for _, p := range sc.Procs {
		m = max(m, p.Lease)
	}
	return m
}

// String summarises the scenario for a failure report.
func (sc Scenario) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d:", sc.Seed)
	for _, p := range sc.Procs {
		kind := "csmutex"
		if p.Legacy {
			kind = "legacy"
		}
		fmt.Fprintf(&b, "\n  %s %s lease=%s http-timeout=%s rounds=%d hold<=%s faults=%+v", p.Name, kind, p.Lease, p.HTTPTimeout, p.Rounds, p.Hold, p.Faults)
		for _, w := range p.Pauses {
			fmt.Fprintf(&b, " pause=[%s,%s)", w.from.Sub(epoch), w.to.Sub(epoch))
		}
		for _, w := range p.Partitions {
			fmt.Fprintf(&b, " partition=[%s,%s)", w.from.Sub(epoch), w.to.Sub(epoch))
		}
		if p.CrashAt > 0 {
			fmt.Fprintf(&b, " crash=%s", p.CrashAt)
		}
		if p.Priority > 0 {
			fmt.Fprintf(&b, " priority=%d", p.Priority)
		}
		if p.Members > 1 {
			fmt.Fprintf(&b, " cohort=%d passes<=%d hold<=%s yield=%s", p.Members, p.Cohort.Passes, p.Cohort.Hold, p.Cohort.Yield)
		}
	}
	return b.String()
}

// epoch is where every synctest bubble's clock starts (midnight UTC, 2000-01-01); windows are
// stored as absolute virtual times from it.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// NewScenario draws a scenario from seed: 2–5 csmutex processes (sometimes with one or two
// legacy snippet drivers), mixed leases, and a fault mix that ranges from none to heavy.
func NewScenario(seed uint64) Scenario {
	r := rand.New(rand.NewPCG(seed, mix(seed)))
	sc := Scenario{Seed: seed}
	leases := []time.Duration{2 * time.Second, 3 * time.Second, 5 * time.Second, 8 * time.Second}
	common := leases[r.IntN(len(leases))]
	mixed := r.IntN(2) == 0
	level := func(hi float64) float64 {
		switch r.IntN(3) {
		case 0:
			return 0
		case 1:
			return hi / 4
		}
		return hi
	}
	rates := FaultRates{
		Slow: level(0.15), Stall: level(0.03), DropAfter: level(0.15), FailBefore: level(0.1),
		Refused: level(0.05), Err5xx: level(0.1), Unauth: level(0.05),
	}
	n := 2 + r.IntN(4)
	procs, horizon := drawProcs(r, n, common, mixed, leases, rates)
	sc.Procs = append(sc.Procs, procs...)
	for i := range sc.Procs {
		p := &sc.Procs[i]
		at := func() time.Time { return epoch.Add(time.Duration(r.Int64N(int64(horizon)))) }
		if r.Float64() < 0.25 {
			from := at()
			p.Pauses = append(p.Pauses, window{from, from.Add(p.Lease/5 + time.Duration(r.Int64N(int64(2*p.Lease))))})
		}
		if r.Float64() < 0.2 {
			from := at()
			p.Partitions = append(p.Partitions, window{from, from.Add(p.Lease/5 + time.Duration(r.Int64N(int64(2*p.Lease))))})
		}
		if r.Float64() < 0.15 {
			p.CrashAt = time.Duration(r.Int64N(int64(horizon)))
		}
	}
	if r.Float64() < 0.3 {
		legacyLease := sc.maxLease()
		for i := range 1 + r.IntN(2) {
			sc.Procs = append(sc.Procs, ProcSpec{
				Name:   fmt.Sprintf("legacy%d", i+1),
				Legacy: true,
				// A legacy driver has no lease; this only scales its sleeps and delays.
				Lease:       legacyLease,
				HTTPTimeout: 10 * legacyLease,
				Rounds:      1 + r.IntN(3),
				Hold:        legacyLease / 4,
				// The snippet cannot survive write faults (section 6.3 of the API notes), so
				// only delays reach it: its flaws are not what this simulator judges.
				Faults:  FaultRates{Slow: rates.Slow / 2},
				StartAt: time.Duration(r.Int64N(int64(legacyLease))),
			})
		}
	}
	// Cohorts are drawn from a stream of their own, so that every other choice of a seed
	// stays what it was before cohorts existed.
	rc := rand.New(rand.NewPCG(seed^0xc0402, mix(seed+7)))
	for i := range sc.Procs {
		p := &sc.Procs[i]
		if p.Legacy || rc.Float64() >= 0.35 {
			continue
		}
		p.Members = 2 + rc.IntN(3)
		p.Cohort = mutex.CohortBound{Passes: 1 + rc.IntN(4), Hold: []time.Duration{0, p.Lease / 2, 2 * p.Lease}[rc.IntN(3)],
			Yield: []time.Duration{0, p.Lease / 8}[rc.IntN(2)]}
	}
	// Priorities, from a stream of their own too.
	rp := rand.New(rand.NewPCG(seed^0x9e10, mix(seed+11)))
	for i := range sc.Procs {
		if p := &sc.Procs[i]; !p.Legacy && rp.Float64() < 0.3 {
			p.Priority = 1 + rp.IntN(mutex.MaxPriority)
		}
	}
	return sc
}

// drawProcs draws n csmutex processes: their leases (common, or each its own when mixed),
// HTTP timeouts, rounds, hold times and start times, all with the same fault rates; and the
// horizon their rounds span. Both scenario kinds draw them this way, in this order.
func drawProcs(r *rand.Rand, n int, common time.Duration, mixed bool, leases []time.Duration, rates FaultRates) ([]ProcSpec, time.Duration) {
	var (
		procs   []ProcSpec
		horizon time.Duration
	)
	for i := range n {
		lease := common
		if mixed {
			lease = leases[r.IntN(len(leases))]
		}
		p := ProcSpec{
			Name:        fmt.Sprintf("p%d", i+1),
			Lease:       lease,
			HTTPTimeout: []time.Duration{lease / 4, lease, 3 * lease}[r.IntN(3)],
			Rounds:      1 + r.IntN(4),
			Hold:        []time.Duration{lease / 10, lease / 2, 3 * lease / 2}[r.IntN(3)],
			Faults:      rates,
			StartAt:     time.Duration(r.Int64N(int64(lease))),
		}
		horizon = max(horizon, time.Duration(p.Rounds)*4*lease)
		procs = append(procs, p)
	}
	return procs, horizon
}

// World is one run: the server, the processes, the checker and the trace.
type World struct {
	seed    uint64
	sc      Scenario
	server  *Server
	check   *Checker
	over    chan struct{}
	ctx     context.Context // canceled when the run is over: crashed processes give up
	cancel  context.CancelFunc
	start   time.Time
	verbose bool

	mu     sync.Mutex
	lines  []string
	tokens map[string]string
	calls  map[string]int
	ended  bool
}

func (w *World) countCall(method string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls[method]++
}

// tokenRE finds owner tokens (16 hex digits) so that the trace can name them by order of
// appearance: the same seed then prints the same trace, although tokens are random.
var tokenRE = regexp.MustCompile(`\b[0-9a-f]{16}\b`)

func (w *World) trace(p *Process, format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return
	}
	line := fmt.Sprintf("%12s %-8s ", time.Since(w.start).Round(time.Microsecond), p.name) + fmt.Sprintf(format, args...)
	line = tokenRE.ReplaceAllStringFunc(line, func(t string) string {
		if n, ok := w.tokens[t]; ok {
			return n
		}
		n := fmt.Sprintf("tok%d", len(w.tokens)+1)
		w.tokens[t] = n
		return n
	})
	w.lines = append(w.lines, line)
}

// sent records a call as it leaves a process: the trace, and the checker's view of
// heartbeats.
func (w *World) sent(c *callState) {
	detail := ""
	switch {
	case len(c.attrs) > 0:
		detail = fmt.Sprintf(" %s owner=%q", strings.Join(c.aliases, ","), c.attrs[0].Value)
	case len(c.aliases) > 0:
		detail = " " + strings.Join(c.aliases, ",")
	case len(c.data) > 0:
		detail = " " + c.data[0].Key + "=" + c.data[0].Value
	}
	if c.gated > 0 {
		detail += fmt.Sprintf(" (after a pause of %s)", c.gated.Round(time.Millisecond))
	}
	w.trace(c.proc, "→ %s%s", c.method, detail)
	w.check.sent(c)
}

func (w *World) isOver() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ended
}

// traceLocked adds a line that belongs to no process (the checker's verdicts).
func (w *World) traceLocked(format string, args ...any) {
	w.trace(&Process{name: "check"}, format, args...)
}

// launch runs part(i) for each process in a goroutine of its own, after startAt(i); the
// channels close as the parts return.
func (w *World) launch(procs []*Process, startAt func(i int) time.Duration, part func(i int)) []chan struct{} {
	dones := make([]chan struct{}, len(procs))
	for i := range procs {
		dones[i] = make(chan struct{})
		go func() {
			defer close(dones[i])
			time.Sleep(startAt(i))
			part(i)
		}()
	}
	return dones
}

// await waits until every process has finished its part, or reached its crash time (a
// crashed process's goroutine may stay blocked until the world ends), and returns how many
// processes crash.
func await(procs []*Process, dones []chan struct{}) (crashes int) {
	for i, p := range procs {
		if p.crashAt.IsZero() {
			<-dones[i]
			continue
		}
		crashes++
		select {
		case <-dones[i]:
		case <-time.After(p.crashAt.Sub(time.Now())):
		}
	}
	return crashes
}

// end stops the world (calls still on their way are dropped, every process's context is
// canceled) and waits for every process's goroutine to return.
func (w *World) end(dones []chan struct{}) {
	w.mu.Lock()
	w.ended = true
	w.mu.Unlock()
	close(w.over)
	w.cancel()
	for _, d := range dones {
		<-d
	}
}
