package mutex_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mutex"
)

// occupancy fails the test if two critical sections overlap, whoever runs them.
type occupancy struct {
	t      *testing.T
	inside atomic.Int32
	done   atomic.Int32
}

func (o *occupancy) critical(hold time.Duration) {
	if n := o.inside.Add(1); n != 1 {
		o.t.Errorf("%d holders inside the critical section at once", n)
	}
	time.Sleep(hold)
	o.inside.Add(-1)
	o.done.Add(1)
}

// A cohort's members pass the CloudShell lock among themselves: they exclude each other and
// a contender on another host, and cost CloudShell a fraction of a call per critical section.
func TestCohortPassesLocally(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, time.Hour)
		occ := &occupancy{t: t}
		local := env.Client("sidecar")
		// The default lease and bound, as a driver would use them: with 50 ms critical
		// sections, renewals (every 20 s) are rare and the bound spreads one acquisition
		// over up to 64 of them.
		m := mutex.New(local, env.ReservationID, fast(mutex.WithLease(mutex.DefaultLease), mutex.WithCohort(mutex.DefaultCohortBound))...)
		const members, rounds = 16, 8
		phase := func(withRemote bool) (cohortCalls int) {
			before := env.Server.CallsBy("sidecar", "")
			var wg sync.WaitGroup
			for range members {
				wg.Go(func() {
					for range rounds {
						if err := m.With(ctx, func(context.Context) error { occ.critical(50 * time.Millisecond); return nil }); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			if withRemote {
				remote := mutex.New(env.Client("other-host"), env.ReservationID, fast()...)
				wg.Go(func() {
					for range 4 {
						if err := remote.With(ctx, func(context.Context) error { occ.critical(50 * time.Millisecond); return nil }); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			return env.Server.CallsBy("sidecar", "") - before
		}
		// Alone, the cohort spreads each acquisition over many critical sections.
		calls := phase(false)
		if perAcq := float64(calls) / (members * rounds); perAcq > 0.2 {
			t.Errorf("the cohort made %d calls for %d critical sections (%.2f each), want at most 0.2 each", calls, members*rounds, perAcq)
		}
		// With a contender on another host, each member still excludes it, and it gets its
		// turns (the cohort yields at its bound).
		calls = phase(true)
		if got := occ.done.Load(); got != 2*members*rounds+4 {
			t.Fatalf("%d critical sections ran, want %d", got, 2*members*rounds+4)
		}
		t.Logf("with a remote contender: %d cohort calls for %d critical sections", calls, members*rounds)
		if n := countServices(t, env, "MUTEX"); n != 0 {
			t.Errorf("%d lock services left behind", n)
		}
	})
}

// Past its bound the cohort releases the lock in CloudShell even though members still wait.
func TestCohortBoundReleases(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, time.Hour)
		c := env.Client("sidecar")
		m := mutex.New(c, env.ReservationID, fast(mutex.WithCohort(mutex.CohortBound{Passes: 2}))...)
		first, err := m.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan *mutex.Lock, 4)
		for range 4 {
			go func() {
				l, err := m.Lock(ctx)
				if err != nil {
					t.Error(err)
				}
				got <- l
			}()
		}
		time.Sleep(time.Second) // all four queue behind the first member
		held := first
		for range 4 {
			if err := held.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			held = <-got
		}
		if err := held.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		// Five members, at most two per CloudShell acquisition: three acquisitions.
		if adds, removes := writesBy(env, "sidecar", "AddServiceToReservation"), writesBy(env, "sidecar", "RemoveServicesFromReservation"); adds != 3 || removes != 3 {
			t.Errorf("%d adds and %d removals applied, want 3 of each (bound of 2 passes)", adds, removes)
		}
	})
}

// A member holding a lock that is lost learns it through its own Done and Err; the next
// member acquires afresh.
func TestCohortLostLockEndsMember(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, time.Hour)
		c := env.Client("sidecar")
		m := mutex.New(c, env.ReservationID, fast(mutex.WithCohort(mutex.DefaultCohortBound))...)
		l, err := m.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		next := make(chan *mutex.Lock, 1)
		go func() {
			l2, err := m.Lock(ctx)
			if err != nil {
				t.Error(err)
			}
			next <- l2
		}()
		// An administrator force-releases the lock: the holder's next renewal sees it gone.
		if err := env.Client("admin").RemoveServicesFromReservation(ctx, env.ReservationID, []string{"MUTEX"}); err != nil {
			t.Fatal(err)
		}
		<-l.Done()
		if !errors.Is(l.Err(), mutex.ErrLost) {
			t.Fatalf("member Err = %v, want ErrLost", l.Err())
		}
		if err := l.Unlock(ctx); !errors.Is(err, mutex.ErrNotHeld) {
			t.Fatalf("Unlock of a lost member = %v, want ErrNotHeld", err)
		}
		l2 := <-next
		if l2 == nil {
			t.Fatal("the waiting member did not get the lock")
		}
		if l2.Owner().Token == l.Owner().Token {
			t.Fatal("the next member reused the lost acquisition")
		}
		if svc, ok := lockService(t, env, "MUTEX"); !ok || !strings.Contains(svc.Attributes["Mutex Owner"], "token="+l2.Owner().Token) {
			t.Fatalf("the lock service does not carry the new member's record: %+v", svc)
		}
		if err := l2.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TryLock never waits for another member and costs no call; a member that gives up waiting
// leaves the cohort working; a bad bound is a configuration error.
func TestCohortTryLockTimeoutAndValidation(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, time.Hour)
		c := env.Client("sidecar")
		m := mutex.New(c, env.ReservationID, fast(mutex.WithCohort(mutex.DefaultCohortBound))...)
		l, err := m.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Only the holder's renewals may call CloudShell meanwhile: no add, no look at the room.
		tries := func() int {
			return env.Server.CallsBy("sidecar", "AddServiceToReservation") + env.Server.CallsBy("sidecar", "GetSandboxData")
		}
		before := tries()
		if _, err := m.TryLock(ctx); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("TryLock while a member holds = %v, want ErrLocked", err)
		}
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_, err = m.Lock(short)
		cancel()
		var te *mutex.TimeoutError
		if !errors.As(err, &te) || te.Holder.Token != l.Owner().Token {
			t.Fatalf("a member's wait that timed out = %v, want a TimeoutError naming the holder", err)
		}
		if got := tries() - before; got != 0 {
			t.Errorf("waiting behind another member made %d calls", got)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		l2, err := m.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := l2.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		for _, b := range []mutex.CohortBound{{Passes: 0}, {Passes: 1, Hold: -time.Second}} {
			if _, err := mutex.New(c, env.ReservationID, mutex.WithCohort(b)).Lock(ctx); !errors.Is(err, mutex.ErrInvalid) {
				t.Errorf("bound %+v: got %v, want ErrInvalid", b, err)
			}
		}
	})
}
