package locks_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
)

func TestSemaphoreUncontendedCalls(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("a")
		ctx := ctxTimeout(t, 10*time.Second)
		s := locks.NewSemaphore(c, env.ReservationID, "SWITCH", 3, fast()...)
		for i, want := range []int{5, 4} { // the first lock of a client also reads back its add (mutex's model check)
			var h *locks.Hold
			n, by := calls(env, func() {
				var err error
				if h, err = s.Acquire(ctx); err != nil {
					t.Fatal(err)
				}
				if got := aliases(t, env, "SWITCH"); len(got) != 1 || got[0] != "SWITCH.slot.1" {
					t.Fatalf("services while held: %v", got)
				}
				if err := h.Release(ctx); err != nil {
					t.Fatal(err)
				}
			})
			t.Logf("semaphore acquire+release #%d: %d calls %v", i+1, n, by)
			if n != want {
				t.Errorf("acquire+release #%d made %d calls %v, want %d", i+1, n, by, want)
			}
			if info := h.Info(); info.Slot != 1 || info.Shape != locks.ShapeSemaphore || info.Name != "SWITCH" {
				t.Errorf("Info = %+v", info)
			}
		}
		if got := aliases(t, env, "SWITCH"); len(got) != 0 {
			t.Errorf("left behind: %v", got)
		}
	})
}

// Never more than n inside, with many more contenders, each on its own client.
func TestSemaphoreAtMostN(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		const n, workers, rounds = 3, 8, 3
		ctx := ctxTimeout(t, time.Minute)
		var occ occupancy
		slots := map[int]bool{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := locks.NewSemaphore(env.Client(fmt.Sprint("w", w)), env.ReservationID, "SWITCH", n, fast()...)
				for range rounds {
					err := s.With(ctx, func(ctx context.Context, h *locks.Hold) error {
						slot := h.Info().Slot
						if occ.enter(fmt.Sprint(slot)) > 1 {
							t.Errorf("slot %d held twice", slot)
						}
						mu.Lock()
						slots[slot] = true
						mu.Unlock()
						time.Sleep(20 * time.Millisecond)
						occ.leave(fmt.Sprint(slot))
						return nil
					})
					if err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		if occ.max() > n {
			t.Errorf("%d holders at once, limit %d", occ.max(), n)
		}
		if occ.max() < n || len(slots) != n {
			t.Errorf("peak %d, slots used %v: the test did not fill the semaphore", occ.max(), slots)
		}
		if got := aliases(t, env, "SWITCH"); len(got) != 0 {
			t.Errorf("left behind: %v", got)
		}
	})
}

func TestSemaphoreTryAcquireBusyAndTimeout(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		s := locks.NewSemaphore(env.Client("a"), env.ReservationID, "S", 2, fast()...)
		h1, err := s.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		h2, err := s.TryAcquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h1.Info().Slot == h2.Info().Slot {
			t.Fatalf("two holders of slot %d", h1.Info().Slot)
		}
		other := locks.NewSemaphore(env.Client("b"), env.ReservationID, "S", 2, fast(locks.MutexOptions(mutex.WithOwner("b")))...)
		_, err = other.TryAcquire(ctx)
		var busy *locks.BusyError
		if !errors.As(err, &busy) || !errors.Is(err, mutex.ErrLocked) || len(busy.Holders) != 2 {
			t.Fatalf("TryAcquire on a full semaphore = %v, want a BusyError naming both holders", err)
		}
		want := []string{h1.Info().Owners[0].Token, h2.Info().Owners[0].Token}
		var got []string
		for _, o := range busy.Owners() {
			got = append(got, o.Token)
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("BusyError.Owners tokens = %v, want the holders' %v", got, want)
		}
		start := time.Now()
		limited := locks.NewSemaphore(env.Client("c"), env.ReservationID, "S", 2, fast(locks.WithWaitLimit(time.Second))...)
		_, err = limited.Acquire(ctx)
		var te *mutex.TimeoutError
		if !errors.Is(err, mutex.ErrTimeout) || !errors.As(err, &te) || te.Deadline || time.Since(start) < time.Second {
			t.Fatalf("Acquire on a full semaphore = %v after %s, want the wait limit's timeout", err, time.Since(start))
		}
		if got := aliases(t, env, "S."); len(got) != 2 {
			t.Fatalf("after the timeout: %v, want only the two holders' slots", got)
		}
		_ = h1.Release(ctx)
		_ = h2.Release(ctx)
	})
}

