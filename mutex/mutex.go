package mutex

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
)

// Mutex is a lock on one CloudShell reservation, shared by every party that uses the same
// lock name in it: Go drivers, the csmutex command and sidecar, and Python drivers that use
// the public Reservation-Mutex-Lock snippet.
//
// The lock is a service with the lock's name as its alias: CloudShell refuses a second
// service with the same alias, so adding it succeeds for exactly one party. Its
// "Mutex Owner" attribute records who added it, written once, atomically with the add.
// docs/PROTOCOL.md describes the whole protocol, leases included.
//
// A Mutex is safe for concurrent use; each Lock or TryLock is a separate acquisition with
// its own owner token, so two goroutines never share ownership.
type Mutex struct {
	api    API
	resID  string
	cfg    config
	err    error
	cohort *cohort // WithCohort
}

// New returns a Mutex for the reservation. Configuration errors are reported by Lock and
// TryLock (class Invalid).
func New(api API, reservationID string, opts ...Option) *Mutex {
	m := &Mutex{api: api, resID: reservationID, cfg: defaultConfig()}
	for _, o := range opts {
		o(&m.cfg)
	}
	switch {
	case api == nil:
		m.err = errors.New("mutex: api must not be nil")
	case reservationID == "":
		m.err = errors.New("mutex: reservation id must not be empty")
	default:
		m.err = m.cfg.validate()
	}
	if m.err != nil {
		m.err = &classError{sentinel: ErrInvalid, err: m.err}
	}
	if m.cfg.cohort != nil {
		m.cohort = &cohort{m: m, bound: *m.cfg.cohort}
	}
	return m
}

// Name returns the lock name (the alias of the lock service).
func (m *Mutex) Name() string { return m.cfg.name }

// Lock acquires the lock, waiting while someone else holds it or CloudShell is failing,
// until ctx is done or the wait limit passes (a *TimeoutError naming the holder). It never
// returns without the lock and without an error. Permanent failures return at once.
func (m *Mutex) Lock(ctx context.Context) (*Lock, error) { return m.lock(ctx, true) }

// TryLock makes one attempt. If someone else holds the lock it returns a *LockedError
// (errors.Is(err, ErrLocked)) naming the holder. It never breaks a stale lock: staleness
// can only be judged by watching a holder over a lease.
//
// In a cohort (WithCohort), TryLock fails at once while another member holds the lock.
func (m *Mutex) TryLock(ctx context.Context) (*Lock, error) { return m.lock(ctx, false) }

func (m *Mutex) lock(ctx context.Context, wait bool) (*Lock, error) {
	if m.err == nil && m.cohort != nil {
		return m.cohort.acquire(ctx, wait)
	}
	return m.acquire(ctx, wait)
}

// maxImmediateRetries bounds back-to-back attempts without waiting. Retrying at once when the
// lock was just freed wins races against polling waiters, but a lock that keeps vanishing and
// reappearing (a legacy driver adding and removing in a loop) must not turn a waiter into a
// busy loop against the shared server.
const maxImmediateRetries = 2

// outcome is what one attempt learned.
type outcome struct {
	lock     *Lock
	holder   Owner // who holds it, when we learned that
	retryNow bool  // the lock was just freed (or broken): try again without waiting
}

func (m *Mutex) acquire(parent context.Context, wait bool) (*Lock, error) {
	if m.err != nil {
		return nil, m.err
	}
	start := m.cfg.clock.Now()
	ctx, cancel := m.limit(parent)
	defer cancel()

	backoff := m.cfg.retry()
	w := newWaiter(m)
	prog := m.newProgress(start)
	var q *room
	if wait {
		q = m.newRoom()
	}
	defer func() { q.leave(ctx) }() // however the wait ends (a holder has left already: q is nil)
	q.queueFirst(ctx)
	var (
		holder, announced Owner
		last              error
		immediate         int
	)
	for tries := 1; ; tries++ {
		out, err := m.try(ctx, w, q, wait)
		if out.lock != nil {
			if tries > 1 || q.position() > 0 {
				m.sawContention()
			}
			// Off the critical path, and waited for by Unlock: the next waiter's turn, and a
			// slow Output window must not eat the lease.
			bg := context.WithoutCancel(ctx)
			room := q
			out.lock.background.Go(func() { room.leave(bg) })
			q = nil
			out.lock.background.Go(func() { prog.acquired(bg) })
			m.cfg.log.Info().Str("lock", m.cfg.name).Str("reservation", m.resID).Str("owner", out.lock.owner.String()).
				Int("tries", tries).Dur("waited_ms", m.cfg.clock.Now().Sub(start)).Msg("lock acquired")
			return out.lock, nil
		}
		if ctx.Err() != nil {
			return nil, m.stopped(parent, start, tries, holder, err, last)
		}
		if err != nil {
			if !retryable(err) {
				return nil, err
			}
			last = err
			m.cfg.log.Debug().Str("lock", m.cfg.name).Err(err).Msg("attempt failed; will retry")
		} else {
			last = nil
		}
		if !out.holder.IsZero() {
			holder = out.holder
			q.join(ctx) // held by someone else: take a ticket
		}
		if !wait {
			if err != nil {
				return nil, err
			}
			return nil, &LockedError{Name: m.cfg.name, Holder: holder}
		}
		q.refresh(ctx)
		prog.waiting(ctx, holder, tries, q.position(), err)
		if holder != announced && !holder.IsZero() {
			announced = holder
			m.cfg.log.Info().Str("lock", m.cfg.name).Str("reservation", m.resID).Str("holder", holder.String()).Msg("waiting for lock")
		}
		if out.retryNow && immediate < maxImmediateRetries && !q.behind() {
			immediate++
			continue
		}
		immediate = 0
		next, stop := backoff.Next()
		if stop {
			return nil, m.timeout(parent, start, tries, holder, last)
		}
		if q != nil {
			next = q.interval(next)
		}
		select {
		case <-m.cfg.clock.After(next):
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			return nil, m.stopped(parent, start, tries, holder, nil, last)
		}
	}
}

