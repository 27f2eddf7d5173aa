package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
	"github.com/sethvargo/go-retry"
)

// Result is what a run found.
type Result struct {
	Scenario   Scenario
	Violations []Violation
	Excused    []Violation
	Stats      Stats
	Trace      []string
	// Leftover lists the services still in the reservation at the end.
	Leftover []string
	// Recovery is how long the final acquisition waited.
	Recovery time.Duration
}

// Failed reports whether the run broke a property.
func (r *Result) Failed() bool { return len(r.Violations) > 0 }

// Report is a failing run's account: seed, scenario, violations and the whole trace.
func (r *Result) Report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\nviolations:\n", r.Scenario)
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "  %s\n", v)
	}
	fmt.Fprintf(&b, "idle while waiting: %s in %d spans, longest %s, longest unexcused %s (bound %s)\n",
		r.Stats.IdleWaiting.Round(time.Millisecond), r.Stats.IdleSpans, r.Stats.IdleLongest.Round(time.Millisecond),
		r.Stats.IdleUnexcused.Round(time.Millisecond), r.Stats.IdleBound.Round(time.Millisecond))
	fmt.Fprintf(&b, "stats: %+v\ntrace:\n", r.Stats)
	for _, l := range r.Trace {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// Option adjusts every csmutex process's mutex options (tests: extra options).
type Option func(*runConfig)

type runConfig struct{ extra []mutex.Option }

// WithMutexOptions adds options to every csmutex process's mutex.
func WithMutexOptions(opts ...mutex.Option) Option {
	return func(c *runConfig) { c.extra = append(c.extra, opts...) }
}

// Run plays one scenario to its end and judges it. It must run inside a testing/synctest
// bubble: every wait in it is virtual.
func Run(sc Scenario, opts ...Option) *Result {
	var cfg runConfig
	for _, o := range opts {
		o(&cfg)
	}
	w := &World{seed: sc.Seed, sc: sc, over: make(chan struct{}), start: time.Now(),
		tokens: map[string]string{}, calls: map[string]int{}}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.check = newChecker(w)
	w.check.watchIdle()
	w.server = &Server{onApply: w.check.onApply}

	procs := make([]*Process, len(sc.Procs))
	for i, spec := range sc.Procs {
		p := &Process{name: spec.Name, index: i, legacy: spec.Legacy, world: w, lease: spec.Lease, httpTimeout: spec.HTTPTimeout,
			faults: spec.Faults, pauses: spec.Pauses, partitions: spec.Partitions}
		if spec.CrashAt > 0 {
			p.crashAt = w.start.Add(spec.CrashAt)
		}
		procs[i] = p
	}
	dones := w.launch(procs, func(i int) time.Duration { return sc.Procs[i].StartAt }, func(i int) {
		if spec := sc.Procs[i]; spec.Legacy {
			w.runLegacy(procs[i], spec)
		} else {
			w.runCsmutex(procs[i], spec, cfg.extra)
		}
	})
	crashes := await(procs, dones)
	// Let every request still on its way land: a leg takes at most two leases.
	time.Sleep(4*sc.maxLease() + time.Second)
	// Every party has stopped waiting: the idle spans of the run are all known.
	w.check.judgeIdle(time.Now())

	res := &Result{Scenario: sc}
	w.finalAcquire(res, crashes)

	w.end(dones)
	// Goroutines the mutex leaves running on their own (a renewal in flight at release, the
	// background cleanup of dead break locks) are bounded by the lease and the release
	// timeout: let them end inside the bubble.
	time.Sleep(mutex.DefaultReleaseTimeout + 2*sc.maxLease())
	w.check.mu.Lock()
	defer w.check.mu.Unlock()
	res.Violations = w.check.violations
	res.Excused = w.check.excused
	res.Stats = w.check.stats
	res.Trace = w.lines
	return res
}

// finalAcquire is the last process: it behaves, meets no faults, and must get the lock
// within a bound once everyone else has stopped (a lease per crashed process that may have
// left a lock or break lock behind, one for observation, two for unwinding the break locks
// that failed breakers left and for slack), and leave the
// reservation clean.
func (w *World) finalAcquire(res *Result, crashes int) {
	lease := w.sc.maxLease()
	p := &Process{name: "final", index: len(w.sc.Procs), world: w, lease: lease, httpTimeout: lease}
	bound := time.Duration(crashes+3) * lease
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	err := mutex.With(ctx, p, ReservationID, func(context.Context) error { return nil },
		mutex.WithLease(lease), mutex.WithRetry(w.rngFor(p).backoff(lease/20, lease/8)), mutex.WithClock(p),
		mutex.WithOwner(p.name), mutex.WithWaitLimit(0))
	res.Recovery = time.Since(start)
	time.Sleep(lease) // the new holder cleans up dead break locks in the background
	if err != nil {
		w.check.mu.Lock()
		w.check.violate(time.Now(), "liveness", fmt.Sprintf("the final process did not get the lock within %s after everyone stopped: %v", bound, err))
		w.check.mu.Unlock()
	}
	// The waiting room is bounded whatever happened: at most 64 keys per lock name.
	keys := 0
	for _, kv := range w.server.getData() {
		if strings.HasPrefix(kv.Key, "csmutex.queue.") {
			keys++
			if kv.Value != "" {
				w.check.mu.Lock()
				w.check.stats.RoomLeft++
				w.check.mu.Unlock()
			}
		}
	}
	if keys > 64 {
		w.check.mu.Lock()
		w.check.violate(time.Now(), "room", fmt.Sprintf("%d waiting-room keys in sandbox data, more than the bound of 64", keys))
		w.check.mu.Unlock()
	}
	res.Leftover = w.server.Aliases()
	if len(res.Leftover) > 0 {
		w.check.mu.Lock()
		w.check.violate(time.Now(), "leftover", fmt.Sprintf("services left in the reservation after the final acquisition: %v", res.Leftover))
		w.check.mu.Unlock()
	}
}

// rng is a process's own random stream (retry jitter, hold and think times): seeded, and
// used by one goroutine at a time, but locked because the mutex calls the backoff from
// whichever goroutine runs Lock.
type rng struct {
	mu sync.Mutex
	r  *rand.Rand
}

func (w *World) rngFor(p *Process) *rng {
	return &rng{r: rand.New(rand.NewPCG(w.seed^0x5eed, mix(uint64(p.index)+101)))}
}

func (g *rng) between(lo, hi time.Duration) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(g.r.Int64N(int64(hi-lo)))
}

