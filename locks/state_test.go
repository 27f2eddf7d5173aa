package locks_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
)

func TestStateUncontendedCalls(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("a")
		ctx := ctxTimeout(t, 10*time.Second)
		st := locks.NewState(c, env.ReservationID, "MUTEX", fast()...)
		if _, err := st.Add(ctx, "warm", 1); err != nil { // the client's model check
			t.Fatal(err)
		}
		n, by := calls(env, func() {
			v, err := st.Add(ctx, "deploys", 5)
			if err != nil || v != 5 {
				t.Fatalf("Add = %d, %v", v, err)
			}
		})
		t.Logf("state Add: %d calls %v", n, by)
		if n != 7 {
			t.Errorf("Add made %d calls %v, want 7", n, by)
		}
		// Under a lock already held: only the read, the checks and the write.
		err := mutex.With(ctx, c, env.ReservationID, func(ctx context.Context) error {
			l, _ := mutex.HeldLock(ctx)
			n, by = calls(env, func() {
				if v, err := st.Under(l).Add(ctx, "deploys", -2); err != nil || v != 3 {
					t.Errorf("Add under a held lock = %d, %v", v, err)
				}
			})
			return nil
		}, mutex.WithLease(lease))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("state Add under a held lock: %d calls %v", n, by)
		if n != 4 {
			t.Errorf("Add under a held lock made %d calls %v, want 4", n, by)
		}
		snap, _ := env.Server.Snapshot(env.ReservationID)
		if got := snap.SandboxData[locks.StateKey("MUTEX", "deploys")]; got != "csmutex-state/1 g=2 v=3" {
			t.Errorf("stored %q", got)
		}
	})
}

// No lost or duplicated increment, and no value allocated twice, with many writers.
func TestStateConcurrentAddAndAllocate(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		env.Server.Faults().Set("*", mockapi.Fault{LatencyJitter: 3 * time.Millisecond})
		ctx := ctxTimeout(t, 2*time.Minute)
		const workers, rounds = 6, 5
		vlans := locks.Range{Lo: 100, Hi: 199}
		var (
			mu  sync.Mutex
			got []int64
		)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st := locks.NewState(env.Client(fmt.Sprint("w", w)), env.ReservationID, "MUTEX", fast()...)
				for range rounds {
					if _, err := st.Add(ctx, "count", 1); err != nil {
						t.Error(err)
					}
					v, err := st.Allocate(ctx, "vlan", vlans)
					if err != nil {
						t.Error(err)
						continue
					}
					mu.Lock()
					got = append(got, v)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		st := locks.NewState(env.Client("check"), env.ReservationID, "MUTEX")
		if n, err := st.Get(ctx, "count"); err != nil || n != workers*rounds {
			t.Errorf("counter = %d, %v; want %d", n, err, workers*rounds)
		}
		slices.Sort(got)
		if len(slices.Compact(slices.Clone(got))) != workers*rounds || got[0] != 100 || got[len(got)-1] != 100+workers*rounds-1 {
			t.Errorf("allocated %v: duplicates or gaps", got)
		}
		stored, err := st.Allocated(ctx, "vlan")
		if err != nil || !slices.Equal(stored, got) {
			t.Errorf("stored allocation %v (%v), handed out %v", stored, err, got)
		}
	})
}

