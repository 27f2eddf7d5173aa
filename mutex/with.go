package mutex

import (
	"context"
	"errors"

	"github.com/csmutex/csmutex/cloudshell"
)

// With acquires the reservation's lock, runs fn while holding it, and releases it on every
// exit path: fn returns, fn fails, fn panics (the lock is released, then the panic goes on),
// or ctx is canceled. The ctx given to fn is canceled if the lock is lost, with the loss as
// its cause (context.Cause); With then reports the loss too (errors.Is(err, ErrLost)).
//
// Inside fn, re-read the reservation before editing it: whatever was read before the lock
// was taken may be stale. If fn fails with a write whose outcome is unknown (its error
// wraps cloudshell.ErrAmbiguous, as the client's do), that write may still be on its way to
// the server; With keeps the lock until it can no longer land (LossMargin of the lease)
// before releasing, so it cannot land inside the next holder's critical section.
func With(ctx context.Context, api API, reservationID string, fn func(ctx context.Context) error, opts ...Option) error {
	return New(api, reservationID, opts...).With(ctx, fn)
}

// With is the package's With on this Mutex: drivers that share one Mutex (a cohort,
// WithCohort) use it from each goroutine.
func (m *Mutex) With(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	l, err := m.Lock(ctx)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancelCause(context.WithValue(ctx, lockKey{}, l))
	go func() {
		select {
		case <-l.Done():
			cancel(l.Err())
		case <-fctx.Done():
		}
	}()
	defer func() {
		lostDuringFn := context.Cause(fctx)
		cancel(context.Canceled)
		if errors.Is(err, cloudshell.ErrAmbiguous) {
			m.settle(l)
		}
		uerr := l.Unlock(context.WithoutCancel(ctx))
		if errors.Is(lostDuringFn, ErrLost) {
			// The critical section ran (at least partly) without the lock: say so, whatever
			// fn returned.
			err = errors.Join(err, lostDuringFn)
			return
		}
		err = errors.Join(err, uerr)
	}()
	return fn(fctx)
}

type lockKey struct{}

// HeldLock returns the lock that With holds for the function it runs, from the context With
// gives it: its Owner (the token names this acquisition in logs and in the reservation) and
// Done.
func HeldLock(ctx context.Context) (*Lock, bool) {
	l, ok := ctx.Value(lockKey{}).(*Lock)
	return l, ok
}

// settle holds the lock until a write that its critical section gave up on can no longer
// land, or the lock is lost meanwhile.
func (m *Mutex) settle(l *Lock) {
	var s settler
	s.ambiguous(m)
	select {
	case <-m.cfg.clock.After(s.until.Sub(m.cfg.clock.Now())):
	case <-l.Done():
	}
}
