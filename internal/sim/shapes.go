package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
)

// ShapeKind is a lock shape of package locks, as the simulator exercises it.
type ShapeKind string

// The shapes simulated; a seed picks one.
const (
	KindSemaphore ShapeKind = "semaphore"
	KindRW        ShapeKind = "rw"
	KindSet       ShapeKind = "set"
	KindPool      ShapeKind = "pool"
	KindCounter   ShapeKind = "counter"
	KindAlloc     ShapeKind = "alloc"
)

// ShapeKinds lists every kind, in the order seeds cycle through them.
var ShapeKinds = []ShapeKind{KindSemaphore, KindRW, KindSet, KindPool, KindCounter, KindAlloc}

// deadlockBound is how many leases a set or pool may wait before its wait counts as a
// deadlock: far more than every other process's holds and crashes can explain.
const deadlockBound = 200

// Names the shape workloads use.
const (
	shapeName = "SHAPE"
	stateLock = mutex.DefaultName
	allocKey  = "vlan"
	countKey  = "n"
)

var (
	universe   = []string{"M1", "M2", "M3", "M4", "M5"}
	allocRange = locks.Range{Lo: 1, Hi: 64}
)

// ShapeScenario is one seed's run of a lock shape: the processes and their faults, as for
// the exclusive lock, plus the shape and its size.
//
// The faults stay inside what the exclusive protocol guarantees (docs/PROTOCOL.md, known
// limits): no pauses, no request delayed beyond the loss margin (legs are scaled to an
// eighth of the lease; no stalls, no 401 resends). TestSimulation covers the exclusive
// lock beyond those limits, with its excusals; here every overlap is a violation, so what
// is judged is the composition of exclusive locks into a shape. Drops after commit, failures
// before commit, 5xx, refused connections, HTTP timeouts, partitions and crashes remain.
type ShapeScenario struct {
	Scenario
	Kind ShapeKind
	// N is the semaphore's slots, the pool's k, or the shared/exclusive lock's readers.
	N int
}

// String summarises the scenario for a failure report.
func (sc ShapeScenario) String() string {
	return fmt.Sprintf("shape %s n=%d, %s", sc.Kind, sc.N, sc.Scenario)
}

// NewShapeScenario draws a shape scenario from seed.
func NewShapeScenario(seed uint64) ShapeScenario {
	r := rand.New(rand.NewPCG(seed, mix(seed)^0x5a9e))
	sc := ShapeScenario{Scenario: Scenario{Seed: seed}, Kind: ShapeKinds[seed%uint64(len(ShapeKinds))]}
	switch sc.Kind {
	case KindSemaphore:
		sc.N = 1 + r.IntN(3)
	case KindRW:
		sc.N = 1 + r.IntN(3)
	case KindPool:
		sc.N = 1 + r.IntN(3)
	}
	leases := []time.Duration{2 * time.Second, 3 * time.Second, 5 * time.Second, 8 * time.Second}
	common := leases[r.IntN(len(leases))]
	mixed := r.IntN(2) == 0
	level := func(hi float64) float64 { return []float64{0, hi / 4, hi}[r.IntN(3)] }
	rates := FaultRates{Slow: level(0.2), DropAfter: level(0.15), FailBefore: level(0.1), Refused: level(0.05), Err5xx: level(0.1)}
	n := 3 + r.IntN(4)
	procs, horizon := drawProcs(r, n, common, mixed, leases, rates)
	sc.Procs = append(sc.Procs, procs...)
	for i := range sc.Procs {
		p := &sc.Procs[i]
		at := func() time.Time { return epoch.Add(time.Duration(r.Int64N(int64(horizon)))) }
		if r.Float64() < 0.2 {
			from := at()
			p.Partitions = append(p.Partitions, window{from, from.Add(p.Lease/5 + time.Duration(r.Int64N(int64(2*p.Lease))))})
		}
		if r.Float64() < 0.15 {
			p.CrashAt = time.Duration(r.Int64N(int64(horizon)))
		}
	}
	if sc.Kind == KindRW && r.Float64() < 0.4 {
		l := sc.maxLease()
		sc.Procs = append(sc.Procs, ProcSpec{Name: "legacy1", Legacy: true, Lease: l, HTTPTimeout: 10 * l,
			Rounds: 1 + r.IntN(3), Hold: l / 4, Faults: FaultRates{Slow: rates.Slow / 2}, StartAt: time.Duration(r.Int64N(int64(l)))})
	}
	return sc
}