func TestStateAllocateFreeExhausted(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		st := locks.NewState(env.Client("a"), env.ReservationID, "MUTEX", fast()...)
		r := locks.Range{Lo: 10, Hi: 12}
		for want := int64(10); want <= 12; want++ {
			if v, err := st.Allocate(ctx, "ip", r); err != nil || v != want {
				t.Fatalf("Allocate = %d, %v; want %d", v, err, want)
			}
		}
		if _, err := st.Allocate(ctx, "ip", r); !errors.Is(err, locks.ErrExhausted) {
			t.Fatalf("Allocate from a full range = %v", err)
		}
		if err := st.Free(ctx, "ip", r, 11); err != nil {
			t.Fatal(err)
		}
		if err := st.Free(ctx, "ip", r, 11); !errors.Is(err, mutex.ErrInvalid) {
			t.Errorf("freeing twice = %v, want an invalid-argument error", err)
		}
		if v, err := st.Allocate(ctx, "ip", r); err != nil || v != 11 {
			t.Errorf("Allocate after Free = %d, %v; want 11", v, err)
		}
		if _, err := st.Allocate(ctx, "ip", locks.Range{Lo: 10, Hi: 20}); !errors.Is(err, mutex.ErrInvalid) {
			t.Errorf("another range for the same key = %v", err)
		}
		for _, bad := range []string{"", "a b", "x=y", string(make([]byte, 65))} {
			if _, err := st.Add(ctx, bad, 1); !errors.Is(err, mutex.ErrInvalid) {
				t.Errorf("key %q: %v", bad, err)
			}
		}
		if _, err := st.Allocate(ctx, "big", locks.Range{Lo: 0, Hi: locks.MaxRangeSize}); !errors.Is(err, mutex.ErrInvalid) {
			t.Errorf("a range of %d values = %v", locks.MaxRangeSize+1, err)
		}
	})
}

// sneakyWriter writes the state key behind the holder's back right after its first read:
// what a writer that lost its lock without knowing it would do.
type sneakyWriter struct {
	mutex.API
	other mutex.API
	key   string
	reads atomic.Int32
}

func (s *sneakyWriter) GetSandboxData(ctx context.Context, resID string) ([]cloudshell.SandboxDataKeyValue, error) {
	d, err := s.API.GetSandboxData(ctx, resID)
	if s.reads.Add(1) == 1 {
		_ = s.other.SetSandboxData(ctx, resID, []cloudshell.SandboxDataKeyValue{{Key: s.key, Value: "csmutex-state/1 g=7 v=100"}})
	}
	return d, err
}

func TestStateCheckBeforeWrite(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		key := locks.StateKey("MUTEX", "n")
		api := &sneakyWriter{API: env.Client("a"), other: env.Client("b"), key: key}
		_, err := locks.NewState(api, env.ReservationID, "MUTEX", fast()...).Add(ctx, "n", 1)
		var ce *locks.ConflictError
		if !errors.As(err, &ce) || !errors.Is(err, locks.ErrConflict) || !errors.Is(err, mutex.ErrLost) || ce.Read != 0 || ce.Now != 7 {
			t.Fatalf("Add with a write behind its back = %v, want a ConflictError (0 read, 7 found)", err)
		}
		snap, _ := env.Server.Snapshot(env.ReservationID)
		if got := snap.SandboxData[key]; got != "csmutex-state/1 g=7 v=100" {
			t.Errorf("the newer value was overwritten: %q", got)
		}
		// A lock taken away (a legacy driver's remove, a force release) is caught by the
		// fresh read before the write.
		c := env.Client("c")
		err = mutex.With(ctx, c, env.ReservationID, func(ctx context.Context) error {
			l, _ := mutex.HeldLock(ctx)
			if _, err := mutex.ForceRelease(ctx, c, env.ReservationID); err != nil {
				t.Fatal(err)
			}
			_, err := locks.NewState(c, env.ReservationID, "MUTEX").Under(l).Add(ctx, "n", 1)
			if !errors.Is(err, mutex.ErrLost) {
				t.Errorf("Add under a lock taken away = %v, want ErrLost", err)
			}
			return nil
		}, mutex.WithLease(lease))
		if !errors.Is(err, mutex.ErrLost) {
			t.Errorf("With = %v", err)
		}
		snap, _ = env.Server.Snapshot(env.ReservationID)
		if got := snap.SandboxData[key]; got != "csmutex-state/1 g=7 v=100" {
			t.Errorf("written without the lock: %q", got)
		}
		// A value State did not write is refused, not overwritten.
		_ = c.SetSandboxData(ctx, env.ReservationID, []cloudshell.SandboxDataKeyValue{{Key: locks.StateKey("MUTEX", "junk"), Value: "42"}})
		if _, err := locks.NewState(c, env.ReservationID, "MUTEX", fast()...).Add(ctx, "junk", 1); !errors.Is(err, locks.ErrCorrupt) {
			t.Errorf("Add over a foreign value = %v, want ErrCorrupt", err)
		}
	})
}
