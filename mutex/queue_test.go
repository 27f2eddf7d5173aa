package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
)

// roomEntries returns the waiting room's non-empty entries in the mock's sandbox data, and
// how many room keys exist at all.
func roomEntries(t *testing.T, env *testenv.Env) (live map[string]string, keys int) {
	t.Helper()
	snap, err := env.Server.Snapshot(env.ReservationID)
	if err != nil {
		t.Fatal(err)
	}
	live = map[string]string{}
	for k, v := range snap.SandboxData {
		if strings.HasPrefix(k, "csmutex.queue.") {
			keys++
			if v != "" {
				live[k] = v
			}
		}
	}
	return live, keys
}

// Waiters take turns in the order they arrived, and leave the room empty behind them.
func TestQueueTakesTurnsInArrivalOrder(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, time.Hour)
		holder, err := mutex.New(env.Client("holder"), env.ReservationID, fast()...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var (
			mu    sync.Mutex
			order []int
			wg    sync.WaitGroup
		)
		const n = 6
		for i := range n {
			c := env.Client(fmt.Sprintf("w%d", i))
			wg.Go(func() {
				err := mutex.New(c, env.ReservationID, fast()...).With(ctx, func(context.Context) error {
					mu.Lock()
					order = append(order, i)
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			})
			time.Sleep(50 * time.Millisecond) // w0 arrives first, then w1, …
		}
		time.Sleep(time.Second)
		if live, _ := roomEntries(t, env); len(live) != n {
			t.Errorf("%d waiters in the room while the lock is held, want %d: %v", len(live), n, live)
		}
		if err := holder.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		for i, w := range order {
			if w != i {
				t.Fatalf("turns taken in order %v, want arrival order", order)
			}
		}
		time.Sleep(time.Second) // leaving runs in the background of the new holder
		if live, keys := roomEntries(t, env); len(live) != 0 || keys > n {
			t.Errorf("the room holds %d entries (%d keys) after everyone left: %v", len(live), keys, live)
		}
	})
}

// Only the head of the room polls the lock; the others read the room, slowly.
func TestQueueOnlyTheHeadPollsTheLock(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, time.Hour)
		holder, err := mutex.New(env.Client("holder"), env.ReservationID, fast(mutex.WithLease(time.Hour))...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for i := range 5 {
			c := env.Client(fmt.Sprintf("w%d", i))
			wg.Go(func() { _, _ = mutex.New(c, env.ReservationID, fast()...).Lock(wctx) })
			time.Sleep(10 * time.Millisecond)
		}
		wg.Wait()
		head := env.Server.CallsBy("w0", "AddServiceToReservation")
		if head < 20 {
			t.Errorf("the head tried the lock %d times in 2 s, want it polling", head)
		}
		// One add found the lock held; after that, a waiter behind others only reads the
		// room (the holder's lease is an hour: no look at the holder is due).
		for i := 1; i < 5; i++ {
			if adds := env.Server.CallsBy(fmt.Sprintf("w%d", i), "AddServiceToReservation"); adds != 1 {
				t.Errorf("waiter %d behind the head tried the lock %d times, want 1", i, adds)
			}
		}
		if err := holder.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// A waiter that died in the room holds up the others for one ttl at most, once it reaches the
// front; a full room, or one that cannot be used, only means polling without it.
func TestQueueDeadFullOrFailingRoom(t *testing.T) {
	plant := func(t *testing.T, env *testenv.Env, n int, ttl time.Duration) {
		var kv []cloudshell.SandboxDataKeyValue
		for i := range n {
			kv = append(kv, cloudshell.SandboxDataKeyValue{Key: fmt.Sprintf("csmutex.queue.MUTEX.%02d", i),
				Value: fmt.Sprintf("t=%d id=ghost%02d seq=1 ttl=%s", i+1, i, ttl)})
		}
		if err := env.Client("admin").SetSandboxData(context.Background(), env.ReservationID, kv); err != nil {
			t.Fatal(err)
		}
	}
	cases := map[string]struct {
		setup func(t *testing.T, env *testenv.Env)
		// within is how long after the holder's release the waiter must have the lock.
		within time.Duration
	}{
		"dead entries ahead": {func(t *testing.T, env *testenv.Env) { plant(t, env, 2, 300*time.Millisecond) }, 2 * time.Second},
		"room full":          {func(t *testing.T, env *testenv.Env) { plant(t, env, 64, time.Hour) }, 200 * time.Millisecond},
		"sandbox data failing": {func(t *testing.T, env *testenv.Env) {
			env.Server.Faults().Set("GetSandboxData", mockapi.Fault{Client: "waiter", ErrorRate: 1})
			env.Server.Faults().Set("SetSandboxData", mockapi.Fault{Client: "waiter", ErrorRate: 1})
		}, 200 * time.Millisecond},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			virtual(t, func(t *testing.T, env *testenv.Env) {
				ctx := ctxTimeout(t, time.Hour)
				tc.setup(t, env)
				holder, err := mutex.New(env.Client("holder"), env.ReservationID, fast(mutex.WithLease(time.Hour))...).Lock(ctx)
				if err != nil {
					t.Fatal(err)
				}
				got := make(chan time.Time, 1)
				go func() {
					l, err := mutex.New(env.Client("waiter"), env.ReservationID, fast()...).Lock(ctx)
					if err != nil {
						t.Error(err)
						close(got)
						return
					}
					got <- time.Now()
					_ = l.Unlock(ctx)
				}()
				time.Sleep(100 * time.Millisecond)
				released := time.Now()
				if err := holder.Unlock(ctx); err != nil {
					t.Fatal(err)
				}
				at, ok := <-got
				if !ok {
					return
				}
				if wait := at.Sub(released); wait > tc.within {
					t.Errorf("the waiter got the lock %s after its release, want within %s", wait, tc.within)
				}
				if name == "dead entries ahead" {
					// The waiter that found them dead cleared them for everyone else.
					time.Sleep(time.Second)
					if live, _ := roomEntries(t, env); len(live) != 0 {
						t.Errorf("dead entries still in the room: %v", live)
					}
				}
			})
		})
	}
}

