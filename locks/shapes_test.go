package locks_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
)

type withFunc func(ctx context.Context, fn func(context.Context, *locks.Hold) error) error

func shapes(c *cloudshell.Client, resID string, opts ...locks.Option) map[string]withFunc {
	return map[string]withFunc{
		"semaphore": locks.NewSemaphore(c, resID, "S", 2, opts...).With,
		"shared":    locks.NewRWMutex(c, resID, "RW", opts...).WithShared,
		"exclusive": locks.NewRWMutex(c, resID, "RW", opts...).WithExclusive,
		"set":       locks.NewSet(c, resID, []string{"A", "B"}, opts...).With,
		"pool":      locks.NewPool(c, resID, []string{"P1", "P2", "P3"}, 2, opts...).With,
	}
}

// Any part of a hold taken away (an administrator's force release, a legacy driver's remove)
// cancels the function's context with the loss as its cause, and With reports it.
func TestShapesLostPart(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("a")
		ctx := ctxTimeout(t, time.Minute)
		for name, with := range shapes(c, env.ReservationID, fast()...) {
			err := with(ctx, func(ctx context.Context, h *locks.Hold) error {
				parts := h.Info().Aliases
				if _, err := mutex.ForceRelease(ctx, c, env.ReservationID, mutex.WithName(parts[len(parts)-1])); err != nil {
					t.Fatal(err)
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
					t.Errorf("%s: not told that %s was lost", name, parts[len(parts)-1])
				}
				if !errors.Is(context.Cause(ctx), mutex.ErrLost) || !errors.Is(h.Err(), mutex.ErrLost) {
					t.Errorf("%s: cause %v, Err %v", name, context.Cause(ctx), h.Err())
				}
				return nil
			})
			if !errors.Is(err, mutex.ErrLost) {
				t.Errorf("%s: With = %v, want ErrLost", name, err)
			}
			if got := aliases(t, env, ""); len(got) != 0 {
				t.Errorf("%s: left behind %v", name, got)
			}
		}
	})
}

// A shape held by someone else: the wait ends at the wait limit, or at the caller's deadline,
// with a timeout that says which, and nothing of the waiter's left behind.
func TestShapesTimeout(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		holder := env.Client("holder")
		ctx := ctxTimeout(t, time.Minute)
		// Hold everything the shapes use: both slots, the writer's lock, the set, the pool.
		var held []*locks.Hold
		for _, acquire := range []func(context.Context) (*locks.Hold, error){
			locks.NewSemaphore(holder, env.ReservationID, "S", 2, fast()...).Acquire,
			locks.NewSemaphore(holder, env.ReservationID, "S", 2, fast()...).Acquire,
			locks.NewRWMutex(holder, env.ReservationID, "RW", fast()...).Lock,
			locks.NewSet(holder, env.ReservationID, []string{"B", "P2", "P3"}, fast()...).Acquire,
		} {
			h, err := acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, h)
		}
		before := aliases(t, env, "")
		waiter := env.Client("waiter")
		for _, deadline := range []bool{false, true} {
			for name, with := range shapes(waiter, env.ReservationID, fast(locks.WithWaitLimit(time.Second))...) {
				wctx := ctx
				if deadline {
					var cancel context.CancelFunc
					wctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
					defer cancel()
				}
				start := time.Now()
				err := with(wctx, func(context.Context, *locks.Hold) error {
					t.Errorf("%s: ran while held by someone else", name)
					return nil
				})
				var te *mutex.TimeoutError
				if !errors.Is(err, mutex.ErrTimeout) || !errors.As(err, &te) || te.Deadline != deadline ||
					errors.Is(err, context.DeadlineExceeded) != deadline {
					t.Errorf("%s (caller's deadline %v): %v, want a timeout saying whose", name, deadline, err)
				}
				if waited := time.Since(start); waited > 2*time.Second {
					t.Errorf("%s: waited %s", name, waited)
				}
				if got := aliases(t, env, ""); len(got) != len(before) {
					t.Errorf("%s: after the timeout %v, before %v", name, got, before)
				}
			}
		}
		for _, h := range held {
			_ = h.Release(ctx)
		}
	})
}
