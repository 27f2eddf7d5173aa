package mutex_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
	"github.com/rs/zerolog"
)

// Property 1: a live holder's lock is never broken, whatever the clocks say. The holder and
// the waiter run 10 minutes apart in opposite directions.
func TestLiveHolderIsNeverBroken(t *testing.T) {
	for _, skew := range []time.Duration{0, 10 * time.Minute} {
		t.Run("skew "+skew.String(), func(t *testing.T) {
			virtual(t, func(t *testing.T, env *testenv.Env) {
				ctx := ctxTimeout(t, 20*time.Second)
				holder, err := mutex.New(env.Client("holder"), env.ReservationID,
					fast(mutex.WithClock(offsetClock{+skew}))...).Lock(ctx)
				if err != nil {
					t.Fatal(err)
				}
				// Wait more than four leases while the holder lives.
				hold := 4*lease + lease/2
				_, err = mutex.New(env.Client("waiter"), env.ReservationID,
					fast(mutex.WithClock(offsetClock{-skew}))...).Lock(ctxTimeout(t, hold))
				if !errors.Is(err, mutex.ErrTimeout) {
					t.Fatalf("waiter got %v while the holder was alive", err)
				}
				if holder.Err() != nil {
					t.Fatalf("holder lost its lock: %v", holder.Err())
				}
				// Renewal load: at most one heartbeat write per lease/3, and some at all.
				beats := writesBy(env, "holder", "SetSandboxData")
				if max := int(hold/(lease/3)) + 1; beats == 0 || beats > max {
					t.Errorf("%d heartbeat writes in %s, want 1..%d", beats, hold, max)
				}
				if err := holder.Unlock(ctx); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// A holder that dies (stops renewing without releasing) is recovered: another waiter gets the
// lock after the lease, by its own observation, and not before.
func TestAbandonedLockRecoveredAfterLease(t *testing.T) {
	for _, skew := range []time.Duration{0, 10 * time.Minute} {
		t.Run("skew "+skew.String(), func(t *testing.T) {
			virtual(t, func(t *testing.T, env *testenv.Env) {
				ctx := ctxTimeout(t, 20*time.Second)
				dead, err := mutex.New(env.Client("dead"), env.ReservationID, fast(mutex.WithClock(offsetClock{skew}))...).Lock(ctx)
				if err != nil {
					t.Fatal(err)
				}
				dead.Abandon()
				start := time.Now()
				l, err := mutex.New(env.Client("waiter"), env.ReservationID, fast(mutex.WithClock(offsetClock{-skew}))...).Lock(ctx)
				if err != nil {
					t.Fatal(err)
				}
				waited := time.Since(start)
				if waited < lease {
					t.Fatalf("acquired after %s, before the lease (%s) elapsed", waited, lease)
				}
				if waited > lease+retryMax+time.Second { // generous: -race on a loaded 2-core box
					t.Fatalf("acquired only after %s", waited)
				}
				if n := countServices(t, env, ".break."); n != 0 {
					t.Fatalf("%d break locks left behind", n)
				}
				l.Unlock(ctx)
			})
		})
	}
}

// Property 4: a partitioned holder learns it lost the lock before anyone else acquires it,
// its fn's ctx is canceled with ErrLost, and it removes nothing afterwards.
func TestPartitionedHolderStopsBeforeOthersAcquire(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 20*time.Second)
		var lostAt, acquiredAt atomic.Int64
		var waiterToken atomic.Value
		var waiterLock atomic.Pointer[mutex.Lock]
		defer func() {
			if l := waiterLock.Load(); l != nil {
				l.Unlock(ctx) // a lock left held renews forever: the bubble would never end
			}
		}()

		fnErr := make(chan error, 1)
		go func() {
			fnErr <- mutex.With(ctx, env.Client("holder"), env.ReservationID, func(fctx context.Context) error {
				env.Server.Faults().Set("*", mockapi.Fault{Client: "holder", FailBeforeCommitRate: 1})
				go func() {
					l, err := mutex.New(env.Client("waiter"), env.ReservationID, fast()...).Lock(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					acquiredAt.Store(time.Now().UnixNano())
					waiterToken.Store(l.Owner().Token)
					waiterLock.Store(l)
				}()
				<-fctx.Done()
				lostAt.Store(time.Now().UnixNano())
				if cause := context.Cause(fctx); !errors.Is(cause, mutex.ErrLost) {
					t.Errorf("fn ctx canceled with %v, want ErrLost", cause)
				}
				// Heal the partition before With releases: it must still remove nothing.
				env.Server.Faults().Clear()
				return nil
			}, fast()...)
		}()
		err := <-fnErr
		if !errors.Is(err, mutex.ErrLost) {
			t.Fatalf("With = %v, want ErrLost", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for acquiredAt.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if acquiredAt.Load() == 0 {
			t.Fatal("waiter never acquired")
		}
		if lostAt.Load() >= acquiredAt.Load() {
			t.Fatalf("holder noticed the loss %s after the waiter acquired", time.Duration(lostAt.Load()-acquiredAt.Load()))
		}
		if svc, _ := lockService(t, env, "MUTEX"); !strings.Contains(svc.Attributes["Mutex Owner"], waiterToken.Load().(string)) {
			t.Fatal("the old holder removed the new holder's lock")
		}
	})
}

// The holder learns that its record was removed behind its back (an administrator's force
// release, or a legacy driver's unconditional release) within about lease/3.
func TestHolderLearnsOfRemoval(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		l, err := mutex.New(env.Client("holder"), env.ReservationID, fast()...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.Client("admin").RemoveServicesFromReservation(ctx, env.ReservationID, []string{"MUTEX"}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-l.Done():
		case <-time.After(lease + time.Second):
			t.Fatal("holder did not notice the removal")
		}
		if !errors.Is(l.Err(), mutex.ErrLost) {
			t.Fatalf("Err = %v", l.Err())
		}
		if err := l.Unlock(ctx); !errors.Is(err, mutex.ErrNotHeld) {
			t.Fatalf("Unlock after loss = %v", err)
		}
	})
}

// Property 3: sixteen waiters find the same stale lock; exactly one becomes the new holder,
// whatever the interleaving (random latency on every call reorders them each round).
func TestConcurrentBreakersYieldOneHolder(t *testing.T) {
	const waiters, rounds = 16, 6
	virtual(t, func(t *testing.T, env *testenv.Env) {
		env.Server.Faults().Set("*", mockapi.Fault{LatencyJitter: 3 * time.Millisecond})
		clients := make([]*cloudshell.Client, waiters)
		for i := range clients {
			clients[i] = env.Client("w")
		}
		for round := 0; round < rounds; round++ {
			resID := env.Server.CreateReservation("breakers", "admin")
			ctx := ctxTimeout(t, 30*time.Second)
			dead, err := mutex.New(clients[0], resID, fast()...).Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			dead.Abandon()

			var winners atomic.Int32
			var wg sync.WaitGroup
			window := 3 * lease
			for i := 0; i < waiters; i++ {
				wg.Add(1)
				go func(c *cloudshell.Client) {
					defer wg.Done()
					wctx, cancel := context.WithTimeout(ctx, window)
					defer cancel()
					l, err := mutex.New(c, resID, fast()...).Lock(wctx)
					if err != nil {
						if !errors.Is(err, mutex.ErrTimeout) {
							t.Errorf("waiter: %v", err)
						}
						return
					}
					winners.Add(1)
					// Hold until every other waiter has given up.
					time.Sleep(time.Until(time.Now().Add(window)))
					if err := l.Unlock(ctx); err != nil {
						t.Errorf("winner's Unlock: %v", err)
					}
				}(clients[i])
			}
			wg.Wait()
			if got := winners.Load(); got != 1 {
				t.Fatalf("round %d: %d holders after breaking one stale lock, want exactly 1", round, got)
			}
			snap, _ := env.Server.Snapshot(resID)
			if len(snap.Services) != 0 {
				t.Fatalf("round %d: services left behind: %+v", round, snap.Services)
			}
		}
	}, mockapi.WithSeed(42))
}

// A breaker that died holding its break lock does not block recovery: the break lock is
// broken one level down, then the lock.
func TestStaleBreakLockIsBrokenToo(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		planter := env.Client("planter")
		plant := func(alias, token string) {
			rec := mutex.Owner{Name: "crashed", Host: "gone", PID: 1, Token: token, Lease: 100 * time.Millisecond}.Record()
			if err := planter.AddServiceToReservation(ctx, env.ReservationID, "Mutex Service", alias,
				[]cloudshell.AttributeNameValue{{Name: "Mutex Owner", Value: rec}}); err != nil {
				t.Fatal(err)
			}
		}
		plant("MUTEX", "aaaaaaaaaaaaaaaa")
		plant("MUTEX.break.aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb")
		l, err := mutex.New(env.Client("waiter"), env.ReservationID, fast()...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock(ctx)
		if n := countServices(t, env, ".break."); n != 0 {
			t.Fatalf("%d break locks left", n)
		}
	})
}

// Leases add at most one read per retry for waiters (in fact one per lease: the heartbeat),
// on top of the add and the read that names the holder.
func TestWaiterLoadPerRetry(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		held, err := mutex.New(env.Client("holder"), env.ReservationID, fast(mutex.WithLease(time.Hour))...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Unlock(ctx)
		adds, details, data := env.Server.Calls("AddServiceToReservation"), env.Server.Calls("GetReservationDetails"), env.Server.Calls("GetSandboxData")
		// Without the waiting room, whose own reads are counted in queue_test.go.
		_, err = mutex.New(env.Client("waiter"), env.ReservationID, fast(mutex.WithQueue(false))...).Lock(ctxTimeout(t, 100*time.Millisecond))
		var te *mutex.TimeoutError
		if !errors.As(err, &te) {
			t.Fatal(err)
		}
		tries := env.Server.Calls("AddServiceToReservation") - adds
		if d := env.Server.Calls("GetReservationDetails") - details; d > tries {
			t.Errorf("%d details reads for %d tries", d, tries)
		}
		// The heartbeat is read at the first sighting, then only once a lease has passed.
		if s := env.Server.Calls("GetSandboxData") - data; s != 1 || tries < 3 {
			t.Errorf("%d heartbeat reads in %d tries within one lease, want 1", s, tries)
		}
	})
}

// Property 2: a holder's renewal never overwrites a newer holder's record. A holder that was
// broken (it stopped renewing) wakes up and renews once more: it writes only its own
// heartbeat key, learns of the loss, and the new holder's record and heartbeat are untouched.
func TestZombieRenewalTouchesOnlyItsOwnRecord(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 20*time.Second)
		zombie, err := mutex.New(env.Client("zombie"), env.ReservationID, fast()...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		zombie.Abandon()
		next, err := mutex.New(env.Client("next"), env.ReservationID, fast()...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer next.Unlock(ctx)
		nextKey := mutex.HeartbeatKey(next.Owner().Token)
		before, _ := env.Server.Snapshot(env.ReservationID)
		for deadline := time.Now().Add(5 * time.Second); before.SandboxData[nextKey] == "" && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond) // until the new holder has heartbeated
			before, _ = env.Server.Snapshot(env.ReservationID)
		}

		err = zombie.RenewNow(ctx)
		if !errors.Is(err, mutex.ErrLost) {
			t.Fatalf("zombie renewal = %v, want ErrLost", err)
		}
		after, _ := env.Server.Snapshot(env.ReservationID)
		if svc, _ := lockService(t, env, "MUTEX"); !strings.Contains(svc.Attributes["Mutex Owner"], next.Owner().Token) {
			t.Fatal("the new holder's record changed")
		}
		if before.SandboxData[nextKey] == "" || after.SandboxData[nextKey] != before.SandboxData[nextKey] {
			t.Fatalf("new holder's heartbeat %q -> %q", before.SandboxData[nextKey], after.SandboxData[nextKey])
		}
		for _, m := range env.Server.History(env.ReservationID) {
			if m.Method == "SetServiceAttributesValues" {
				t.Fatalf("a lock record was rewritten: %+v", m)
			}
			if m.Method == "SetSandboxData" && m.Client == "zombie" &&
				m.Detail != "set sandbox data "+mutex.HeartbeatKey(zombie.Owner().Token) {
				t.Fatalf("the zombie wrote someone else's key: %s", m.Detail)
			}
		}
	})
}

// The administrator's force-release logs who broke which owner.
func TestForceReleaseLogsWhoBrokeWhom(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		held, err := mutex.New(env.Client("a"), env.ReservationID, fast(mutex.WithOwner("deploy-7"))...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var log strings.Builder
		holder, err := mutex.ForceRelease(ctx, env.Client("admin"), env.ReservationID,
			mutex.WithOwner("ops-alice"), mutex.WithLogger(zerolog.New(&log)))
		if err != nil || holder.Token != held.Owner().Token {
			t.Fatalf("ForceRelease = %+v, %v", holder, err)
		}
		if out := log.String(); !strings.Contains(out, `"broken_by":"ops-alice"`) || !strings.Contains(out, "deploy-7") {
			t.Fatalf("log %q does not say who broke which owner", out)
		}
		if _, err := mutex.ForceRelease(ctx, env.Client("admin"), env.ReservationID); !errors.Is(err, mutex.ErrNotHeld) {
			t.Fatalf("ForceRelease of nothing = %v, want ErrNotHeld", err)
		}
		select {
		case <-held.Done():
		case <-time.After(lease + time.Second):
			t.Fatal("the holder never learned its lock was force-released")
		}
	})
}