// A lock nobody else wants costs 3 calls; right after a contended turn, one more (a look at
// the room, so that a releaser asking again queues behind the waiters instead of barging).
func TestQueueCostsNothingUncontended(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, time.Hour)
		c := env.Client("driver")
		cycle := func() int {
			before := env.Server.CallsBy("driver", "")
			l, err := mutex.New(c, env.ReservationID, fast()...).Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			return env.Server.CallsBy("driver", "") - before
		}
		cycle() // the first lock of a client in a reservation checks the model
		if n := cycle(); n != 3 {
			t.Fatalf("uncontended cycle: %d calls, want 3", n)
		}
		holder, err := mutex.New(env.Client("other"), env.ReservationID, fast()...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() { time.Sleep(100 * time.Millisecond); _ = holder.Unlock(ctx) }()
		cycle() // waits: contended
		time.Sleep(10 * time.Millisecond)
		if n := cycle(); n != 4 {
			t.Errorf("cycle right after a contended one: %d calls, want 4 (a look at the room)", n)
		}
		time.Sleep(2 * lease)
		if n := cycle(); n != 3 {
			t.Errorf("cycle a lease after contention: %d calls, want 3", n)
		}
	})
}

// A higher priority goes ahead, but only of waiters that arrived up to 16 joins per priority
// level before it: a low priority ages ahead of later arrivals and is never starved.
func TestQueuePriorityWithAgeing(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, time.Hour)
		holder, err := mutex.New(env.Client("holder"), env.ReservationID, fast(mutex.WithLease(time.Hour))...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var (
			mu    sync.Mutex
			order []string
			wg    sync.WaitGroup
		)
		wait := func(name string, priority int) {
			c := env.Client(name)
			wg.Go(func() {
				err := mutex.New(c, env.ReservationID, fast(mutex.WithPriority(priority))...).With(ctx, func(context.Context) error {
					mu.Lock()
					order = append(order, name)
					mu.Unlock()
					time.Sleep(5 * time.Millisecond)
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			})
			time.Sleep(30 * time.Millisecond) // one joins after the other
		}
		wait("first", 0) // heads the room: keeps its turn whatever arrives
		wait("low", 0)
		const highs = 20
		for i := range highs {
			wait(fmt.Sprintf("high%02d", i), 1)
		}
		time.Sleep(time.Second)
		if err := holder.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if order[0] != "first" {
			t.Fatalf("the head lost its turn to a later, higher-priority waiter: %v", order)
		}
		low := slices.Index(order, "low")
		// "first" holds ticket 1 and "low" ticket 2 (place 2 and 4 in half places); high
		// waiter k (k = 0, 1, …) holds ticket k+3, placed at 2(k+3-16) but not before 3, just
		// behind the head: the first 15 go ahead of "low", the 16th ties and yields to the
		// older ticket, the rest come after.
		if low != 16 {
			t.Errorf("the low-priority waiter came %d-th of %d, want 17th: %v", low+1, len(order), order)
		}
		for i, name := range slices.DeleteFunc(slices.Clone(order[1:]), func(n string) bool { return n == "low" }) {
			if name != fmt.Sprintf("high%02d", i) {
				t.Fatalf("high-priority waiters out of arrival order: %v", order)
			}
		}
		if _, err := mutex.New(env.Client("x"), env.ReservationID, mutex.WithPriority(mutex.MaxPriority+1)).Lock(ctx); !errors.Is(err, mutex.ErrInvalid) {
			t.Errorf("priority above MaxPriority: %v, want ErrInvalid", err)
		}
	})
}

