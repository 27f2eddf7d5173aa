package locks_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
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

func TestRWMutexUncontendedCalls(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("a")
		ctx := ctxTimeout(t, 10*time.Second)
		rw := locks.NewRWMutex(c, env.ReservationID, "TOPO", fast()...)
		// Warm the client's model check (one read-back per client and reservation), so the
		// counts below are every later acquisition's.
		if err := rw.WithExclusive(ctx, func(context.Context, *locks.Hold) error { return nil }); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name    string
			acquire func(context.Context) (*locks.Hold, error)
			want    int
			alias   string
		}{
			{"shared", rw.RLock, 5, "TOPO.read.1"},
			{"exclusive", rw.Lock, 4, "TOPO"},
		} {
			n, by := calls(env, func() {
				h, err := tc.acquire(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if got := h.Info().Aliases; len(got) != 1 || got[0] != tc.alias {
					t.Errorf("%s holds %v, want [%s]", tc.name, got, tc.alias)
				}
				if err := h.Release(ctx); err != nil {
					t.Fatal(err)
				}
			})
			t.Logf("rw %s acquire+release: %d calls %v", tc.name, n, by)
			if n != tc.want {
				t.Errorf("%s acquire+release made %d calls %v, want %d", tc.name, n, by, tc.want)
			}
		}
	})
}

func TestRWMutexReadersShareWritersExclude(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		rw := func(who string) *locks.RWMutex {
			return locks.NewRWMutex(env.Client(who), env.ReservationID, "TOPO", fast()...)
		}
		r1, err := rw("r1").RLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := rw("r2").TryRLock(ctx)
		if err != nil {
			t.Fatalf("a second reader was refused: %v", err)
		}
		if r1.Info().Slot == r2.Info().Slot {
			t.Fatal("two readers in one slot")
		}
		if _, err := rw("w").TryLock(ctx); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("TryLock with readers in = %v, want ErrLocked", err)
		}
		// A writer waits for the readers in; a reader arriving meanwhile waits for the writer
		// (writers have preference).
		wrote := make(chan *locks.Hold)
		go func() {
			h, err := rw("w").Lock(ctx)
			if err != nil {
				t.Error(err)
			}
			wrote <- h
		}()
		time.Sleep(50 * time.Millisecond)
		if _, err := rw("r3").TryRLock(ctx); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("TryRLock while a writer waits = %v, want ErrLocked", err)
		}
		select {
		case <-wrote:
			t.Fatal("the writer got in while readers held the lock")
		default:
		}
		_ = r1.Release(ctx)
		_ = r2.Release(ctx)
		w := <-wrote
		if _, err := rw("r4").TryRLock(ctx); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("TryRLock while a writer holds = %v, want ErrLocked", err)
		}
		if err := w.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if got := aliases(t, env, "TOPO"); len(got) != 0 {
			t.Errorf("left behind: %v", got)
		}
	})
}

// The exclusive side excludes, and is excluded by, drivers that take the plain name the old
// way (the public snippet: add "<name>" without a record, remove it when done).
func TestRWMutexLegacyDriverIsAWriter(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("legacy")
		ctx := ctxTimeout(t, 10*time.Second)
		if err := c.AddServiceToReservation(ctx, env.ReservationID, mutex.DefaultServiceModel, "MUTEX", nil); err != nil {
			t.Fatal(err)
		}
		rw := locks.NewRWMutex(env.Client("a"), env.ReservationID, "MUTEX", fast()...)
		if _, err := rw.TryRLock(ctx); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("TryRLock while a legacy driver holds MUTEX = %v", err)
		}
		if _, err := rw.TryLock(ctx); !errors.Is(err, mutex.ErrLocked) {
			t.Fatalf("TryLock while a legacy driver holds MUTEX = %v", err)
		}
		got := make(chan error, 1)
		go func() {
			h, err := rw.RLock(ctx)
			if err == nil {
				err = h.Release(ctx)
			}
			got <- err
		}()
		time.Sleep(100 * time.Millisecond)
		select {
		case err := <-got:
			t.Fatalf("a reader got in while a legacy driver held MUTEX: %v", err)
		default:
		}
		if err := c.RemoveServicesFromReservation(ctx, env.ReservationID, []string{"MUTEX"}); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatalf("the reader after the legacy driver left: %v", err)
		}
		// And a writer holds MUTEX itself: a legacy driver's add collides.
		h, err := rw.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AddServiceToReservation(ctx, env.ReservationID, mutex.DefaultServiceModel, "MUTEX", nil); err == nil {
			t.Fatal("a legacy driver's add succeeded while a writer held MUTEX")
		}
		_ = h.Release(ctx)
	})
}

