package mutex

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
)

// Lock is a held lock. While held, it renews its lease in the background. Done is closed
// when the lock is no longer held: released by Unlock, or lost (Err then wraps ErrLost).
type Lock struct {
	m     *Mutex
	owner Owner
	start time.Time
	// A cohort member's lock (WithCohort) is a view of the cohort's CloudShell lock, global.
	cohort *cohort
	global *Lock

	stop     chan struct{} // closed by Unlock to end renewals
	renewing sync.WaitGroup
	done     chan struct{}
	// background is the lock's work off the caller's path (leaving the waiting room, the
	// Output message, collecting dead break locks). Unlock waits for it, so that nothing the
	// lock started outlives Unlock; each piece is bounded (the release timeout; the message, 10 s).
	background sync.WaitGroup

	mu        sync.Mutex
	lastRenew time.Time // send time of the last write confirmed applied (the add or a heartbeat)
	seq       int
	err       error
	unlocked  bool
}

// errReleased is Err's answer after a normal Unlock.
var errReleased = fmt.Errorf("%w: released", ErrNotHeld)

// held starts a Lock whose lease began when the winning add was sent.
func (m *Mutex) held(owner Owner, sent time.Time) *Lock {
	l := &Lock{m: m, owner: owner, start: sent, lastRenew: sent,
		stop: make(chan struct{}), done: make(chan struct{})}
	if owner.Lease > 0 {
		l.renewing.Add(1)
		go l.keepAlive()
	}
	return l
}

// Owner returns this acquisition's owner record.
func (l *Lock) Owner() Owner { return l.owner }

// Done is closed when the lock is no longer held: after Unlock, or when it is lost.
func (l *Lock) Done() <-chan struct{} { return l.done }

// Err is nil while the lock is held. After Done is closed it says why: errors.Is(err,
// ErrLost) when the lock was lost, errors.Is(err, ErrNotHeld) after Unlock.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// finish records why the lock ended, once, and closes Done.
func (l *Lock) finish(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return
	}
	l.err = err
	close(l.done)
}

func (l *Lock) lose(err error) {
	l.mu.Lock()
	unlocking := l.unlocked
	l.mu.Unlock()
	if unlocking {
		return // Unlock decides how the lock ended
	}
	l.m.cfg.log.Error().Str("lock", l.m.cfg.name).Str("reservation", l.m.resID).Str("owner", l.owner.String()).
		Err(err).Msg("lock lost")
	l.finish(err)
}

// keepAlive renews the lease about every lease/3, and declares the lock lost when no renewal
// has been confirmed for lossAfter(lease): from then on waiters timing the full lease may
// break it, so the holder must stop first. A lock handed over with less than half its lease
// left (its add was answered late, or settled by reading) renews at once.
func (l *Lock) keepAlive() {
	defer l.renewing.Done()
	m := l.m
	interval := l.owner.Lease / 3
	retryEvery := interval / 4 // after a failed renewal, try again sooner: the deadline is near
	wait := interval
	if l.lossPoint().Sub(m.cfg.clock.Now()) < l.owner.Lease/2 {
		wait = 0
	}
	for {
		deadline := l.lossPoint()
		left := deadline.Sub(m.cfg.clock.Now())
		if left <= 0 {
			l.lose(fmt.Errorf("%w: no lease renewal succeeded for %s (lease %s); waiters may break it",
				ErrLost, lossAfter(l.owner.Lease), l.owner.Lease))
			return
		}
		if wait > 0 {
			select {
			case <-l.stop:
				return
			case <-m.cfg.clock.After(min(wait, left)):
			}
		}
		select {
		case <-l.stop:
			return
		default:
		}
		if m.cfg.clock.Now().Before(deadline) {
			ctx, cancel := l.leaseContext(context.Background())
			err := l.renew(ctx)
			cancel()
			if errors.Is(err, ErrLost) {
				l.lose(err)
				return
			}
			wait = interval
			if err != nil {
				m.cfg.log.Warn().Err(err).Str("lock", m.cfg.name).Msg("lease renewal failed; retrying")
				wait = retryEvery
			}
		}
	}
}

// lossPoint is when the holder must consider the lock lost unless a renewal is confirmed.
func (l *Lock) lossPoint() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastRenew.Add(lossAfter(l.owner.Lease))
}

// leaseContext bounds a call that is only safe while the lease holds: it is sent and
// answered before the loss point, or given up. Without a lease, the release timeout bounds it.
func (l *Lock) leaseContext(parent context.Context) (context.Context, context.CancelFunc) {
	base := context.WithoutCancel(parent)
	if l.owner.Lease <= 0 {
		return context.WithTimeout(base, l.m.cfg.releaseTimeout)
	}
	return context.WithDeadline(base, l.lossPoint())
}

