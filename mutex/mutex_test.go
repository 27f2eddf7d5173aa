package mutex_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
	"github.com/csmutex/csmutex/mutexpkg"
)

func TestLockUnlock(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("driver-1")
		ctx := ctxTimeout(t, 10*time.Second)
		before := env.Server.Calls("")

		l, err := mutex.New(c, env.ReservationID, fast(mutex.WithOwner("driver one"))...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		svc, ok := lockService(t, env, "MUTEX")
		if !ok || svc.ServiceName != "Mutex Service" {
			t.Fatalf("no Mutex Service with alias MUTEX in %+v", svc)
		}
		if rec := svc.Attributes["Mutex Owner"]; !strings.HasPrefix(rec, "csmutex/1 owner=driver+one ") || !strings.Contains(rec, "token="+l.Owner().Token) {
			t.Fatalf("owner record %q does not carry our owner and token", rec)
		}
		select {
		case <-l.Done():
			t.Fatal("Done closed while held")
		default:
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok := lockService(t, env, "MUTEX"); ok {
			t.Fatal("lock service still present after Unlock")
		}
		// The first lock of a client in a reservation: add + read back (the model keeps the
		// owner attribute); read before removal + remove. Recorded in docs/BENCHMARKS.md.
		if got := env.Server.Calls("") - before; got != 4 {
			t.Errorf("first uncontended cycle made %d API calls, want 4", got)
		}
		// Every later one: add; read before removal + remove.
		before = env.Server.Calls("")
		l2, err := mutex.New(c, env.ReservationID, fast()...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := l2.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if got := env.Server.Calls("") - before; got != 3 {
			t.Errorf("later uncontended cycle made %d API calls, want 3", got)
		}
		<-l.Done()
		if !errors.Is(l.Err(), mutex.ErrNotHeld) || errors.Is(l.Err(), mutex.ErrLost) {
			t.Errorf("Err after Unlock = %v", l.Err())
		}
		if err := l.Unlock(ctx); !errors.Is(err, mutex.ErrNotHeld) {
			t.Errorf("second Unlock = %v, want ErrNotHeld", err)
		}
	})
}

func TestTryLockNamesHolder(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		held, err := mutex.New(env.Client("a"), env.ReservationID, fast(mutex.WithOwner("driver-a"))...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Unlock(ctx)

		_, err = mutex.New(env.Client("b"), env.ReservationID, fast()...).TryLock(ctx)
		var le *mutex.LockedError
		if !errors.Is(err, mutex.ErrLocked) || !errors.As(err, &le) {
			t.Fatalf("TryLock = %v, want ErrLocked", err)
		}
		if le.Holder.Name != "driver-a" || le.Holder.Token != held.Owner().Token || !strings.Contains(err.Error(), "driver-a") {
			t.Fatalf("holder = %+v, error %q", le.Holder, err)
		}
		if svc, _ := lockService(t, env, "MUTEX"); !strings.Contains(svc.Attributes["Mutex Owner"], held.Owner().Token) {
			t.Fatal("a failed TryLock disturbed the holder's record")
		}
	})
}

func TestDifferentNamesAreIndependent(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		a, err := mutex.New(env.Client("a"), env.ReservationID, fast(mutex.WithName("SWITCH-1"))...).TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Unlock(ctx)
		b, err := mutex.New(env.Client("b"), env.ReservationID, fast(mutex.WithName("SWITCH-2"))...).TryLock(ctx)
		if err != nil {
			t.Fatalf("a different lock name must not contend: %v", err)
		}
		b.Unlock(ctx)
	})
}