// Many readers and writers, random order: never a writer with anyone else, readers together.
func TestRWMutexInvariant(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		const workers, rounds = 8, 4
		ctx := ctxTimeout(t, 2*time.Minute)
		// Latency reorders the calls of readers and writers, so that a reader's add lands
		// between a writer's add and its read, and the other way round.
		env.Server.Faults().Set("*", mockapi.Fault{LatencyJitter: 5 * time.Millisecond})
		var (
			mu                   sync.Mutex
			readers, writers     int
			peakReaders, entries int
		)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), 1))
				rw := locks.NewRWMutex(env.Client(fmt.Sprint("w", w)), env.ReservationID, "TOPO", fast(locks.WithReaders(4))...)
				for range rounds {
					exclusive := r.IntN(3) == 0
					with := rw.WithShared
					if exclusive {
						with = rw.WithExclusive
					}
					err := with(ctx, func(ctx context.Context, h *locks.Hold) error {
						mu.Lock()
						entries++
						if exclusive {
							writers++
						} else {
							readers++
							peakReaders = max(peakReaders, readers)
						}
						if writers > 1 || writers == 1 && readers > 0 {
							t.Errorf("%d writers and %d readers at once", writers, readers)
						}
						mu.Unlock()
						time.Sleep(time.Duration(5+r.IntN(20)) * time.Millisecond)
						mu.Lock()
						if exclusive {
							writers--
						} else {
							readers--
						}
						mu.Unlock()
						return nil
					})
					if err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		if entries != workers*rounds || peakReaders < 2 {
			t.Errorf("%d sections, at most %d readers at once: the test did not exercise sharing", entries, peakReaders)
		}
		if got := aliases(t, env, "TOPO"); len(got) != 0 {
			t.Errorf("left behind: %v", got)
		}
	})
}

// A dead reader does not block writers forever, nor a dead writer readers.
func TestRWMutexRecoversDeadHolders(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("a")
		ctx := ctxTimeout(t, 10*time.Second)
		rw := locks.NewRWMutex(c, env.ReservationID, "TOPO", fast()...)
		deadHolder(t, c, env.ReservationID, "TOPO.read.3")
		w, err := rw.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = w.Release(ctx)
		deadHolder(t, c, env.ReservationID, "TOPO")
		r, err := rw.RLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = r.Release(ctx)
		if got := aliases(t, env, "TOPO"); len(got) != 0 {
			t.Errorf("left behind: %v", got)
		}
	})
}

// slowReaderAdds delays the adds of reader slots: a reader that read "no writer" then adds
// its slot after a writer has added "<name>" and read "no reader".
type slowReaderAdds struct {
	mutex.API
	delay time.Duration
}

func (s slowReaderAdds) AddServiceToReservation(ctx context.Context, resID, model, alias string, attrs []cloudshell.AttributeNameValue) error {
	if strings.Contains(alias, ".read.") {
		time.Sleep(s.delay)
	}
	return s.API.AddServiceToReservation(ctx, resID, model, alias, attrs)
}

// The reader's proof: it proceeds only on a read made after its own add. Its first read
// (before the add) cannot be trusted, and this interleaving is where it would go wrong.
func TestRWMutexReaderChecksAfterItsAdd(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		slow := slowReaderAdds{API: env.Client("r"), delay: 100 * time.Millisecond}
		reader := locks.NewRWMutex(slow, env.ReservationID, "TOPO", fast()...)
		writer := locks.NewRWMutex(env.Client("w"), env.ReservationID, "TOPO", fast()...)
		var writing atomic.Bool
		done := make(chan error)
		go func() {
			done <- reader.WithShared(ctx, func(context.Context, *locks.Hold) error {
				if writing.Load() {
					t.Error("a reader got in while the writer held the lock")
				}
				return nil
			})
		}()
		time.Sleep(20 * time.Millisecond) // the reader has read "no writer" and is adding its slot
		err := writer.WithExclusive(ctx, func(context.Context, *locks.Hold) error {
			writing.Store(true)
			time.Sleep(300 * time.Millisecond) // the reader's add lands meanwhile
			writing.Store(false)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
