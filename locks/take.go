package locks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
)

// maxWatch bounds how many held candidates one waiter watches at once (one mutex.Lock each):
// each polls CloudShell, and a shared server must not pay for a hundred pollers per waiter.
const maxWatch = 16

// taker takes exclusive locks on a shape's aliases. It is the one place where shapes wait.
type taker struct {
	api   mutex.API
	resID string
	cfg   config
	shape Shape
	name  string // the shape's name for errors ("" for sets and pools: then the aliases)
}

func (t *taker) mutexFor(alias string) *mutex.Mutex {
	return mutex.New(t.api, t.resID, t.cfg.mutexOptions(alias)...)
}

// bound applies the shape's wait limit to ctx, unless ctx ends sooner.
func (t *taker) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if t.cfg.waitLimit <= 0 {
		return context.WithCancel(ctx)
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= t.cfg.waitLimit {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, t.cfg.waitLimit)
}

// read reads the reservation, bypassing CloudShell's 5 s details cache: a cached view would
// show slots as free that were taken seconds ago, or, worse, no writer where one is.
func (t *taker) read(ctx context.Context) (*cloudshell.ReservationDetails, error) {
	d, err := t.api.GetReservationDetails(ctx, t.resID, true)
	if err != nil {
		return nil, classify(ctx, fmt.Errorf("locks: %s %q: reading reservation %s: %w", t.shape, t.label(), t.resID, err), err)
	}
	return d, nil
}

func (t *taker) label() string { return t.name }

// sentinels maps a call's class to the mutex sentinel that errors.Is matches.
var sentinels = map[mutex.Class]error{
	mutex.ClassContended: mutex.ErrLocked, mutex.ClassUnavailable: mutex.ErrUnavailable,
	mutex.ClassAuth: mutex.ErrAuth, mutex.ClassInvalid: mutex.ErrInvalid,
}

// classified is a failed call of the shape's own (a read), in mutex's taxonomy.
type classified struct {
	sentinel error
	err      error
}

func (e *classified) Error() string   { return e.err.Error() }
func (e *classified) Unwrap() []error { return []error{e.sentinel, e.err} }

// classify gives err (described by msg) the class mutex would: the end of ctx is Canceled
// or Timeout, otherwise the class of the call (mutex.CallClass).
func classify(ctx context.Context, msg, err error) error {
	if mutex.ClassOf(err) != mutex.ClassOther {
		return msg
	}
	s := sentinels[mutex.CallClass(err)]
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		s = mutex.ErrCanceled
	case ctx.Err() != nil:
		s = mutex.ErrTimeout
	case s == nil:
		s = mutex.ErrUnavailable
	}
	return &classified{sentinel: s, err: msg}
}

// retryable reports whether a failure may pass while the wait goes on.
func retryable(err error) bool {
	c := mutex.ClassOf(err)
	return c == mutex.ClassUnavailable || c == mutex.ClassContended
}

// record is a lock service's owner record, verbatim.
func record(svc cloudshell.Service) string {
	raw, _ := svc.Attribute(mutex.OwnerAttribute)
	if raw == "" {
		return "a legacy holder (no owner recorded)"
	}
	return raw
}

// anyRequest is one acquisition of k of several candidate aliases.
type anyRequest struct {
	cands []string
	k     int
	wait  bool
	// blocked, if set, names a lock whose presence in a read forbids taking any candidate
	// (the writer's lock, for readers): the acquirer then waits for it to go.
	blocked func(d *cloudshell.ReservationDetails) (string, bool)
	// admit, if set, runs once k candidates are held: false releases them and waits. It must
	// read the reservation after the candidates were added (the readers' check).
	admit func(ctx context.Context) (bool, error)
}

// attemptResult is what one pass over the candidates learned.
type attemptResult struct {
	held     []*mutex.Lock
	aliases  []string
	occupied []string // candidates held by others
	holders  []string // their owner records
	blocker  string   // the blocking lock seen, if any
}

