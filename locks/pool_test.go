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

var ports = []string{"TG/P1", "TG/P2", "TG/P3", "TG/P4", "TG/P5", "TG/P6", "TG/P7", "TG/P8"}

func TestPoolUncontendedCalls(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("a")
		ctx := ctxTimeout(t, 10*time.Second)
		pool := locks.NewPool(c, env.ReservationID, ports, 2, fast()...)
		_ = pool.With(ctx, func(context.Context, *locks.Hold) error { return nil }) // warm the model check
		n, by := calls(env, func() {
			h, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.Info().Members; len(got) != 2 || got[0] == got[1] {
				t.Errorf("members %v", got)
			}
			if err := h.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("pool 2 of 8 acquire+release: %d calls %v", n, by)
		if n != 7 {
			t.Errorf("2 of 8 made %d calls %v, want 7 (a read, then 3 per member)", n, by)
		}
	})
}

// Takers of 2 or 3 of 8 members, more than fit at once: every member has one holder at a
// time, every taker gets what it asked for, and nobody deadlocks by hoarding.
func TestPoolDistinctMembers(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		env.Server.Faults().Set("*", mockapi.Fault{LatencyJitter: 3 * time.Millisecond})
		ctx := ctxTimeout(t, 2*time.Minute)
		var (
			mu     sync.Mutex
			holder = map[string]int{}
			inUse  int
			peak   int
		)
		var wg sync.WaitGroup
		for i := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				k := 2 + i%2
				pool := locks.NewPool(env.Client(fmt.Sprint("p", i)), env.ReservationID, ports, k, fast()...)
				for range 3 {
					err := pool.With(ctx, func(ctx context.Context, h *locks.Hold) error {
						got := h.Info().Members
						mu.Lock()
						if len(got) != k {
							t.Errorf("taker %d got %v, asked for %d", i, got, k)
						}
						for _, m := range got {
							if j, ok := holder[m]; ok {
								t.Errorf("%s handed to taker %d while taker %d holds it", m, i, j)
							}
							holder[m] = i
						}
						inUse += len(got)
						peak = max(peak, inUse)
						mu.Unlock()
						time.Sleep(15 * time.Millisecond)
						mu.Lock()
						for _, m := range got {
							delete(holder, m)
						}
						inUse -= len(got)
						mu.Unlock()
						return nil
					})
					if err != nil {
						t.Errorf("taker %d: %v", i, err)
					}
				}
			}()
		}
		wg.Wait()
		if peak < 6 {
			t.Errorf("at most %d members in use at once: the test did not contend", peak)
		}
		if got := aliases(t, env, "TG"); len(got) != 0 {
			t.Errorf("left behind: %v", got)
		}
	})
}

func TestPoolBusyAndDeadMembers(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("a")
		ctx := ctxTimeout(t, 10*time.Second)
		members := []string{"M1", "M2", "M3"}
		deadHolder(t, c, env.ReservationID, "M1")
		deadHolder(t, c, env.ReservationID, "M3")
		pool := locks.NewPool(c, env.ReservationID, members, 2, fast()...)
		if _, err := pool.TryAcquire(ctx); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("TryAcquire with one free member = %v, want ErrLocked", err)
		}
		if got := aliases(t, env, "M"); len(got) != 2 {
			t.Fatalf("TryAcquire left %v", got)
		}
		start := time.Now()
		h, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited > 3*lease {
			t.Errorf("took %s to break a dead member", waited)
		}
		_ = h.Release(ctx)
	})
}
