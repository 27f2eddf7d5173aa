package mutex

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// CohortBound limits how long a cohort keeps the CloudShell lock while passing it among its
// own members (WithCohort). Whichever limit is reached first makes the next local Unlock
// release the lock in CloudShell, and the cohort then leaves it free for Yield before it
// tries again, so that waiters elsewhere (other hosts, legacy snippet drivers) get a turn.
type CohortBound struct {
	// Passes is how many local holders in a row may hold the lock under one CloudShell
	// acquisition (at least 1).
	Passes int
	// Hold is how long the cohort may keep the CloudShell lock in one acquisition (zero: no
	// time limit, only Passes).
	Hold time.Duration
	// Yield is how long the cohort leaves the lock free after releasing it for the bound
	// while members still wait.
	Yield time.Duration
}

// DefaultCohortBound passes the lock locally up to 64 times or for 60 s, then leaves it free
// for 5 s.
//
//   - Yield is the public snippet's longest sleep between tries: a legacy driver waiting for
//     the lock is certain to try during the window, so a cohort never starves one (the
//     snippet proceeds without the lock after 100 tries, at least 200 s).
//   - Hold leaves several such windows inside any legacy driver's 200 s of patience, and
//     bounds what a remote csmutex waiter can lose to a cohort to about one minute.
//   - Passes spreads one acquisition's 3 calls over many critical sections when they are
//     short; with Hold it caps how long the lock stays in one process.
//
// When the cohort had to wait for the lock, others are in line too: that acquisition keeps
// an eighth of the bound. The price is the lock standing idle for Yield once per bound when
// nobody else wants it: about 8% of the time for a cohort that is busy without pause.
var DefaultCohortBound = CohortBound{Passes: 64, Hold: 60 * time.Second, Yield: 5 * time.Second}

// WithCohort makes the Lock and TryLock calls on one Mutex value a cohort (Dice, Marathe and
// Shavit, "Lock Cohorting", PPoPP 2012): its members take the CloudShell lock once and pass
// it among themselves in FIFO order without calling CloudShell, up to bound; then it is
// released in CloudShell like any lock. Each member gets its own *Lock (its own Done, Err
// and Unlock); they all carry the cohort's owner record, and a lost CloudShell lock ends the
// member holding it. Exclusion among members is local (this process), exclusion with
// everyone else is the CloudShell lock's, held without a gap across local passes.
//
// Use one cohort Mutex per process and lock (the csmutex sidecar keeps one per lock for all
// its clients). Without this option every Lock call acquires in CloudShell on its own.
func WithCohort(bound CohortBound) Option { return func(c *config) { c.cohort = &bound } }

// cohort is the local side of a cohort Mutex. At most one member is busy at a time: the
// leader acquiring or releasing the CloudShell lock, or the member holding it.
type cohort struct {
	m     *Mutex
	bound CohortBound

	mu     sync.Mutex
	busy   bool
	global *Lock // the CloudShell lock while a member holds it
	taken  time.Time
	passes int
	limit  CohortBound  // this acquisition's bound: shorter when others are known to wait
	queue  []chan grant // FIFO; each buffered (1): a grant never blocks the granter
	yield  bool         // the lock was released for the bound: wait before retaking it
}

// grant hands a waiting member either the held CloudShell lock (pass) or the job of
// acquiring it (lead).
type grant struct{ pass *Lock }

func (c CohortBound) validate() error {
	switch {
	case c.Passes < 1:
		return fmt.Errorf("mutex: cohort bound: Passes must be at least 1, got %d", c.Passes)
	case c.Hold < 0:
		return fmt.Errorf("mutex: cohort bound: Hold must not be negative, got %s", c.Hold)
	case c.Yield < 0:
		return fmt.Errorf("mutex: cohort bound: Yield must not be negative, got %s", c.Yield)
	}
	return nil
}

// acquire is Lock/TryLock for a cohort Mutex.
func (c *cohort) acquire(parent context.Context, wait bool) (*Lock, error) {
	m := c.m
	start := m.cfg.clock.Now()
	c.mu.Lock()
	if !c.busy {
		c.busy = true
		yield := c.yield
		c.mu.Unlock()
		return c.lead(parent, wait, yield)
	}
	if !wait {
		holder := Owner{}
		if c.global != nil {
			holder = c.global.owner
		}
		c.mu.Unlock()
		return nil, &LockedError{Name: m.cfg.name, Holder: holder}
	}
	ch := make(chan grant, 1)
	c.queue = append(c.queue, ch)
	c.mu.Unlock()

	ctx, cancel := m.limit(parent)
	defer cancel()
	select {
	case g := <-ch:
		return c.granted(parent, g)
	case <-ctx.Done():
	}
	c.mu.Lock()
	for i, q := range c.queue {
		if q == ch {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			c.mu.Unlock()
			return nil, c.stopped(parent, start)
		}
	}
	c.mu.Unlock()
	// Granted while giving up: pass the grant on as if we had taken and released it.
	g := <-ch
	if g.pass != nil {
		c.next(context.WithoutCancel(parent), g.pass)
	} else {
		c.mu.Lock()
		c.lead1()
		c.mu.Unlock()
	}
	return nil, c.stopped(parent, start)
}