// A wait ends with a *TimeoutError naming the holder: at the caller's deadline (which then
// matches context.DeadlineExceeded), at the wait limit (which does not), or with the
// caller's cancellation. On virtual time: the limits are exact whatever the machine's load.
func TestWaitEndsWithTimeoutNamingHolder(t *testing.T) {
	held := func(t *testing.T, env *testenv.Env) (context.Context, *cloudshell.Client) {
		ctx := ctxTimeout(t, 10*time.Second)
		l, err := mutex.New(env.Client("a"), env.ReservationID, fast(mutex.WithOwner("slow-driver"))...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if n := countServices(t, env, "MUTEX"); n != 1 {
				t.Errorf("%d lock services after a failed wait, want only the holder's", n)
			}
			l.Unlock(ctx)
		})
		return ctx, env.Client("b")
	}
	t.Run("ctx deadline", func(t *testing.T) {
		virtual(t, func(t *testing.T, env *testenv.Env) {
			ctx, waiter := held(t, env)
			dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			_, err := mutex.New(waiter, env.ReservationID, fast()...).Lock(dctx)
			var te *mutex.TimeoutError
			if !errors.Is(err, mutex.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &te) {
				t.Fatalf("Lock = %v, want a TimeoutError", err)
			}
			if te.Holder.Name != "slow-driver" || te.Tries < 2 || !strings.Contains(err.Error(), "slow-driver") || te.Unavailable {
				t.Fatalf("timeout error %+v: want the holder named, several tries, contended", te)
			}
		})
	})
	t.Run("wait limit", func(t *testing.T) {
		virtual(t, func(t *testing.T, env *testenv.Env) {
			ctx, waiter := held(t, env)
			_, err := mutex.New(waiter, env.ReservationID, fast(mutex.WithWaitLimit(80*time.Millisecond))...).Lock(ctx)
			if !errors.Is(err, mutex.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || mutex.IsPermanent(err) {
				t.Fatalf("Lock = %v, want ErrTimeout from the wait limit, not the caller's deadline, not permanent", err)
			}
		})
	})
	t.Run("canceled", func(t *testing.T) {
		virtual(t, func(t *testing.T, env *testenv.Env) {
			ctx, waiter := held(t, env)
			cctx, cancel := context.WithCancel(ctx)
			time.AfterFunc(50*time.Millisecond, cancel)
			_, err := mutex.New(waiter, env.ReservationID, fast()...).Lock(cctx)
			if !errors.Is(err, context.Canceled) || errors.Is(err, mutex.ErrTimeout) || mutex.ClassOf(err) != mutex.ClassCanceled {
				t.Fatalf("Lock = %v, want context.Canceled", err)
			}
		})
	})
}

// Permanent failures must end the attempt at once: the public snippet retries them 100
// times over minutes and then proceeds without the lock.
func TestPermanentErrorsFailFast(t *testing.T) {
	env := testenv.New(t)
	ended := env.Server.CreateReservation("ended", "admin")
	c := env.Client("d")
	if err := c.EndReservation(context.Background(), ended, false); err != nil {
		t.Fatal(err)
	}
	badToken, err := cloudshell.New(cloudshell.Config{Host: env.Host, Port: env.Port, SessionToken: "bm90LWEtdG9rZW4="})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		api   mutex.API
		resID string
		opts  []mutex.Option
		want  error
	}{
		{"unknown reservation", c, "00000000-0000-0000-0000-000000000000", nil, nil},
		{"ended reservation", c, ended, nil, nil},
		{"service model not installed", c, env.ReservationID, []mutex.Option{mutex.WithServiceModel("No Such Model")}, mutex.ErrSetup},
		{"authentication", badToken, env.ReservationID, nil, cloudshell.ErrUnauthorized},
		{"empty reservation id", c, "", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			adds := env.Server.Calls("AddServiceToReservation")
			start := time.Now()
			// Default jitter (2-5 s): a retried permanent error would blow the time bound.
			_, err := mutex.New(tc.api, tc.resID, tc.opts...).Lock(ctxTimeout(t, time.Minute))
			if err == nil || !mutex.IsPermanent(err) {
				t.Fatalf("Lock = %v, want a permanent error", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Lock = %v, want %v", err, tc.want)
			}
			if time.Since(start) > time.Second || env.Server.Calls("AddServiceToReservation")-adds > 1 {
				t.Fatalf("took %s and %d adds: permanent errors must not be retried", time.Since(start), env.Server.Calls("AddServiceToReservation")-adds)
			}
		})
	}
}

