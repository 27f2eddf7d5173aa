package mutex

import (
	"context"
	"errors"
)

// With acquires the reservation's lock, runs fn while holding it, and releases it on every
// exit path: fn returns, fn fails, fn panics (the lock is released, then the panic goes on),
// or ctx is canceled. The ctx given to fn is canceled if the lock is lost, with the loss as
// its cause (context.Cause); With then reports the loss too.
//
// Inside fn, re-read the reservation before editing it: whatever was read before the lock
// was taken may be stale.
func With(ctx context.Context, api API, reservationID string, fn func(ctx context.Context) error, opts ...Option) (err error) {
	l, err := New(api, reservationID, opts...).Lock(ctx)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancelCause(ctx)
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
		uerr := l.Unlock(context.WithoutCancel(ctx))
		if r := recover(); r != nil {
			panic(r)
		}
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