// Waiters reads every lock's room in turn order, priorities included, and ignores what is
// not an entry (cleared slots, foreign keys, damaged values).
func TestWaitersReadsRooms(t *testing.T) {
	data := []cloudshell.SandboxDataKeyValue{
		{Key: "csmutex.queue.MUTEX.00", Value: "t=3 id=c seq=1 ttl=1m0s"},
		{Key: "csmutex.queue.MUTEX.01", Value: "t=1 id=a seq=4 ttl=1m0s"},
		{Key: "csmutex.queue.MUTEX.02", Value: "t=40 id=p seq=1 ttl=1m0s p=2 f=3"},
		{Key: "csmutex.queue.MUTEX.03", Value: ""},
		{Key: "csmutex.queue.MUTEX.04", Value: "garbage"},
		{Key: "csmutex.queue.SWITCH.1.07", Value: "t=1 id=s seq=1 ttl=2m0s"},
		{Key: "csmutex.queue.X.123", Value: "t=1 id=bad-slot seq=1 ttl=1m0s"},
		{Key: "csmutex.heartbeat.ab", Value: "1 held=1s"},
	}
	got := mutex.Waiters(data)
	ids := func(ws []mutex.Waiter) (s []string) {
		for _, w := range ws {
			s = append(s, w.ID)
		}
		return s
	}
	// p (ticket 40, priority 2: place 2·(40−32) = 16) goes after a (2) and c (6).
	if m := ids(got["MUTEX"]); !slices.Equal(m, []string{"a", "c", "p"}) {
		t.Errorf("MUTEX room %v, want [a c p]", m)
	}
	if s := got["SWITCH.1"]; len(s) != 1 || s[0].TTL != 2*time.Minute {
		t.Errorf("SWITCH.1 room %+v", s)
	}
	if len(got) != 2 {
		t.Errorf("rooms %v, want MUTEX and SWITCH.1 only", got)
	}
}

// Clearing a waiter's room entry runs beside its critical section, not before it; but Unlock
// waits for it, so no work of the lock's outlives Unlock: when Unlock returns, the entry is
// gone, even when clearing it is slower than the critical section.
func TestUnlockWaitsForLeavingTheRoom(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, time.Hour)
		holder, err := mutex.New(env.Client("holder"), env.ReservationID, fast()...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan *mutex.Lock)
		go func() {
			l, err := mutex.New(env.Client("w"), env.ReservationID, fast()...).Lock(ctx)
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		time.Sleep(time.Second)
		if live, _ := roomEntries(t, env); len(live) != 1 {
			t.Fatalf("%d entries in the room, want the waiter's", len(live))
		}
		// From now on, every write of sandbox data (the waiter's leaving) takes 2 s.
		env.Server.Faults().Set("SetSandboxData", mockapi.Fault{Client: "w", Latency: 2 * time.Second})
		if err := holder.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		l := <-got
		if l == nil {
			return
		}
		if live, _ := roomEntries(t, env); len(live) != 1 {
			t.Fatalf("the entry was cleared before the critical section began (%d entries); the test needs it pending", len(live))
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if live, _ := roomEntries(t, env); len(live) != 0 {
			t.Errorf("Unlock returned with the waiter's room entry still there: %v", live)
		}
	})
}