// takeAny takes k of the candidates, all or none, never waiting on one while holding
// another (so that two takers cannot deadlock): a pass reads the reservation once, TryLocks
// free candidates until it has k, and otherwise releases what it took. While too few are
// free it waits on the held ones with mutex.Lock, which breaks stale holders as the
// exclusive lock does; a lock so obtained is kept only if the next pass completes the k.
func (t *taker) takeAny(ctx context.Context, req anyRequest) (*attemptResult, error) {
	start := t.cfg.clock.Now()
	bctx, cancel := t.bound(ctx)
	defer cancel()
	backoff := t.cfg.retry()
	var (
		last    error
		have    []*mutex.Lock
		haveA   []string
		holders []string
	)
	for tries := 1; ; tries++ {
		res, err := t.attempt(bctx, req, have, haveA)
		have, haveA = nil, nil
		if err == nil && res.blocker == "" && len(res.held) == req.k {
			ok, aerr := true, lostAny(res.held, res.aliases)
			if aerr == nil && req.admit != nil {
				ok, aerr = req.admit(bctx)
			}
			if aerr == nil && ok {
				return res, nil
			}
			_ = releaseAll(ctx, res.held)
			err = aerr
			if err == nil {
				res.blocker = t.name // admit saw the blocking lock after our add
			}
		}
		if res != nil && len(res.holders) > 0 {
			holders = res.holders
		}
		if err != nil {
			if !retryable(err) || bctx.Err() != nil {
				return nil, t.stopped(ctx, bctx, start, tries, err, last)
			}
			last = err
		}
		if !req.wait {
			if err != nil {
				return nil, err
			}
			return nil, &BusyError{Shape: string(t.shape), Name: t.label(), Holders: holders}
		}
		// Wait for what is in the way, with mutex.Lock so that a dead holder is broken.
		var watch []string
		switch {
		case err != nil:
		case res.blocker != "":
			watch = []string{res.blocker}
		case len(res.occupied) > 0 && len(res.held) < req.k:
			watch = res.occupied
		}
		if len(watch) > 0 {
			l, alias, werr := t.watch(bctx, watch)
			switch {
			case werr != nil && (!retryable(werr) || bctx.Err() != nil):
				return nil, t.stopped(ctx, bctx, start, tries, werr, last)
			case werr != nil:
				last = werr
			case res.blocker != "":
				// Only waited for the blocker to go: it is not ours to keep.
				_ = l.Unlock(context.WithoutCancel(ctx))
				continue
			default:
				have, haveA = []*mutex.Lock{l}, []string{alias}
				continue
			}
		}
		next, stop := backoff.Next()
		if stop {
			return nil, t.timeout(ctx, start, tries, last)
		}
		select {
		case <-t.cfg.clock.After(next):
		case <-bctx.Done():
			return nil, t.stopped(ctx, bctx, start, tries, nil, last)
		}
	}
}

// attempt is one pass: read, then TryLock free candidates until k are held (counting have).
// It returns with k locks held, or none.
func (t *taker) attempt(ctx context.Context, req anyRequest, have []*mutex.Lock, haveA []string) (*attemptResult, error) {
	res := &attemptResult{held: have, aliases: haveA}
	fail := func(err error) (*attemptResult, error) {
		_ = releaseAll(ctx, res.held)
		res.held, res.aliases = nil, nil
		return res, err
	}
	d, err := t.read(ctx)
	if err != nil {
		return fail(err)
	}
	if req.blocked != nil {
		if b, ok := req.blocked(d); ok {
			res.blocker = b
			if svc, ok := d.Service(b); ok {
				res.holders = []string{record(svc)}
			}
			return fail(nil)
		}
	}
	mine := map[string]bool{}
	for _, a := range haveA {
		mine[a] = true
	}
	var free []string
	for _, a := range req.cands {
		if mine[a] {
			continue
		}
		if svc, ok := d.Service(a); ok {
			res.occupied = append(res.occupied, a)
			res.holders = append(res.holders, record(svc))
		} else {
			free = append(free, a)
		}
	}
	for _, a := range free {
		if len(res.held) == req.k {
			break
		}
		l, err := t.mutexFor(a).TryLock(ctx)
		var le *mutex.LockedError
		switch {
		case err == nil:
			res.held = append(res.held, l)
			res.aliases = append(res.aliases, a)
		case errors.As(err, &le):
			res.occupied = append(res.occupied, a)
			res.holders = append(res.holders, le.Holder.String())
		default:
			return fail(err)
		}
	}
	if len(res.held) < req.k {
		return fail(nil)
	}
	return res, nil
}