// try is one turn of a waiter. A waiter behind others in the waiting room never adds while
// the room works: it reads the room (and tries the lock at once if that made it the head),
// and once per its holder's staleness period looks at the holder instead (a read; a stale
// holder is broken by whoever sees it first, not only by the head). A room that cannot be
// read, or seems stuck (stuck), means trying the lock: the room is never what a wait
// depends on. Anyone else tries the lock.
func (m *Mutex) try(ctx context.Context, w *waiter, q *room, wait bool) (outcome, error) {
	q.confirmHead(ctx)
	if q.behind() {
		if w.readDue() && q.stuck() {
			return m.attempt(ctx, w, wait)
		}
		if w.readDue() {
			out, err := w.contended(ctx, wait)
			if err != nil || !out.retryNow {
				return out, err
			}
			// The lock is free (or was just broken): it is ours to take if we now head the room.
		}
		if err := q.read(ctx); err == nil && q.behind() {
			return outcome{holder: w.lastHolder}, nil
		}
	}
	return m.attempt(ctx, w, wait)
}

// stopped is the error for a wait that ctx ended: the caller's cancellation, or a timeout
// (the caller's deadline or the wait limit).
func (m *Mutex) stopped(parent context.Context, start time.Time, tries int, holder Owner, err, last error) error {
	if err != nil && ClassOf(err) == ClassUnavailable {
		last = err
	}
	if parent.Err() != nil && !errors.Is(parent.Err(), context.DeadlineExceeded) {
		return &classError{sentinel: ErrCanceled, err: fmt.Errorf("mutex: waiting for lock %q: %w", m.cfg.name, context.Cause(parent))}
	}
	return m.timeout(parent, start, tries, holder, last)
}