// backoff is the retry strategy of a simulated process: the default's shape (uniform
// jitter), drawn from the seed.
func (g *rng) backoff(lo, hi time.Duration) func() retry.Backoff {
	return func() retry.Backoff {
		return retry.BackoffFunc(func() (time.Duration, bool) { return g.between(lo, hi), false })
	}
}

func (w *World) runCsmutex(p *Process, spec ProcSpec, extra []mutex.Option) {
	g := w.rngFor(p)
	opts := append([]mutex.Option{
		mutex.WithLease(p.lease), mutex.WithRetry(g.backoff(p.lease/20, p.lease/8)), mutex.WithClock(p),
		mutex.WithOwner(p.name), mutex.WithWaitLimit(0), mutex.WithPriority(spec.Priority),
	}, extra...)
	if spec.Members > 1 {
		w.runCohort(p, spec, opts)
		return
	}
	w.runRounds(p, spec, p.name, g, func(ctx context.Context, fn func(context.Context) error) error {
		return mutex.With(ctx, p, ReservationID, fn, opts...)
	})
}

// runCohort runs the members of a cohort process: goroutines sharing one Mutex, each with
// its own random stream so that their draws do not depend on scheduling.
func (w *World) runCohort(p *Process, spec ProcSpec, opts []mutex.Option) {
	m := mutex.New(p, ReservationID, append(opts, mutex.WithCohort(spec.Cohort))...)
	var wg sync.WaitGroup
	for i := range spec.Members {
		g := &rng{r: rand.New(rand.NewPCG(w.seed^0xc0402, mix(uint64(p.index)*64+uint64(i)+1)))}
		wg.Go(func() {
			<-p.After(g.between(0, p.lease/4))
			w.runRounds(p, spec, fmt.Sprintf("%s.m%d", p.name, i+1), g, m.With)
		})
	}
	wg.Wait()
}