// watch waits with mutex.Lock on each alias (at most maxWatch) at once and returns the first
// lock obtained; any other obtained meanwhile is released.
func (t *taker) watch(ctx context.Context, aliases []string) (*mutex.Lock, string, error) {
	aliases = aliases[:min(len(aliases), maxWatch)]
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		l     *mutex.Lock
		alias string
		err   error
	}
	ch := make(chan result, len(aliases))
	for i, a := range aliases {
		go func() {
			// Staggered a millisecond apart: the waiters' first adds do not hit the server
			// in one burst, and their order does not depend on the scheduler.
			select {
			case <-t.cfg.clock.After(time.Duration(i) * time.Millisecond):
			case <-wctx.Done():
			}
			l, err := t.mutexFor(a).Lock(wctx)
			ch <- result{l, a, err}
		}()
	}
	var (
		got      *result
		firstErr error
	)
	for range aliases {
		r := <-ch
		switch {
		case r.err == nil && got == nil:
			got = &r
			cancel()
		case r.err == nil:
			_ = r.l.Unlock(context.WithoutCancel(ctx))
		case got == nil && mutex.IsPermanent(r.err):
			// A permanent failure (an ended reservation) ends the wait for every alias.
			if firstErr == nil || !mutex.IsPermanent(firstErr) {
				firstErr = r.err
			}
			cancel()
		case got == nil && firstErr == nil:
			firstErr = r.err
		}
	}
	if got != nil {
		return got.l, got.alias, nil
	}
	return nil, "", firstErr
}

// stopped is the error of a wait that ended without the shape: the caller's cancellation,
// a timeout (the caller's deadline or the wait limit), or a permanent failure.
func (t *taker) stopped(parent, bctx context.Context, start time.Time, tries int, err, last error) error {
	switch {
	case parent.Err() != nil && !errors.Is(parent.Err(), context.DeadlineExceeded):
		return fmt.Errorf("locks: %s %q: %w", t.shape, t.label(), classify(parent, context.Cause(parent), context.Cause(parent)))
	case bctx.Err() != nil:
		var te *mutex.TimeoutError
		if errors.As(err, &te) {
			// A lock waited on timed out at the shape's bound: say whose deadline it was, and
			// how long the shape waited; the lock's name and holder say what was in the way.
			c := *te
			c.Waited = t.cfg.clock.Now().Sub(start)
			c.Deadline = errors.Is(parent.Err(), context.DeadlineExceeded)
			return fmt.Errorf("locks: %s %q: %w", t.shape, t.label(), &c)
		}
		if err != nil && retryable(err) {
			last = err
		}
		return t.timeout(parent, start, tries, last)
	}
	return err
}

func (t *taker) timeout(parent context.Context, start time.Time, tries int, last error) error {
	return fmt.Errorf("locks: %s %q: %w", t.shape, t.label(), &mutex.TimeoutError{
		Name: t.label(), Waited: t.cfg.clock.Now().Sub(start), Tries: tries, Last: last,
		Unavailable: last != nil && mutex.ClassOf(last) == mutex.ClassUnavailable,
		Deadline:    errors.Is(parent.Err(), context.DeadlineExceeded),
	})
}

// lostAny returns the loss of any of held (taken with aliases), nil if all are held. A lock
// is checked when it is handed over, not only through Done: a lock handed over late may
// already be past its loss point, and no section may start on it.
func lostAny(held []*mutex.Lock, aliases []string) error {
	for i, l := range held {
		if err := l.Err(); err != nil {
			return &classified{sentinel: mutex.ErrUnavailable, err: fmt.Errorf("lock %q was lost as it was taken: %w", aliases[i], err)}
		}
	}
	return nil
}