// A customer whose Mutex Service model came from the public package at its latest version
// has no "Mutex Owner" attribute. csmutex refuses clearly and leaves nothing behind.
func TestLegacyModelWithoutOwnerAttribute(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		_, err := mutex.New(env.Client("d"), env.ReservationID, fast()...).Lock(ctxTimeout(t, 10*time.Second))
		if !errors.Is(err, mutex.ErrOwnerAttributeMissing) || !errors.Is(err, mutex.ErrSetup) || !mutex.IsPermanent(err) {
			t.Fatalf("Lock = %v, want ErrOwnerAttributeMissing", err)
		}
		const zip = "mutexpkg/Mutex_Package.zip"
		if !strings.Contains(err.Error(), zip) {
			t.Fatalf("error %q does not tell the user what to import", err)
		}
		if _, err := os.Stat("../" + zip); err != nil {
			t.Fatalf("the error sends the user to %s: %v", zip, err)
		}
		if n := countServices(t, env, "MUTEX"); n != 0 {
			t.Fatalf("%d lock services left behind", n)
		}
	}, mockapi.WithDataModel(mutexpkg.LegacyDataModel))
}

// A write whose response was lost may have been applied: the mutex settles it by reading,
// and never resends the add.
func TestUnknownAddOutcomeResolvedByReading(t *testing.T) {
	t.Run("applied, response dropped", func(t *testing.T) {
		env := testenv.New(t)
		env.Server.Faults().Set("AddServiceToReservation", mockapi.Fault{DropAfterCommitRate: 1, Count: 1})
		l, err := mutex.New(env.Client("d"), env.ReservationID, fast()...).Lock(ctxTimeout(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if got := env.Server.Calls("AddServiceToReservation"); got != 1 {
			t.Fatalf("%d adds: the applied add must be adopted, not resent", got)
		}
		if svc, _ := lockService(t, env, "MUTEX"); !strings.Contains(svc.Attributes["Mutex Owner"], l.Owner().Token) {
			t.Fatal("held lock does not carry our token")
		}
		if err := l.Unlock(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("not applied", func(t *testing.T) {
		env := testenv.New(t)
		env.Server.Faults().Set("AddServiceToReservation", mockapi.Fault{FailBeforeCommitRate: 1, Count: 2})
		l, err := mutex.New(env.Client("d"), env.ReservationID, fast()...).Lock(ctxTimeout(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock(context.Background())
		if got := env.Server.Calls("AddServiceToReservation"); got != 3 {
			t.Fatalf("%d adds, want 3 (two lost before commit, then success)", got)
		}
	})
	t.Run("server errors", func(t *testing.T) {
		env := testenv.New(t)
		env.Server.Faults().Set("AddServiceToReservation", mockapi.Fault{HTTP500Rate: 1, Count: 2})
		l, err := mutex.New(env.Client("d"), env.ReservationID, fast()...).Lock(ctxTimeout(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		l.Unlock(context.Background())
	})
}

// A failing release is retried. A lock without a lease that cannot be removed is reported
// (nothing else would ever free it); one with a lease is a success (the critical section ended
// inside the lease) and the lock is left for its lease to free.
func TestReleaseRetriedThenReported(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		m := mutex.New(env.Client("d"), env.ReservationID, fast()...)

		l, err := m.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		env.Server.Faults().Set("RemoveServicesFromReservation", mockapi.Fault{HTTP500Rate: 1, Count: 2})
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("Unlock with two transient failures = %v", err)
		}
		if _, ok := lockService(t, env, "MUTEX"); ok {
			t.Fatal("lock not released")
		}

		l, err = mutex.New(env.Client("d"), env.ReservationID, fast(mutex.WithLease(0), mutex.WithReleaseTimeout(100*time.Millisecond))...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		env.Server.Faults().Set("RemoveServicesFromReservation", mockapi.Fault{HTTP500Rate: 1})
		err = l.Unlock(ctx)
		if err == nil || !strings.Contains(err.Error(), "releasing lock") || !errors.Is(err, mutex.ErrUnavailable) || errors.Is(err, mutex.ErrLost) {
			t.Fatalf("Unlock of a lease-less lock with a failing server = %v, want the failure reported as unavailable", err)
		}
		env.Server.Faults().Set("RemoveServicesFromReservation", mockapi.Fault{})
		if _, err := mutex.ForceRelease(ctx, env.Client("admin"), env.ReservationID); err != nil {
			t.Fatal(err)
		}

		l, err = m.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		env.Server.Faults().Set("RemoveServicesFromReservation", mockapi.Fault{HTTP500Rate: 1})
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("Unlock of a leased lock whose removal keeps failing = %v, want nil (its lease frees it)", err)
		}
		if _, ok := lockService(t, env, "MUTEX"); !ok {
			t.Fatal("the lock is gone although every removal failed")
		}
	})
}

// Unlock must never remove a lock that is not ours: the public snippet does, on every exit.
func TestUnlockNeverRemovesAnotherOwnersLock(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		ctx := ctxTimeout(t, 10*time.Second)
		first, err := mutex.New(env.Client("a"), env.ReservationID, fast(mutex.WithLease(0))...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mutex.ForceRelease(ctx, env.Client("admin"), env.ReservationID); err != nil {
			t.Fatal(err)
		}
		second, err := mutex.New(env.Client("b"), env.ReservationID, fast()...).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := first.Unlock(ctx); !errors.Is(err, mutex.ErrNotHeld) {
			t.Fatalf("Unlock of a force-released lock = %v, want ErrNotHeld", err)
		}
		if svc, _ := lockService(t, env, "MUTEX"); !strings.Contains(svc.Attributes["Mutex Owner"], second.Owner().Token) {
			t.Fatal("Unlock removed the next holder's lock")
		}
		second.Unlock(ctx)
	})
}

func TestLegacyInterop(t *testing.T) {
	for _, tc := range []struct {
		name  string
		attrs []cloudshell.AttributeNameValue
		raw   string
	}{
		{"snippet without owner", nil, ""},
		{"snippet with owner", []cloudshell.AttributeNameValue{{Name: "Mutex Owner", Value: "python-thread-7"}}, "python-thread-7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			virtual(t, func(t *testing.T, env *testenv.Env) {
				ctx := ctxTimeout(t, 10*time.Second)
				py := env.Client("python-driver")
				if err := py.AddServiceToReservation(ctx, env.ReservationID, "Mutex Service", "MUTEX", tc.attrs); err != nil {
					t.Fatal(err)
				}
				// The legacy lock excludes us, and we never break it on our own.
				_, err := mutex.New(env.Client("go"), env.ReservationID, fast(mutex.WithLease(50*time.Millisecond))...).
					Lock(ctxTimeout(t, 400*time.Millisecond))
				var te *mutex.TimeoutError
				if !errors.As(err, &te) || !te.Holder.Legacy || te.Holder.Raw != tc.raw {
					t.Fatalf("Lock = %v, want a timeout naming the legacy holder %q", err, tc.raw)
				}
				if _, ok := lockService(t, env, "MUTEX"); !ok {
					t.Fatal("legacy lock was removed")
				}
				// Unless the user opts in with a maximum age, measured by our own observation.
				start := time.Now()
				l, err := mutex.New(env.Client("go"), env.ReservationID, fast(mutex.WithLegacyMaxAge(100*time.Millisecond))...).Lock(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if waited := time.Since(start); waited < 100*time.Millisecond {
					t.Fatalf("broke the legacy lock after %s, before the maximum age", waited)
				}
				// Ours excludes the legacy driver.
				err = py.AddServiceToReservation(ctx, env.ReservationID, "Mutex Service", "MUTEX", tc.attrs)
				if !cloudshell.IsAliasCollision(err) {
					t.Fatalf("legacy add while we hold = %v, want the alias collision", err)
				}
				l.Unlock(ctx)
			})
		})
	}
}

// Every Lock is its own acquisition: goroutines of one process exclude each other too.
func TestGoroutinesExcludeEachOther(t *testing.T) {
	virtual(t, func(t *testing.T, env *testenv.Env) {
		c := env.Client("one-process")
		var inside, overlaps, done atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 4; j++ {
					err := mutex.With(ctxTimeout(t, 30*time.Second), c, env.ReservationID, func(ctx context.Context) error {
						if inside.Add(1) > 1 {
							overlaps.Add(1)
						}
						time.Sleep(time.Millisecond)
						inside.Add(-1)
						done.Add(1)
						return nil
					}, fast()...)
					if err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		if overlaps.Load() != 0 || done.Load() != 24 {
			t.Fatalf("%d overlapping critical sections, %d completed", overlaps.Load(), done.Load())
		}
	})
}

func TestWithReleasesOnEveryPath(t *testing.T) {
	env := testenv.New(t)
	c := env.Client("d")
	released := func(t *testing.T) {
		t.Helper()
		if _, ok := lockService(t, env, "MUTEX"); ok {
			t.Fatal("lock still held after With returned")
		}
	}
	t.Run("fn error", func(t *testing.T) {
		boom := errors.New("boom")
		err := mutex.With(ctxTimeout(t, 5*time.Second), c, env.ReservationID, func(context.Context) error { return boom }, fast()...)
		if !errors.Is(err, boom) {
			t.Fatalf("With = %v, want fn's error", err)
		}
		released(t)
	})
	t.Run("panic", func(t *testing.T) {
		defer func() {
			if r := recover(); r != "kaboom" {
				t.Fatalf("recovered %v, want the original panic", r)
			}
			released(t)
		}()
		mutex.With(ctxTimeout(t, 5*time.Second), c, env.ReservationID, func(context.Context) error { panic("kaboom") }, fast()...)
	})
	t.Run("ctx canceled while fn runs", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		err := mutex.With(ctx, c, env.ReservationID, func(ctx context.Context) error {
			cancel()
			<-ctx.Done()
			return ctx.Err()
		}, fast()...)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("With = %v", err)
		}
		released(t)
	})
	t.Run("ctx canceled while waiting", func(t *testing.T) {
		held, err := mutex.New(env.Client("other"), env.ReservationID, fast()...).Lock(ctxTimeout(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(30*time.Millisecond, cancel)
		ran := false
		err = mutex.With(ctx, c, env.ReservationID, func(context.Context) error { ran = true; return nil }, fast()...)
		if !errors.Is(err, context.Canceled) || ran {
			t.Fatalf("With = %v, ran = %v: fn must not run without the lock", err, ran)
		}
		held.Unlock(context.Background())
		released(t)
	})
}

// flappingAPI makes the lock look freed on every read: the add collides, the read finds
// nothing. A waiter must still pace itself instead of spinning against the server.
type flappingAPI struct {
	mutex.API
	adds atomic.Int32
}

func (f *flappingAPI) AddServiceToReservation(context.Context, string, string, string, []cloudshell.AttributeNameValue) error {
	f.adds.Add(1)
	return &cloudshell.APIError{Method: "AddServiceToReservation", Code: 100, Message: "Service with given alias already exists"}
}

func (f *flappingAPI) GetReservationDetails(context.Context, string, bool) (*cloudshell.ReservationDetails, error) {
	return &cloudshell.ReservationDetails{}, nil
}

func TestVanishingLockDoesNotBusyLoop(t *testing.T) {
	api := &flappingAPI{}
	const wait = 200 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		_, err := mutex.New(api, "res", mutex.WithRetry(mutex.Jitter(20*time.Millisecond, 20*time.Millisecond))).
			Lock(ctxTimeout(t, wait))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, mutex.ErrTimeout) {
			t.Fatalf("Lock = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Lock ignored its %s deadline: spinning (%d adds so far)", wait, api.adds.Load())
	}
	// One backoff of 20ms per three attempts: about 30 in 200ms; a busy loop makes thousands.
	if n := api.adds.Load(); n > 60 {
		t.Fatalf("%d adds in %s: the waiter is spinning", n, wait)
	}
}