// A crashed holder's slot is freed as the exclusive lock frees a crashed holder's lock.
func TestSemaphoreRecoversDeadSlots(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("a")
		deadHolder(t, c, env.ReservationID, "S.slot.1")
		deadHolder(t, c, env.ReservationID, "S.slot.2")
		ctx := ctxTimeout(t, 10*time.Second)
		start := time.Now()
		h, err := locks.NewSemaphore(c, env.ReservationID, "S", 2, fast()...).Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited < lease || waited > 3*lease {
			t.Errorf("took a dead slot after %s, want one to two leases (%s)", waited, lease)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// The lost-lock signal: a slot taken away while held cancels With's function and is reported.
func TestSemaphoreLostSlot(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("a")
		ctx := ctxTimeout(t, 10*time.Second)
		s := locks.NewSemaphore(c, env.ReservationID, "S", 1, fast()...)
		err := s.With(ctx, func(ctx context.Context, h *locks.Hold) error {
			if _, err := mutex.ForceRelease(ctx, c, env.ReservationID, mutex.WithName("S.slot.1")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
				t.Fatal("the function's context was not canceled after the slot was removed")
			}
			if !errors.Is(context.Cause(ctx), mutex.ErrLost) || !errors.Is(h.Err(), mutex.ErrLost) {
				t.Errorf("cause %v, Err %v: want ErrLost", context.Cause(ctx), h.Err())
			}
			return nil
		})
		if !errors.Is(err, mutex.ErrLost) {
			t.Fatalf("With = %v, want ErrLost", err)
		}
	})
}

// Released on every path: an error, a panic.
func TestShapesReleaseOnEveryPath(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("a")
		ctx := ctxTimeout(t, 10*time.Second)
		boom := errors.New("boom")
		withs := map[string]func(ctx context.Context, fn func(context.Context, *locks.Hold) error) error{
			"semaphore": locks.NewSemaphore(c, env.ReservationID, "S", 2, fast()...).With,
			"shared":    locks.NewRWMutex(c, env.ReservationID, "RW", fast()...).WithShared,
			"exclusive": locks.NewRWMutex(c, env.ReservationID, "RW", fast()...).WithExclusive,
			"set":       locks.NewSet(c, env.ReservationID, []string{"A", "B"}, fast()...).With,
			"pool":      locks.NewPool(c, env.ReservationID, []string{"P1", "P2", "P3"}, 2, fast()...).With,
		}
		for name, with := range withs {
			if err := with(ctx, func(context.Context, *locks.Hold) error { return boom }); !errors.Is(err, boom) {
				t.Errorf("%s: With = %v, want fn's error", name, err)
			}
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("%s: the panic did not go on", name)
					}
				}()
				_ = with(ctx, func(context.Context, *locks.Hold) error { panic("boom") })
			}()
			if got := aliases(t, env, ""); len(got) != 0 {
				t.Errorf("%s: left behind %v", name, got)
			}
		}
	})
}

func TestShapesRefuseBadConfiguration(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("a")
		ctx := ctxTimeout(t, 10*time.Second)
		for name, acquire := range map[string]func(context.Context) (*locks.Hold, error){
			"semaphore n=0":          locks.NewSemaphore(c, env.ReservationID, "S", 0).Acquire,
			"semaphore slot name":    locks.NewSemaphore(c, env.ReservationID, "S.slot.1", 2).Acquire,
			"semaphore long name":    locks.NewSemaphore(c, env.ReservationID, fmt.Sprintf("%0*d", mutex.MaxShapeNameLength+1, 0), 2).Acquire,
			"rw readers=0":           locks.NewRWMutex(c, env.ReservationID, "RW", locks.WithReaders(0)).RLock,
			"rw read name":           locks.NewRWMutex(c, env.ReservationID, "X.read.1").Lock,
			"set empty":              locks.NewSet(c, env.ReservationID, nil).Acquire,
			"set break name":         locks.NewSet(c, env.ReservationID, []string{"A", "A.break.0123456789abcdef"}).Acquire,
			"pool k>n":               locks.NewPool(c, env.ReservationID, []string{"A", "B"}, 3).Acquire,
			"pool duplicate":         locks.NewPool(c, env.ReservationID, []string{"A", "A"}, 1).Acquire,
			"semaphore no retry":     locks.NewSemaphore(c, env.ReservationID, "S", 1, locks.WithRetry(nil)).Acquire,
			"semaphore empty res id": locks.NewSemaphore(c, "", "S", 1).Acquire,
		} {
			before := env.Server.Calls("")
			if _, err := acquire(ctx); !errors.Is(err, mutex.ErrInvalid) || !mutex.IsPermanent(err) {
				t.Errorf("%s: %v, want a permanent invalid-argument error", name, err)
			}
			if env.Server.Calls("") != before {
				t.Errorf("%s: calls were made before the configuration was checked", name)
			}
		}
	})
}