// ShapeResult is what a shape run found.
type ShapeResult struct {
	*Result
	Kind ShapeKind
	// Sections counts critical sections entered; Excused counts legacy writers that entered
	// over readers already in (a documented limit: the snippet does not look for readers).
	Sections, LegacyOverReaders int
}

// Report is a failing run's account: seed, scenario, violations and the whole trace.
func (r *ShapeResult) Report() string { return "shape " + string(r.Kind) + ": " + r.Result.Report() }

// RunShape plays one shape scenario to its end and judges it. It must run inside a
// testing/synctest bubble.
func RunShape(sc ShapeScenario) *ShapeResult {
	w := &World{seed: sc.Seed, sc: sc.Scenario, over: make(chan struct{}), start: time.Now(),
		tokens: map[string]string{}, calls: map[string]int{}}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.check = newChecker(w) // counts calls and faults; the exclusive lock's verdicts are TestSimulation's
	k := &shapeChecker{w: w, sc: sc, in: map[string]*shapeSection{}, allocated: map[int64]string{}, counted: map[int64]string{}, legacyAdded: map[string]time.Time{}}
	w.server = &Server{onApply: k.onApply}

	procs := make([]*Process, len(sc.Procs))
	for i, spec := range sc.Procs {
		// Delays are drawn at an eighth of the lease: inside the loss margin (see ShapeScenario).
		p := &Process{name: spec.Name, index: i, legacy: spec.Legacy, world: w, lease: spec.Lease / 8, httpTimeout: spec.HTTPTimeout,
			faults: spec.Faults, partitions: spec.Partitions}
		if spec.CrashAt > 0 {
			p.crashAt = w.start.Add(spec.CrashAt)
		}
		procs[i] = p
	}
	dones := w.launch(procs, func(i int) time.Duration { return sc.Procs[i].StartAt }, func(i int) {
		if spec := sc.Procs[i]; spec.Legacy {
			k.runLegacyWriter(procs[i], spec)
		} else {
			k.runShape(procs[i], spec)
		}
	})
	crashes := await(procs, dones)
	lease := sc.maxLease()
	time.Sleep(2*lease + time.Second) // let every request still on its way land
	res := &Result{Scenario: sc.Scenario}
	k.final(res, crashes)

	w.end(dones)
	time.Sleep(mutex.DefaultReleaseTimeout + 2*lease)
	k.mu.Lock()
	defer k.mu.Unlock()
	res.Violations = k.violations
	res.Stats = w.check.stats
	res.Stats.Sections = k.sections
	res.Trace = w.lines
	return &ShapeResult{Result: res, Kind: sc.Kind, Sections: k.sections, LegacyOverReaders: k.legacyOverReaders}
}

// shapeSection is a critical section in progress.
type shapeSection struct {
	id      string
	proc    *Process
	role    string // "holder", "reader", "writer", "legacy"
	members []string
}

// shapeChecker judges a shape run: occupancy as each section starts, and every state write
// as it lands.
type shapeChecker struct {
	w  *World
	sc ShapeScenario

	mu                sync.Mutex
	in                map[string]*shapeSection
	allocated         map[int64]string // value → the section that holds it (successful Allocate, no Free yet)
	counted           map[int64]string // counter value → the Add that returned it
	successes         int
	sections          int
	legacyOverReaders int
	legacyAdded       map[string]time.Time // legacy process → when its last add landed
	violations        []Violation
}

// lastReadAt is when the server served the newest details read the process has seen.
func (p *Process) lastReadAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastRead
}

func (k *shapeChecker) violate(format string, args ...any) {
	v := Violation{At: time.Since(k.w.start), Kind: string(k.sc.Kind), Detail: fmt.Sprintf(format, args...)}
	k.violations = append(k.violations, v)
	k.w.traceLocked("VIOLATION %s", v)
}

func (k *shapeChecker) options(p *Process, spec ProcSpec) []locks.Option {
	g := k.w.rngFor(p)
	return []locks.Option{locks.WithRetry(g.backoff(spec.Lease/20, spec.Lease/8)), locks.WithClock(p), locks.WithWaitLimit(0),
		locks.WithReaders(max(k.sc.N, 1)), locks.MutexOptions(mutex.WithLease(spec.Lease), mutex.WithOwner(p.name))}
}