// renew writes a new heartbeat, then checks the lock record is still ours. The heartbeat
// lives under a key only this holder writes; the record on the service is never rewritten.
func (l *Lock) renew(ctx context.Context) error {
	m := l.m
	l.mu.Lock()
	l.seq++
	seq := l.seq
	l.mu.Unlock()
	sent := m.cfg.clock.Now()
	value := fmt.Sprintf("%d held=%s", seq, sent.Sub(l.start).Round(time.Millisecond))
	werr := m.api.SetSandboxData(ctx, m.resID, []cloudshell.SandboxDataKeyValue{{Key: heartbeatKey(l.owner.Token), Value: value}})
	if werr == nil {
		l.mu.Lock()
		if sent.After(l.lastRenew) {
			l.lastRenew = sent
		}
		l.mu.Unlock()
	}
	d, rerr := m.api.GetReservationDetails(ctx, m.resID, true)
	if rerr == nil {
		if err := l.check(d); err != nil {
			return err
		}
	}
	return errors.Join(werr, rerr)
}

// check returns an ErrLost error unless d shows our record on the lock service.
func (l *Lock) check(d *cloudshell.ReservationDetails) error {
	holder, ok := holderIn(d, l.m.cfg.name)
	switch {
	case !ok:
		return fmt.Errorf("%w: the lock service %q was removed from the reservation", ErrLost, l.m.cfg.name)
	case holder.Token != l.owner.Token:
		return fmt.Errorf("%w: lock %q now belongs to %s", ErrLost, l.m.cfg.name, holder)
	}
	return nil
}

// Unlock releases the lock. It reads the lock record and removes the lock service only if
// the record is still ours, and every call it makes is sent and answered before the lease's
// loss point: a removal that landed later could delete the next holder's lock.
//
// Unlock returns nil when the critical section ended while the lock was held, whatever the
// removal's fate: a removal whose answer was lost, or one that could not be completed
// before the loss point (the lock is then left for its lease to free, and that is logged).
// Without a lease (WithLease(0)) nothing else would ever free it, so a removal that failed
// for the release timeout is reported (class Unavailable). Unlocking a lock that is not held
// returns ErrNotHeld (wrapping ErrLost if it was lost) and removes nothing. ctx may be
// canceled: the release still runs, so a canceled caller never leaves the lock held.
//
// Unlock returns only when the work the lock started beside the critical section has ended
// too (clearing its waiting-room entry and removing dead break locks, each bounded by the
// release timeout; its Output message, by 10 s), so no goroutine of the lock outlives it.
func (l *Lock) Unlock(ctx context.Context) error {
	m := l.m
	l.mu.Lock()
	if l.unlocked {
		l.mu.Unlock()
		return fmt.Errorf("%w: Unlock called twice", ErrNotHeld)
	}
	l.unlocked = true
	lost := l.err
	l.mu.Unlock()
	defer l.background.Wait()
	if l.cohort != nil {
		return l.cohort.unlock(ctx, l)
	}
	// Renewals stop; one already in flight is not waited for: it is bounded by the loss
	// point, writes only our own heartbeat key, and can no longer declare a loss.
	close(l.stop)
	if lost == nil && l.owner.Lease > 0 && !m.cfg.clock.Now().Before(l.lossPoint()) {
		lost = fmt.Errorf("%w: the lease ran out before Unlock (no renewal succeeded for %s)", ErrLost, lossAfter(l.owner.Lease))
	}
	if lost != nil {
		l.finish(lost)
		return fmt.Errorf("%w: %w", ErrNotHeld, lost)
	}

	rctx, cancel := l.leaseContext(ctx)
	defer cancel()
	if l.owner.Lease > 0 {
		rctx, cancel = context.WithTimeout(rctx, m.cfg.releaseTimeout)
		defer cancel()
	}
	collected := false
	err := m.removeIf(rctx, m.cfg.name, new(settler), func(d *cloudshell.ReservationDetails, removeSent bool) error {
		if !collected {
			collected = true
			l.background.Go(func() { m.collectGarbage(ctx, d) }) // this read shows dead break locks too
		}
		if err := l.check(d); err != nil {
			if removeSent {
				return errSettled // our own earlier remove landed although its answer was lost
			}
			return errNotOurs{err}
		}
		return nil
	})
	var notOurs errNotOurs
	switch {
	case errors.As(err, &notOurs):
		// Someone removed or replaced our record while our lease held: a legacy driver (the
		// snippet removes MUTEX whoever holds it) or an administrator's force release.
		l.finish(notOurs.err)
		m.cfg.log.Error().Err(notOurs.err).Str("lock", m.cfg.name).Msg("the lock was taken away while held")
		return fmt.Errorf("%w: %w", ErrNotHeld, notOurs.err)
	case err != nil && l.owner.Lease <= 0:
		err = &classError{sentinel: ErrUnavailable, err: fmt.Errorf(
			"mutex: releasing lock %q in reservation %s (it has no lease, so it stays until released or force-released): %w", m.cfg.name, m.resID, err)}
		l.finish(err)
		m.cfg.log.Error().Err(err).Msg("release failed")
		return err
	case err != nil:
		m.cfg.log.Warn().Err(err).Str("lock", m.cfg.name).Str("reservation", m.resID).
			Msg("could not remove the lock before its lease's loss point; it is left for the lease to free")
	}
	l.finish(errReleased)
	m.cfg.log.Info().Str("lock", m.cfg.name).Str("reservation", m.resID).Str("owner", l.owner.String()).
		Dur("held_ms", m.cfg.clock.Now().Sub(l.start)).Msg("lock released")
	return nil
}

// errNotOurs stops a release whose lock record is no longer ours.
type errNotOurs struct{ err error }

func (e errNotOurs) Error() string { return e.err.Error() }