// Waiters that find the lock held at the same moment all join a room that looks empty to
// each of them. They must still end up one entry each, in one order that they all agree on,
// with only the first of them polling the lock: before, they all took the first free slot
// (overwriting each other) and all believed they headed the room, so they polled the lock
// like the snippet's drivers and took turns at random.
func TestQueueSimultaneousArrivals(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, time.Hour)
		holder, err := mutex.New(env.Client("holder"), env.ReservationID, fast(mutex.WithLease(time.Hour))...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Every write takes 20 ms to land: all five read the room before any joins it.
		env.Server.Faults().Set("SetSandboxData", mockapi.Fault{Latency: 20 * time.Millisecond})
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		const n = 5
		for i := range n {
			c := env.Client(fmt.Sprintf("w%d", i))
			wg.Go(func() { _, _ = mutex.New(c, env.ReservationID, fast()...).Lock(wctx) })
		}
		time.Sleep(time.Second)
		if live, _ := roomEntries(t, env); len(live) != n {
			t.Errorf("%d entries in the room, want one per waiter (%d): %v", len(live), n, live)
		}
		before := map[string]int{}
		for i := range n {
			w := fmt.Sprintf("w%d", i)
			before[w] = env.Server.CallsBy(w, "AddServiceToReservation")
		}
		time.Sleep(time.Second)
		polling := 0
		for w, b := range before {
			if env.Server.CallsBy(w, "AddServiceToReservation")-b > 2 {
				polling++
			}
		}
		if polling != 1 {
			t.Errorf("%d of %d waiters polled the lock in a second, want only the head", polling, n)
		}
		wg.Wait()
		if err := holder.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// The waiting room is read from sandbox data that anyone with access to the reservation can
// write. Whatever its keys and values hold, reading it must not panic, must keep only entries
// that someone refreshes (an id and a ttl), and every reader must order them alike.
func FuzzWaiters(f *testing.F) {
	f.Add("csmutex.queue.MUTEX.00", "t=1 id=a seq=1 ttl=1m0s", "csmutex.queue.MUTEX.01", "t=1 id=b seq=2 ttl=1m0s p=9 f=3")
	f.Add("csmutex.queue.MUTEX.63", "t=-5 id=x ttl=1ns p=10", "csmutex.queue.A.B.07", "t=99999999999999999999 id= ttl=-1s")
	f.Add("csmutex.queue..00", "id=z ttl=1h", "csmutex.queue.MUTEX.0x", "t=2 id=y ttl=1h")
	f.Add("csmutex.queue.MUTEX.00", "t=9223372036854775807 id=big ttl=1h", "csmutex.queue.MUTEX.01", "t=1 id=b ttl=1h p=9 f=-9223372036854775808")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		data := []cloudshell.SandboxDataKeyValue{{Key: k1, Value: v1}, {Key: k2, Value: v2}}
		got := mutex.Waiters(data)
		reversed := mutex.Waiters([]cloudshell.SandboxDataKeyValue{data[1], data[0]})
		if fmt.Sprint(got) != fmt.Sprint(reversed) {
			t.Fatalf("the order depends on the reading order:\n%v\n%v", got, reversed)
		}
		n := 0
		for lock, ws := range got {
			if lock == "" || len(ws) == 0 {
				t.Fatalf("lock %q with %d waiters", lock, len(ws))
			}
			for _, w := range ws {
				n++
				if w.ID == "" || w.TTL <= 0 || w.Priority < 0 || w.Priority > mutex.MaxPriority || w.Ticket < 1 || w.Ticket > 1<<40 {
					t.Fatalf("an entry nobody refreshes, or a number out of range: %+v", w)
				}
			}
		}
		if n > 2 {
			t.Fatalf("%d waiters from 2 entries", n)
		}
	})
}