func (k *shapeChecker) runShape(p *Process, spec ProcSpec) {
	g := k.w.rngFor(p)
	opts := k.options(p, spec)
	for round := range spec.Rounds {
		id := fmt.Sprintf("%s/%d", p.name, round+1)
		hold := g.between(0, spec.Hold)
		// Sets and pools wait long enough that only a deadlock (or a hoarding livelock) can
		// time them out: their timeouts are violations.
		limit := 30 * spec.Lease
		if k.sc.Kind == KindSet || k.sc.Kind == KindPool {
			limit = deadlockBound * spec.Lease
		}
		ctx, cancel := context.WithTimeout(k.w.ctx, limit)
		section := func(role string) func(context.Context, *locks.Hold) error {
			return func(ctx context.Context, h *locks.Hold) error { return k.section(ctx, p, id, role, h, hold) }
		}
		var err error
		switch k.sc.Kind {
		case KindSemaphore:
			err = locks.NewSemaphore(p, ReservationID, shapeName, k.sc.N, opts...).With(ctx, section("holder"))
		case KindRW:
			rw := locks.NewRWMutex(p, ReservationID, shapeName, opts...)
			if g.between(0, 3) == 0 {
				err = rw.WithExclusive(ctx, section("writer"))
			} else {
				err = rw.WithShared(ctx, section("reader"))
			}
		case KindSet:
			// Two or three names of the universe, listed in a random order.
			names := slices.Clone(universe)
			g.mu.Lock()
			g.r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
			g.mu.Unlock()
			names = names[:2+int(g.between(0, 2))]
			if round > 0 {
				names = names[:2]
			}
			err = locks.NewSet(p, ReservationID, names, opts...).With(ctx, section("holder"))
		case KindPool:
			err = locks.NewPool(p, ReservationID, universe, k.sc.N, opts...).With(ctx, section("holder"))
		case KindCounter:
			var v int64
			v, err = locks.NewState(p, ReservationID, stateLock, opts...).Add(ctx, countKey, 1)
			k.added(p, id, v, err)
		case KindAlloc:
			err = k.allocate(ctx, p, id, hold, opts)
		}
		cancel()
		k.w.trace(p, "%s: returned %v", id, err)
		if errors.Is(err, mutex.ErrTimeout) && limit == deadlockBound*spec.Lease && !k.w.isOver() {
			k.mu.Lock()
			k.violate("%s waited %d leases for its %s: deadlock or livelock: %v", id, deadlockBound, k.sc.Kind, err)
			k.mu.Unlock()
		}
		if errors.Is(err, errCrashed) || p.crashed(time.Now()) {
			return
		}
		<-p.After(g.between(0, spec.Lease/2))
	}
}

