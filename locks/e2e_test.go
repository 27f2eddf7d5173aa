package locks_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
)

// End to end over real HTTP (the mock on a loopback port, one client per worker, real time):
// each shape's invariant as seen from outside the lock, by the workers themselves, and a
// control run of the same workers without the lock that shows the violation. Holds are
// 30 ms and the workers start together, so the control overlaps whatever the machine's
// load; leases are 10 s, far beyond any stall a loaded CI machine causes.
func TestShapesEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time end-to-end test")
	}
	const workers, rounds = 6, 3
	e2e := func(extra ...locks.Option) []locks.Option {
		return append([]locks.Option{locks.WithRetry(mutex.Jitter(2*time.Millisecond, 10*time.Millisecond)),
			locks.MutexOptions(mutex.WithLease(10 * time.Second))}, extra...)
	}
	type guard func(c *cloudshell.Client, resID string, worker int, fn func(members []string)) error
	members := []string{"M1", "M2", "M3", "M4"}
	for _, tc := range []struct {
		name string
		// guard runs fn under the shape; fn learns what the worker holds.
		guard guard
		// unguarded is the control: what the worker would claim without the lock.
		unguarded func(worker int) []string
		// ok judges the occupancy: how many are in, and who holds what.
		ok func(in map[int][]string) error
	}{
		{
			name: "semaphore of 2",
			guard: func(c *cloudshell.Client, resID string, w int, fn func([]string)) error {
				return locks.NewSemaphore(c, resID, "SEM", 2, e2e()...).With(context.Background(), func(_ context.Context, h *locks.Hold) error {
					fn([]string{strconv.Itoa(h.Info().Slot)})
					return nil
				})
			},
			unguarded: func(w int) []string { return []string{"any"} },
			ok: func(in map[int][]string) error {
				if len(in) > 2 {
					return fmt.Errorf("%d holders of a semaphore of 2", len(in))
				}
				return nil
			},
		},
		{
			name: "shared/exclusive",
			guard: func(c *cloudshell.Client, resID string, w int, fn func([]string)) error {
				rw := locks.NewRWMutex(c, resID, "TOPO", e2e()...)
				if w%3 == 0 {
					return rw.WithExclusive(context.Background(), func(context.Context, *locks.Hold) error { fn([]string{"writer"}); return nil })
				}
				return rw.WithShared(context.Background(), func(context.Context, *locks.Hold) error { fn([]string{"reader"}); return nil })
			},
			unguarded: func(w int) []string {
				if w%3 == 0 {
					return []string{"writer"}
				}
				return []string{"reader"}
			},
			ok: func(in map[int][]string) error {
				for _, got := range in {
					if got[0] == "writer" && len(in) > 1 {
						return fmt.Errorf("a writer with %d others", len(in)-1)
					}
				}
				return nil
			},
		},
		{
			name: "overlapping sets",
			guard: func(c *cloudshell.Client, resID string, w int, fn func([]string)) error {
				names := []string{members[w%4], members[(w+1)%4]}
				return locks.NewSet(c, resID, names, e2e()...).With(context.Background(), func(context.Context, *locks.Hold) error { fn(names); return nil })
			},
			unguarded: func(w int) []string { return []string{members[w%4], members[(w+1)%4]} },
			ok:        distinct,
		},
		{
			name: "pool of 2 of 4",
			guard: func(c *cloudshell.Client, resID string, w int, fn func([]string)) error {
				return locks.NewPool(c, resID, members, 2, e2e()...).With(context.Background(), func(_ context.Context, h *locks.Hold) error {
					fn(h.Info().Members)
					return nil
				})
			},
			// Without the lock a driver takes the first two, as a driver that does not
			// coordinate would.
			unguarded: func(w int) []string { return members[:2] },
			ok:        distinct,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, control := range []bool{false, true} {
				env := testenv.New(t)
				var (
					mu         sync.Mutex
					in         = map[int][]string{}
					violations []string
					wg         sync.WaitGroup
				)
				section := func(w int, held []string) {
					mu.Lock()
					in[w] = held
					if err := tc.ok(in); err != nil {
						violations = append(violations, err.Error())
					}
					mu.Unlock()
					time.Sleep(30 * time.Millisecond)
					mu.Lock()
					delete(in, w)
					mu.Unlock()
				}
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						c := env.Client(fmt.Sprint("w", w))
						for range rounds {
							if control {
								section(w, tc.unguarded(w))
								continue
							}
							if err := tc.guard(c, env.ReservationID, w, func(held []string) { section(w, held) }); err != nil {
								t.Error(err)
							}
						}
					}()
				}
				wg.Wait()
				switch {
				case !control && len(violations) > 0:
					t.Errorf("under the lock: %d violations, first: %s", len(violations), violations[0])
				case control && len(violations) == 0:
					t.Errorf("the control run without the lock showed no violation: the test cannot fail")
				case control:
					t.Logf("control without the lock: %d violations, e.g. %s", len(violations), violations[0])
				}
			}
		})
	}
}

func distinct(in map[int][]string) error {
	owner := map[string]int{}
	for w, held := range in {
		for _, m := range held {
			if o, ok := owner[m]; ok {
				return fmt.Errorf("%s held by workers %d and %d", m, o, w)
			}
			owner[m] = w
		}
	}
	return nil
}

// The counter over real HTTP: no lost increment under State; the control, a plain
// read-modify-write of sandbox data, loses some.
func TestStateEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time end-to-end test")
	}
	const workers, rounds = 6, 4
	for _, control := range []bool{false, true} {
		env := testenv.New(t)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := env.Client(fmt.Sprint("w", w))
				st := locks.NewState(c, env.ReservationID, "MUTEX", locks.WithRetry(mutex.Jitter(2*time.Millisecond, 10*time.Millisecond)),
					locks.MutexOptions(mutex.WithLease(10*time.Second)))
				for range rounds {
					if !control {
						if _, err := st.Add(context.Background(), "n", 1); err != nil {
							t.Error(err)
						}
						continue
					}
					n, err := st.Get(context.Background(), "n")
					if err != nil {
						t.Error(err)
					}
					time.Sleep(10 * time.Millisecond)
					_ = c.SetSandboxData(context.Background(), env.ReservationID, []cloudshell.SandboxDataKeyValue{
						{Key: locks.StateKey("MUTEX", "n"), Value: fmt.Sprintf("csmutex-state/1 g=0 v=%d", n+1)}})
				}
			}()
		}
		wg.Wait()
		n, err := locks.NewState(env.Client("check"), env.ReservationID, "MUTEX").Get(context.Background(), "n")
		switch {
		case err != nil:
			t.Fatal(err)
		case !control && n != workers*rounds:
			t.Errorf("counter %d after %d increments under the lock", n, workers*rounds)
		case control && n == workers*rounds:
			t.Errorf("the control run without the lock lost no increment: the test cannot fail")
		case control:
			t.Logf("control without the lock: %d of %d increments survived", n, workers*rounds)
		}
	}
}