// runRounds runs one party's critical sections through with (mutex.With, or a cohort
// member's Mutex.With).
func (w *World) runRounds(p *Process, spec ProcSpec, name string, g *rng, with func(context.Context, func(context.Context) error) error) {
	for round := range spec.Rounds {
		id := fmt.Sprintf("%s/%d", name, round+1)
		hold := g.between(0, spec.Hold)
		ctx, cancel := context.WithTimeout(w.ctx, time.Duration(30*max(1, spec.Members))*p.lease)
		runs := 0
		var fnErr error
		w.check.waitStart(p, name)
		err := with(ctx, func(ctx context.Context) error {
			w.check.waitEnd(name)
			runs++
			fnErr = w.criticalSection(ctx, p, id, hold, false)
			return fnErr
		})
		cancel()
		w.check.waitEnd(name)
		w.trace(p, "%s: With returned %v", id, err)
		w.check.withDone(p, id, runs, fnErr, err)
		if errors.Is(err, errCrashed) || p.crashed(time.Now()) {
			return
		}
		<-p.After(g.between(0, p.lease/2))
	}
}

// runLegacy plays the public snippet (generation B): add MUTEX without an owner until it
// succeeds, with 2–5 s sleeps scaled to the lease, work, then remove MUTEX. It never
// proceeds without the lock: that flaw of the snippet is not what this simulator judges.
func (w *World) runLegacy(p *Process, spec ProcSpec) {
	g := w.rngFor(p)
	ctx := context.Background()
	for round := range spec.Rounds {
		id := fmt.Sprintf("%s/%d", p.name, round+1)
		acquired := false
		for tries := 0; tries < 100; tries++ {
			if err := p.AddServiceToReservation(ctx, ReservationID, mutex.DefaultServiceModel, mutex.DefaultName, nil); err == nil {
				acquired = true
				break
			}
			<-p.After(g.between(p.lease/30, p.lease/12))
		}
		if !acquired {
			w.check.mu.Lock()
			w.check.stats.LegacyGaveUp++
			w.check.mu.Unlock()
			continue
		}
		_ = w.criticalSection(ctx, p, id, g.between(0, spec.Hold), true)
		_ = p.RemoveServicesFromReservation(ctx, ReservationID, []string{mutex.DefaultName})
		<-p.After(g.between(0, p.lease/2))
	}
}

// criticalSection read-modify-writes the counter once or twice, as a careful driver does:
// it checks its context before every write.
func (w *World) criticalSection(ctx context.Context, p *Process, id string, hold time.Duration, legacy bool) error {
	token := ""
	if l, ok := mutex.HeldLock(ctx); ok {
		token = l.Owner().Token
	}
	w.check.csStart(p, id, legacy, token)
	// Every wait below ends when ctx does, so the section returns at the instant its lock is
	// declared lost; reporting it here, in this goroutine, keeps the trace's order fixed.
	defer func() {
		if errors.Is(context.Cause(ctx), mutex.ErrLost) {
			w.trace(p, "%s: told the lock was lost: %v", id, context.Cause(ctx))
			w.check.lost(p, id)
		}
	}()
	writes := 1 + int(hold%2)
	for range writes {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		data, err := p.GetSandboxData(ctx, ReservationID)
		if err != nil {
			return err
		}
		cur := 0
		for _, kv := range data {
			if kv.Key == counterKey {
				cur, _, _ = parseCounter(kv.Value)
			}
		}
		select {
		case <-p.After(hold / time.Duration(writes)):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		value := fmt.Sprintf("n=%d prev=%d cs=%s", cur+1, cur, id)
		if err := p.SetSandboxData(ctx, ReservationID, []cloudshell.SandboxDataKeyValue{{Key: counterKey, Value: value}}); err != nil {
			return err
		}
	}
	w.check.csEnd(p, id)
	return nil
}
