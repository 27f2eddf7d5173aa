package mutex

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/sethvargo/go-retry"
)

// errSettled stops removeIf: a fresh read shows there is nothing (more) to remove.
var errSettled = errors.New("mutex: nothing to remove")

// removeIf removes the service alias, but only right after a fresh read for which decide
// returns nil; decide returns errSettled when nothing needs removing, or any other error to
// stop. Failures are retried until ctx ends (callers bound it by the lease that makes the
// removal safe). removeSent tells decide whether an earlier remove may have landed (its
// answer was lost), so that "gone" can be read as "done".
//
// After an ambiguous remove the next read waits until that remove can no longer land (see
// settler): a second remove sent while the first is in flight could land after it, after
// someone else has added the lock anew, and delete their lock.
//
// settle is shared by removals that must not overlap (a breaker's removal of the stale lock
// and the release of its break lock: once the break lock is gone, the next breaker may send
// its own removal of the same lock).
func (m *Mutex) removeIf(ctx context.Context, alias string, settle *settler, decide func(d *cloudshell.ReservationDetails, removeSent bool) error) error {
	var removeSent bool
	err := retry.Do(ctx, releaseBackoff(), func(ctx context.Context) error {
		if err := settle.wait(ctx, m); err != nil {
			return err
		}
		d, err := m.api.GetReservationDetails(ctx, m.resID, true)
		if err != nil {
			return retryIf(err)
		}
		if err := decide(d, removeSent); err != nil {
			return err
		}
		err = m.api.RemoveServicesFromReservation(ctx, m.resID, []string{alias})
		var ae *cloudshell.APIError
		switch {
		case err == nil:
			return nil
		case errors.Is(err, cloudshell.ErrAmbiguous), ctx.Err() != nil:
			removeSent = true
			settle.ambiguous(m)
			return retry.RetryableError(err) // settled by the next read
		case errors.As(err, &ae):
			// Most likely "not found": the next read tells who removed it.
			return retry.RetryableError(err)
		}
		return retryIf(err)
	})
	if errors.Is(err, errSettled) {
		return nil
	}
	return err
}

// releaseBackoff paces retried removals: quick at first; the lease bound stops them.
func releaseBackoff() retry.Backoff {
	return retry.WithCappedDuration(time.Second, retry.NewExponential(20*time.Millisecond))
}

// retryIf marks the failures worth another attempt: transient ones and ambiguous writes (the
// next attempt reads before it writes again).
func retryIf(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, cloudshell.ErrAmbiguous) || retryable(classify(context.Background(), err)) {
		return retry.RetryableError(err)
	}
	return err
}

// settler keeps a retried removal from racing the one before it. After an ambiguous remove
// the next read waits until the first can no longer land: the loss margin after we stopped
// waiting for it (a request landing later than that is the documented in-flight limit).
type settler struct{ until time.Time }

func (s *settler) ambiguous(m *Mutex) {
	margin := LossMargin(m.cfg.lease)
	if m.cfg.lease <= 0 {
		margin = LossMargin(DefaultLease)
	}
	s.until = m.cfg.clock.Now().Add(margin)
}

// wait blocks until an earlier ambiguous remove has settled, or fails at once if ctx (the
// lease bound) ends first.
func (s *settler) wait(ctx context.Context, m *Mutex) error {
	left := s.until.Sub(m.cfg.clock.Now())
	if left <= 0 {
		return nil
	}
	if d, ok := ctx.Deadline(); ok && m.cfg.clock.Now().Add(left).After(d) {
		return fmt.Errorf("an ambiguous remove cannot settle before the lease's loss point: %w", context.DeadlineExceeded)
	}
	select {
	case <-m.cfg.clock.After(left):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
