package mutex

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/sethvargo/go-retry"
)

// Lock is a held lock. While held, it renews its lease in the background. Done is closed
// when the lock is no longer held: released by Unlock, or lost (Err then wraps ErrLost).
type Lock struct {
	m     *Mutex
	owner Owner
	start time.Time

	stop     chan struct{} // closed by Unlock to end renewals
	renewing sync.WaitGroup
	done     chan struct{}

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
	l.m.cfg.log.Error().Str("lock", l.m.cfg.name).Str("reservation", l.m.resID).Str("owner", l.owner.String()).
		Err(err).Msg("lock lost")
	l.finish(err)
}

// keepAlive renews the lease about every lease/3, and declares the lock lost when no renewal
// has been confirmed for lossAfter(lease): from then on waiters timing the full lease may
// break it, so the holder must stop first.
func (l *Lock) keepAlive() {
	defer l.renewing.Done()
	m := l.m
	interval := l.owner.Lease / 3
	retryEvery := interval / 4 // after a failed renewal, try again sooner: the deadline is near
	wait := interval
	for {
		l.mu.Lock()
		deadline := l.lastRenew.Add(lossAfter(l.owner.Lease))
		l.mu.Unlock()
		left := deadline.Sub(m.cfg.clock.Now())
		if left <= 0 {
			l.lose(fmt.Errorf("%w: no lease renewal succeeded for %s (lease %s); waiters may break it",
				ErrLost, lossAfter(l.owner.Lease), l.owner.Lease))
			return
		}
		select {
		case <-l.stop:
			return
		case <-m.cfg.clock.After(min(wait, left)):
		}
		if m.cfg.clock.Now().Before(deadline) {
			ctx, cancel := context.WithTimeout(context.Background(), deadline.Sub(m.cfg.clock.Now()))
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
	svc, ok := d.Service(l.m.cfg.name)
	if !ok {
		return fmt.Errorf("%w: the lock service %q was removed from the reservation", ErrLost, l.m.cfg.name)
	}
	raw, _ := svc.Attribute(OwnerAttribute)
	if cur := parseOwner(raw); cur.Token != l.owner.Token {
		return fmt.Errorf("%w: lock %q now belongs to %s", ErrLost, l.m.cfg.name, cur)
	}
	return nil
}

// Unlock releases the lock: it removes the lock service, but only after reading that the
// record on it is still ours, and only while our lease is safely valid. A failing release is
// retried with backoff for up to the release timeout, then reported. Unlocking a lock that
// is not held returns ErrNotHeld and removes nothing. ctx may be canceled: the release
// still runs, bounded by the release timeout, so a canceled caller never leaves the lock held.
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
	close(l.stop)
	l.renewing.Wait()
	if lost != nil {
		return fmt.Errorf("%w: %w", ErrNotHeld, lost)
	}

	ctx, cancel := m.cleanupContext(ctx)
	defer cancel()
	backoff := retry.WithCappedDuration(time.Second, retry.NewExponential(20*time.Millisecond))
	err := retry.Do(ctx, backoff, func(ctx context.Context) error {
		l.mu.Lock()
		safe := l.owner.Lease <= 0 || m.cfg.clock.Now().Sub(l.lastRenew) < lossAfter(l.owner.Lease)
		l.mu.Unlock()
		if !safe {
			// A waiter may be breaking it right now; removing it could race with that
			// and delete the next holder's lock. Leave it: its lease frees it.
			return fmt.Errorf("%w: the lease ran out before the release completed; the lock is left to expire", ErrLost)
		}
		d, err := m.api.GetReservationDetails(ctx, m.resID, true)
		if err != nil {
			return m.retryable(err)
		}
		if err := l.check(d); err != nil {
			return fmt.Errorf("%w: %w", ErrNotHeld, err)
		}
		err = m.api.RemoveServicesFromReservation(ctx, m.resID, []string{m.cfg.name})
		if err != nil {
			return m.retryable(err) // an ambiguous remove is settled by the next read
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("mutex: releasing lock %q in reservation %s: %w", m.cfg.name, m.resID, err)
		l.finish(err)
		m.cfg.log.Error().Err(err).Msg("release failed")
		return err
	}
	l.finish(errReleased)
	m.cfg.log.Info().Str("lock", m.cfg.name).Str("reservation", m.resID).Str("owner", l.owner.String()).
		Dur("held", m.cfg.clock.Now().Sub(l.start)).Msg("lock released")
	return nil
}

// retryable marks the errors worth another release attempt.
func (m *Mutex) retryable(err error) error {
	if transient(err) || errors.Is(err, cloudshell.ErrAmbiguous) {
		return retry.RetryableError(err)
	}
	return err
}