// section is a critical section: it is judged as it starts, then holds for a while or until
// its hold is lost.
func (k *shapeChecker) section(ctx context.Context, p *Process, id, role string, h *locks.Hold, hold time.Duration) error {
	info := h.Info()
	k.enter(p, id, role, info.Members, info)
	defer k.leave(id)
	select {
	case <-p.After(hold):
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// runLegacyWriter is the public snippet taking the shared/exclusive lock's plain name: a
// writer that does not look for readers.
func (k *shapeChecker) runLegacyWriter(p *Process, spec ProcSpec) {
	g := k.w.rngFor(p)
	ctx := context.Background()
	for round := range spec.Rounds {
		id := fmt.Sprintf("%s/%d", p.name, round+1)
		acquired := false
		for range 100 {
			if err := p.AddServiceToReservation(ctx, ReservationID, mutex.DefaultServiceModel, shapeName, nil); err == nil {
				acquired = true
				break
			}
			<-p.After(g.between(p.lease/4, p.lease))
		}
		if !acquired {
			continue
		}
		k.enter(p, id, "legacy", nil, locks.Info{})
		<-p.After(g.between(0, spec.Hold))
		k.leave(id)
		_ = p.RemoveServicesFromReservation(ctx, ReservationID, []string{shapeName})
		<-p.After(g.between(0, spec.Lease/2))
	}
}

// enter judges a section as it starts: every lock of its hold carries its record, and the
// shape's occupancy rule holds with the sections already in (of processes still alive: a
// crashed process does nothing more, and its locks are broken in due course).
func (k *shapeChecker) enter(p *Process, id, role string, members []string, info locks.Info) {
	type rec struct {
		raw string
		ok  bool
	}
	recs := make([]rec, len(info.Aliases))
	k.w.server.mu.Lock()
	for i, a := range info.Aliases {
		recs[i].raw, recs[i].ok = k.w.server.ownerLocked(a)
	}
	k.w.server.mu.Unlock()

	k.mu.Lock()
	defer k.mu.Unlock()
	k.sections++
	k.w.traceLocked("%s enters as %s holding %v", id, role, info.Aliases)
	for i, a := range info.Aliases {
		if !recs[i].ok || recordToken(recs[i].raw) != info.Owners[i].Token {
			k.violate("%s entered without its lock %s (record %q, held=%v)", id, a, recs[i].raw, recs[i].ok)
		}
	}
	if k.sc.Kind == KindSemaphore {
		members = []string{strconv.Itoa(info.Slot)}
	}
	now := time.Now()
	var others []*shapeSection
	for _, s := range k.in {
		if !s.proc.crashed(now) {
			others = append(others, s)
		}
	}
	slices.SortFunc(others, func(a, b *shapeSection) int { return strings.Compare(a.id, b.id) })
	switch k.sc.Kind {
	case KindSemaphore:
		if len(others)+1 > k.sc.N {
			k.violate("%s entered a semaphore of %d with %d others in: %v", id, k.sc.N, len(others), ids(others))
		}
		for _, o := range others {
			if slices.Equal(o.members, members) && len(members) > 0 {
				k.violate("%s and %s hold the same slot", id, o.id)
			}
		}
	case KindRW:
		for _, o := range others {
			switch {
			case role == "reader" && o.role == "reader":
			case role == "legacy" && o.role == "reader":
				// The snippet adds "<name>" and goes on; it cannot know about readers. A
				// documented limit, counted, not a violation.
				k.legacyOverReaders++
				k.w.traceLocked("legacy %s entered over reader %s (documented limit)", id, o.id)
			case role == "reader" && o.role == "legacy" && p.lastReadAt().Before(k.legacyAdded[o.proc.name]):
				// The same limit seen the other way: the reader's admitting read was served
				// before the legacy add landed; its answer merely arrived later.
				k.legacyOverReaders++
				k.w.traceLocked("legacy %s went in over reader %s, whose check preceded its add (documented limit)", o.id, id)
			default:
				k.violate("%s (%s) entered while %s (%s) was in", id, role, o.id, o.role)
			}
		}
	case KindSet, KindPool:
		if k.sc.Kind == KindPool && len(members) != k.sc.N {
			k.violate("%s got %d members %v, asked for %d", id, len(members), members, k.sc.N)
		}
		for _, o := range others {
			for _, m := range members {
				if slices.Contains(o.members, m) {
					k.violate("%s holds %s while %s does", id, m, o.id)
				}
			}
		}
	}
	k.in[id] = &shapeSection{id: id, proc: p, role: role, members: members}
}

func ids(ss []*shapeSection) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.id+"("+s.role+")")
	}
	return out
}

func (k *shapeChecker) leave(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.in, id)
	k.w.traceLocked("%s leaves", id)
}

// added records a counter Add's result: a value returned twice is a duplicated increment.
func (k *shapeChecker) added(p *Process, id string, v int64, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		return
	}
	k.successes++
	if other, ok := k.counted[v]; ok {
		k.violate("%s and %s both got counter value %d", id, other, v)
	}
	k.counted[v] = id
}

// allocate takes a value, holds it, and frees it; two holders of one value are a violation.
func (k *shapeChecker) allocate(ctx context.Context, p *Process, id string, hold time.Duration, opts []locks.Option) error {
	st := locks.NewState(p, ReservationID, stateLock, opts...)
	v, err := st.Allocate(ctx, allocKey, allocRange)
	if err != nil {
		return err
	}
	k.mu.Lock()
	if other, ok := k.allocated[v]; ok {
		k.violate("%s was allocated %d, which %s holds", id, v, other)
	}
	k.allocated[v] = id
	k.mu.Unlock()
	select {
	case <-p.After(hold):
	case <-ctx.Done():
	}
	// Forget the value before freeing it: once the Free is sent, it may land.
	k.mu.Lock()
	delete(k.allocated, v)
	k.mu.Unlock()
	return st.Free(ctx, allocKey, allocRange, v)
}