// limit applies the wait limit unless ctx already ends sooner.
func (m *Mutex) limit(ctx context.Context) (context.Context, context.CancelFunc) {
	if m.cfg.waitLimit <= 0 {
		return context.WithCancel(ctx)
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= m.cfg.waitLimit {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, m.cfg.waitLimit)
}

func (m *Mutex) timeout(parent context.Context, start time.Time, tries int, holder Owner, last error) error {
	return &TimeoutError{
		Name: m.cfg.name, Holder: holder, Waited: m.cfg.clock.Now().Sub(start), Tries: tries, Last: last,
		Unavailable: holder.IsZero() && last != nil,
		Deadline:    errors.Is(parent.Err(), context.DeadlineExceeded),
	}
}

// attempt adds the lock service once and interprets the answer.
func (m *Mutex) attempt(ctx context.Context, w *waiter, wait bool) (outcome, error) {
	me := m.newOwner()
	sent := m.cfg.clock.Now()
	err := m.api.AddServiceToReservation(ctx, m.resID, m.cfg.model, m.cfg.name,
		[]cloudshell.AttributeNameValue{{Name: OwnerAttribute, Value: me.record()}})
	switch {
	case err == nil && m.modelVerified():
		return m.handOver(w, me, sent), nil // the add alone is the lock
	case err == nil:
		return m.confirm(ctx, w, me, sent)
	case cloudshell.IsAliasCollision(err):
		return w.contended(ctx, wait)
	case errors.Is(err, cloudshell.ErrAmbiguous), ctx.Err() != nil:
		// The add may have been applied. Remember the token: if the lock shows up with it
		// later, it is ours (nobody else ever writes our token).
		w.pending[me.Token] = sent
		return m.resolveAdd(ctx, w, me, err)
	default:
		return outcome{}, m.addFailure(ctx, err)
	}
}

// ownerName is the name recorded as the owner: WithOwner's, else host:pid.
func (m *Mutex) ownerName() string {
	if m.cfg.ownerName != "" {
		return m.cfg.ownerName
	}
	return fmt.Sprintf("%s:%d", m.cfg.host, m.cfg.pid)
}

func (m *Mutex) newOwner() Owner {
	return Owner{Name: m.ownerName(), Host: m.cfg.host, PID: m.cfg.pid, Token: newToken(), Lease: m.cfg.lease,
		Since: m.cfg.clock.Now().UTC().Truncate(time.Millisecond)}
}

// confirm reads the lock back after a successful add. The add alone is the lock (CloudShell
// refuses duplicate aliases), but the read catches a server that dropped the owner
// attribute, and a legacy driver that removed our service in between (the public snippet
// releases even locks it never acquired). disableCache matters: a cached view up to 5 s
// old would show the previous holder. The same read shows break locks left behind by
// breakers that failed or died, which are cleaned up here.
func (m *Mutex) confirm(ctx context.Context, w *waiter, me Owner, sent time.Time) (outcome, error) {
	d, err := m.api.GetReservationDetails(ctx, m.resID, true)
	if err != nil {
		// The add succeeded, so the lock is ours; the lease loop will verify it again.
		m.cfg.log.Debug().Err(err).Msg("could not read the lock back after acquiring it")
		return m.handOver(w, me, sent), nil
	}
	svc, ok := d.Service(m.cfg.name)
	if !ok {
		return outcome{retryNow: true}, nil
	}
	raw, hasAttr := svc.Attribute(OwnerAttribute)
	if !hasAttr {
		// Our add succeeded but the service has no owner attribute at all: this server
		// ignores attributes its model does not define (the public package's latest model
		// has none). Without the record no one can tell holders apart, so undo the add (it
		// is ours: it succeeded) and say how to fix it. An attribute that is present but
		// empty is different: that is a legacy driver's lock that replaced ours.
		rctx, cancel := m.cleanupContext(ctx)
		defer cancel()
		if rerr := m.api.RemoveServicesFromReservation(rctx, m.resID, []string{m.cfg.name}); rerr != nil {
			m.cfg.log.Error().Err(rerr).Msg("could not remove the lock service added without an owner record")
		}
		return outcome{}, ownerAttributeMissing(nil)
	}
	m.markModelVerified()
	holder := parseOwner(raw)
	if holder.Token != me.Token {
		return outcome{holder: holder}, nil
	}
	out := m.handOver(w, me, sent)
	if out.lock != nil {
		out.lock.background.Go(func() { m.collectGarbage(ctx, d) })
	}
	return out, nil
}

// handOver makes the Lock for an add of ours that holds the lock, unless its answer came so
// late that the lease it started is (nearly) spent: waiters timing that lease may already be
// breaking it, so it is not ours to use. It is left to expire like a crashed holder's.
func (m *Mutex) handOver(w *waiter, me Owner, sent time.Time) outcome {
	if !m.withinLease(sent) {
		w.abandoned[me.Token] = true
		m.cfg.log.Warn().Str("lock", m.cfg.name).Dur("after_ms", m.cfg.clock.Now().Sub(sent)).
			Msg("the add that took the lock was answered too late to use it; leaving it to expire")
		return outcome{holder: me}
	}
	return outcome{lock: m.held(me, sent)}
}

// resolveAdd settles an add whose outcome is unknown by reading the reservation, never by
// resending it. If the caller gave up meanwhile and the add did land, the lock is removed
// again (inside its lease) so that nothing is left half-done.
func (m *Mutex) resolveAdd(ctx context.Context, w *waiter, me Owner, cause error) (outcome, error) {
	sent := w.pending[me.Token]
	rctx, cancel := m.cleanupContext(ctx)
	defer cancel()
	d, err := m.api.GetReservationDetails(rctx, m.resID, true)
	if err != nil {
		return outcome{}, m.callFailure(ctx, fmt.Errorf("add of lock %q had an unknown outcome (%w) and reading it back failed: %w", m.cfg.name, cause, err))
	}
	svc, ok := d.Service(m.cfg.name)
	if !ok {
		return outcome{}, m.callFailure(ctx, cause)
	}
	raw, _ := svc.Attribute(OwnerAttribute)
	holder := parseOwner(raw)
	if holder.Token != me.Token {
		return outcome{holder: holder}, nil
	}
	delete(w.pending, me.Token)
	if ctx.Err() != nil {
		if l := m.handOver(w, me, sent).lock; l != nil {
			if rerr := l.Unlock(context.WithoutCancel(ctx)); rerr != nil {
				m.cfg.log.Error().Err(rerr).Msg("gave up waiting, but could not remove the lock an interrupted add left behind; its lease will free it")
			}
		}
		return outcome{}, ctx.Err()
	}
	m.cfg.log.Debug().Str("lock", m.cfg.name).Msg("unknown add outcome resolved: the lock is ours")
	return m.handOver(w, me, sent), nil
}

// cleanupContext outlives the caller's cancellation, bounded by the release timeout:
// cleaning up after ourselves must not depend on the caller still waiting. Writes that are
// only safe inside a lease get a tighter deadline (Lock.leaseContext).
func (m *Mutex) cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), m.cfg.releaseTimeout)
}
