package locks_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
)

func TestSetUncontendedCalls(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("a")
		ctx := ctxTimeout(t, 10*time.Second)
		set := locks.NewSet(c, env.ReservationID, []string{"SWITCH-2", "SWITCH-1", "SWITCH-2"}, fast()...)
		_ = set.With(ctx, func(context.Context, *locks.Hold) error { return nil }) // warm the model check
		n, by := calls(env, func() {
			h, err := set.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(h.Info().Members); got != "[SWITCH-1 SWITCH-2]" {
				t.Errorf("members %s, want sorted and without duplicates", got)
			}
			if err := h.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("set of 2 acquire+release: %d calls %v", n, by)
		if n != 6 {
			t.Errorf("a set of 2 made %d calls %v, want 6 (3 per name)", n, by)
		}
	})
}

// All or nothing: a set whose second name is held releases the first.
func TestSetAllOrNothing(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		other, err := mutex.New(env.Client("b"), env.ReservationID, mutex.WithName("B"), mutex.WithLease(lease)).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		set := locks.NewSet(env.Client("a"), env.ReservationID, []string{"A", "B", "C"}, fast(locks.WithWaitLimit(time.Second))...)
		_, err = set.TryAcquire(ctx)
		var le *mutex.LockedError
		if !errors.As(err, &le) || le.Name != "B" {
			t.Fatalf("TryAcquire with B held = %v, want a LockedError naming B", err)
		}
		if got := aliases(t, env, ""); len(got) != 1 || got[0] != "B" {
			t.Fatalf("after a failed TryAcquire: %v, want only B", got)
		}
		_, err = set.Acquire(ctx)
		if !errors.Is(err, mutex.ErrTimeout) {
			t.Fatalf("Acquire with B held = %v, want a timeout", err)
		}
		if got := aliases(t, env, ""); len(got) != 1 || got[0] != "B" {
			t.Fatalf("after a timed-out Acquire: %v, want only B", got)
		}
		_ = other.Unlock(ctx)
		h, err := set.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := aliases(t, env, ""); len(got) != 3 {
			t.Fatalf("held: %v", got)
		}
		_ = h.Release(ctx)
	})
}

// Sets that overlap, given in every order, never deadlock, and each is held whole.
func TestSetsNeverDeadlock(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		env.Server.Faults().Set("*", mockapi.Fault{LatencyJitter: 3 * time.Millisecond})
		ctx := ctxTimeout(t, time.Minute)
		sets := [][]string{{"A", "B"}, {"B", "A"}, {"C", "B", "A"}, {"A", "C"}, {"C", "D"}, {"D", "A"}}
		var (
			mu     sync.Mutex
			holder = map[string]int{}
		)
		var wg sync.WaitGroup
		for i, names := range sets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				set := locks.NewSet(env.Client(fmt.Sprint("s", i)), env.ReservationID, names, fast()...)
				for range 3 {
					err := set.With(ctx, func(ctx context.Context, h *locks.Hold) error {
						mu.Lock()
						for _, n := range names {
							if j, ok := holder[n]; ok {
								t.Errorf("set %d holds %s while set %d does", i, n, j)
							}
							holder[n] = i
						}
						mu.Unlock()
						time.Sleep(10 * time.Millisecond)
						mu.Lock()
						for _, n := range names {
							delete(holder, n)
						}
						mu.Unlock()
						return nil
					})
					if err != nil {
						t.Errorf("set %v: %v", names, err)
					}
				}
			}()
		}
		wg.Wait()
	})
}

func TestSetLevels(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("a")
		ctx := ctxTimeout(t, 10*time.Second)
		lv, err := locks.NewLevels("reservation", "device", "port")
		if err != nil {
			t.Fatal(err)
		}
		for level, names := range map[string][]string{"reservation": {"MUTEX"}, "device": {"SW-1", "SW-2"}, "port": {"SW-1/P1", "SW-1/P2"}} {
			if err := lv.Assign(level, names...); err != nil {
				t.Fatal(err)
			}
		}
		if err := lv.Assign("device", "SW-1/P1"); !errors.Is(err, mutex.ErrInvalid) {
			t.Errorf("assigning a name to a second level = %v", err)
		}
		set := func(names ...string) *locks.Set {
			return locks.NewSet(c, env.ReservationID, names, fast(locks.WithLevels(lv))...)
		}
		// Coarse to fine is fine.
		err = set("SW-1", "SW-2").With(ctx, func(ctx context.Context, _ *locks.Hold) error {
			if err := set("SW-1/P1").With(ctx, func(ctx context.Context, _ *locks.Hold) error {
				// Fine to coarse, or the same level again, is refused before anything is sent.
				for _, names := range [][]string{{"MUTEX"}, {"SW-1/P2"}, {"SW-2"}} {
					before := env.Server.Calls("")
					_, err := set(names...).Acquire(ctx)
					var le *locks.LevelError
					if !errors.As(err, &le) || !errors.Is(err, locks.ErrLevel) || !mutex.IsPermanent(err) || env.Server.Calls("") != before {
						t.Errorf("taking %v while holding SW-1/P1 = %v, want a LevelError and no call", names, err)
					}
				}
				return nil
			}); err != nil {
				t.Error(err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := set("UNASSIGNED").Acquire(ctx); !errors.Is(err, locks.ErrLevel) {
			t.Errorf("a name at no level = %v, want ErrLevel", err)
		}
		// Another call chain (a context without the holds) is independent.
		h, err := set("SW-1/P1").Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		h2, err := set("MUTEX").Acquire(ctx)
		if err != nil {
			t.Fatalf("an independent call chain was refused: %v", err)
		}
		_ = h2.Release(ctx)
		if _, err := set("SW-1").Acquire(locks.ContextWithHold(ctx, h)); !errors.Is(err, locks.ErrLevel) {
			t.Errorf("ContextWithHold did not carry the hold: %v", err)
		}
		_ = h.Release(ctx)
	})
}