// onApply sees every write as it lands, before it changes anything: a state write must
// continue the chain of generations one step, and change the value by exactly one step.
func (k *shapeChecker) onApply(s *Server, m Mutation) {
	if m.Method == "AddServiceToReservation" && m.call.proc.legacy {
		k.mu.Lock()
		k.legacyAdded[m.Proc] = m.At
		k.mu.Unlock()
	}
	if m.Method != "SetSandboxData" {
		return
	}
	for _, kv := range m.Data {
		var key string
		switch kv.Key {
		case locks.StateKey(stateLock, countKey):
			key = countKey
		case locks.StateKey(stateLock, allocKey):
			key = allocKey
		default:
			continue
		}
		old, nw := parseState(s.valueLocked(kv.Key)), parseState(kv.Value)
		k.mu.Lock()
		switch {
		case nw.gen != old.gen+1:
			k.violate("%s wrote %s generation %d over generation %d: a lost or repeated update", m.Proc, key, nw.gen, old.gen)
		case key == countKey && nw.value != old.value+1:
			k.violate("%s wrote counter %d over %d", m.Proc, nw.value, old.value)
		case key == allocKey && !oneApart(old.used, nw.used):
			k.violate("%s wrote allocation %v over %v: not one value apart", m.Proc, nw.used, old.used)
		}
		k.mu.Unlock()
	}
}

type stateValue struct {
	gen   uint64
	value int64
	used  []int64
}

func parseState(raw string) stateValue {
	var v stateValue
	for _, f := range strings.Fields(raw) {
		key, val, _ := strings.Cut(f, "=")
		switch key {
		case "g":
			v.gen, _ = strconv.ParseUint(val, 10, 64)
		case "v":
			v.value, _ = strconv.ParseInt(val, 10, 64)
		case "used":
			for _, run := range strings.Split(val, ",") {
				lo, hi, isRun := strings.Cut(run, "-")
				a, err := strconv.ParseInt(lo, 10, 64)
				if err != nil {
					continue
				}
				b := a
				if isRun {
					b, _ = strconv.ParseInt(hi, 10, 64)
				}
				for x := a; x <= b; x++ {
					v.used = append(v.used, x)
				}
			}
		}
	}
	return v
}

// oneApart reports whether two sorted sets differ by exactly one element.
func oneApart(a, b []int64) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	if len(b) != len(a)+1 {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// final is the last process: fault-free, it must take the whole shape within a bound once
// everyone else has stopped (dead holders broken), and leave nothing behind.
func (k *shapeChecker) final(res *Result, crashes int) {
	w := k.w
	lease := k.sc.maxLease()
	p := &Process{name: "final", index: len(k.sc.Procs), world: w, lease: lease, httpTimeout: lease}
	spec := ProcSpec{Lease: lease}
	opts := k.options(p, spec)
	bound := time.Duration(len(universe)+crashes+4) * lease
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	var err error
	switch k.sc.Kind {
	case KindSemaphore:
		var held []*locks.Hold
		for range k.sc.N {
			h, herr := locks.NewSemaphore(p, ReservationID, shapeName, k.sc.N, opts...).Acquire(ctx)
			if herr != nil {
				err = herr
				break
			}
			held = append(held, h)
		}
		for _, h := range held {
			err = errors.Join(err, h.Release(ctx))
		}
	case KindRW:
		err = locks.NewRWMutex(p, ReservationID, shapeName, opts...).WithExclusive(ctx, func(context.Context, *locks.Hold) error { return nil })
	case KindSet:
		err = locks.NewSet(p, ReservationID, universe, opts...).With(ctx, func(context.Context, *locks.Hold) error { return nil })
	case KindPool:
		err = locks.NewPool(p, ReservationID, universe, len(universe), opts...).With(ctx, func(context.Context, *locks.Hold) error { return nil })
	case KindCounter:
		var v int64
		v, err = locks.NewState(p, ReservationID, stateLock, opts...).Add(ctx, countKey, 1)
		k.mu.Lock()
		if err == nil && int(v) < k.successes+1 {
			k.violate("the counter is %d after %d successful increments", v, k.successes+1)
		}
		k.mu.Unlock()
	case KindAlloc:
		_, err = locks.NewState(p, ReservationID, stateLock, opts...).Allocate(ctx, allocKey, allocRange)
	}
	res.Recovery = time.Since(start)
	time.Sleep(lease) // the last holder cleans up dead break locks in the background
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		k.violate("the final process did not get the %s within %s after everyone stopped: %v", k.sc.Kind, bound, err)
	}
	res.Leftover = w.server.Aliases()
	if len(res.Leftover) > 0 {
		k.violate("services left in the reservation after the final acquisition: %v", res.Leftover)
	}
}