func (c *cohort) stopped(parent context.Context, start time.Time) error {
	holder := Owner{}
	c.mu.Lock()
	if c.global != nil {
		holder = c.global.owner
	}
	c.mu.Unlock()
	return c.m.stopped(parent, start, 0, holder, nil, nil)
}

// granted turns a grant into a held member lock.
func (c *cohort) granted(parent context.Context, g grant) (*Lock, error) {
	if g.pass == nil {
		c.mu.Lock()
		yield := c.yield
		c.mu.Unlock()
		return c.lead(parent, true, yield)
	}
	return c.member(g.pass), nil
}

// lead acquires the CloudShell lock for the cohort. After a release for the bound it first
// leaves the lock free for the bound's Yield: other parties' polls get their chance.
func (c *cohort) lead(parent context.Context, wait, yield bool) (*Lock, error) {
	m := c.m
	if yield && wait && c.bound.Yield > 0 {
		ctx, cancel := m.limit(parent)
		select {
		case <-m.cfg.clock.After(c.bound.Yield):
		case <-ctx.Done():
		}
		cancel()
	}
	l, err := m.acquire(parent, wait)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.yield = false
	if err != nil {
		c.lead1()
		return nil, err
	}
	c.global, c.taken, c.passes = l, m.cfg.clock.Now(), 1
	// If others were waiting for this lock (we had to wait, or recently did), keep it for an
	// eighth of the bound only: they are in line, and a whole bound would be their wait.
	c.limit = c.bound
	if m.expectContention() {
		c.limit.Passes, c.limit.Hold = max(1, c.bound.Passes/8), c.bound.Hold/8
	}
	return c.member(l), nil
}

// lead1 hands leadership to the first waiting member, or makes the cohort idle. c.mu held.
func (c *cohort) lead1() {
	if len(c.queue) == 0 {
		c.busy = false
		return
	}
	ch := c.queue[0]
	c.queue = c.queue[1:]
	ch <- grant{}
}

// member returns a member's own Lock on the cohort's CloudShell lock g: it ends when the
// member unlocks, or when g is lost.
func (c *cohort) member(g *Lock) *Lock {
	l := &Lock{m: c.m, owner: g.owner, start: c.m.cfg.clock.Now(), cohort: c, global: g,
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		select {
		case <-g.done:
			l.finish(g.Err())
		case <-l.done:
		}
	}()
	return l
}

// unlock ends member l's hold: the CloudShell lock goes to the next member, or is released.
func (c *cohort) unlock(ctx context.Context, l *Lock) error {
	g := l.global
	lost := g.Err()
	if lost == nil && g.owner.Lease > 0 && !c.m.cfg.clock.Now().Before(g.lossPoint()) {
		lost = fmt.Errorf("%w: the lease ran out before Unlock (no renewal succeeded for %s)", ErrLost, lossAfter(g.owner.Lease))
	}
	if lost != nil {
		l.finish(lost)
		c.next(ctx, g) // releases what is left of g, and lets the next member lead
		return fmt.Errorf("%w: %w", ErrNotHeld, lost)
	}
	l.finish(errReleased)
	return c.next(ctx, g)
}

// next gives the CloudShell lock g to the next waiting member if the bound allows, and
// otherwise releases it in CloudShell and lets the next member (if any) lead.
func (c *cohort) next(ctx context.Context, g *Lock) error {
	m := c.m
	c.mu.Lock()
	now := m.cfg.clock.Now()
	live := g.Err() == nil && (g.owner.Lease <= 0 || now.Before(g.lossPoint()))
	if len(c.queue) > 0 && live && c.passes < c.limit.Passes &&
		(c.limit.Hold <= 0 || now.Sub(c.taken) < c.limit.Hold) {
		ch := c.queue[0]
		c.queue = c.queue[1:]
		c.passes++
		c.mu.Unlock()
		ch <- grant{pass: g}
		return nil
	}
	bounded := len(c.queue) > 0
	c.global = nil
	c.mu.Unlock()

	var err error
	if g.Err() == nil {
		err = g.Unlock(ctx)
	} else {
		_ = g.Unlock(ctx) // stops renewals; it reports the loss the member already has
	}
	c.mu.Lock()
	c.yield = bounded
	c.lead1()
	c.mu.Unlock()
	if bounded && err == nil {
		m.cfg.log.Debug().Str("lock", m.cfg.name).Msg("cohort released the lock for its bound; other parties get a turn")
	}
	return err
}
