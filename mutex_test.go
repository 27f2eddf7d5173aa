// End-to-end suite: real clients, real HTTP, the mock CloudShell, many concurrent drivers.
// Each test that shows the mutex preventing a failure has a control that shows the same
// workload failing without it, so the test is known to be able to fail.
package csmutex_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/examples/driver/topology"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
)

// fast polls every few milliseconds: a thousand times the real-server default, so the suite
// runs in seconds. The lease is generous because these tests are about exclusion, not
// recovery, and `go test ./...` runs packages in parallel on a 2-core CI machine: a holder
// must not lose its lock because the machine is busy.
func fast() []mutex.Option {
	return []mutex.Option{
		mutex.WithRetry(mutex.Jitter(3*time.Millisecond, 12*time.Millisecond)),
		mutex.WithLease(20 * time.Second),
		mutex.WithReleaseTimeout(5 * time.Second),
	}
}

// increment is a read-modify-write of a sandbox-data counter: three atomic calls, one
// non-atomic sequence.
func increment(ctx context.Context, c *cloudshell.Client, resID string) error {
	values, err := c.GetSandboxData(ctx, resID)
	if err != nil {
		return err
	}
	n := 0
	for _, kv := range values {
		if kv.Key == "counter" {
			n, _ = strconv.Atoi(kv.Value)
		}
	}
	return c.SetSandboxData(ctx, resID, []cloudshell.SandboxDataKeyValue{{Key: "counter", Value: strconv.Itoa(n + 1)}})
}

// lockedIncrement is a driver step: one increment under mutex.With.
func lockedIncrement(env *testenv.Env) func(ctx context.Context, c *cloudshell.Client, _ int) error {
	return func(ctx context.Context, c *cloudshell.Client, _ int) error {
		return mutex.With(ctx, c, env.ReservationID, func(ctx context.Context) error {
			return increment(ctx, c, env.ReservationID)
		}, fast()...)
	}
}

// wantCleanCount checks that no update was lost and no lock service was left behind.
func wantCleanCount(t *testing.T, env *testenv.Env, want int) {
	t.Helper()
	if got := counter(t, env, env.ReservationID); got != want {
		t.Fatalf("counter = %d, want %d", got, want)
	}
	if snap, _ := env.Server.Snapshot(env.ReservationID); len(snap.Services) != 0 {
		t.Fatalf("services left behind: %+v", snap.Services)
	}
}

func counter(t *testing.T, env *testenv.Env, resID string) int {
	t.Helper()
	snap, err := env.Server.Snapshot(resID)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(snap.SandboxData["counter"])
	return n
}

// runDrivers runs `drivers` goroutines, each with its own client, each calling step `rounds`
// times, and fails the test on any error.
func runDrivers(t *testing.T, env *testenv.Env, drivers, rounds int, step func(ctx context.Context, c *cloudshell.Client, driver int) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for d := 0; d < drivers; d++ {
		c := env.Client(fmt.Sprintf("driver-%d", d))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				if err := step(ctx, c, d); err != nil {
					t.Errorf("driver %d round %d: %v", d, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// 16 drivers × 50 increments under the mutex end at exactly 800.
func TestNoLostUpdates(t *testing.T) {
	const drivers, rounds = 16, 50
	virtual(t, func(t *testing.T, env *testenv.Env) {
		runDrivers(t, env, drivers, rounds, lockedIncrement(env))
		wantCleanCount(t, env, drivers*rounds)
	})
}

// The control: the same workload without the mutex loses updates.
func TestWithoutMutexUpdatesAreLost(t *testing.T) {
	const drivers, rounds = 16, 50
	virtual(t, func(t *testing.T, env *testenv.Env) {
		runDrivers(t, env, drivers, rounds, func(ctx context.Context, c *cloudshell.Client, _ int) error {
			return increment(ctx, c, env.ReservationID)
		})
		if got := counter(t, env, env.ReservationID); got >= drivers*rounds {
			t.Fatalf("counter = %d: the unprotected workload lost nothing, so the test above proves nothing", got)
		}
	})
}

// The race from the public snippet's README: X replaces A with A2, Y replaces B with B2, each
// moving the connectors, concurrently. Random latency on every call shuffles the interleaving.
func swapRuns(t *testing.T, runs int, lock bool) (failures int) {
	t.Helper()
	env := testenv.New(t, mockapi.WithSeed(7),
		mockapi.WithResource("A", "Switch", "Generic Switch"), mockapi.WithResource("A2", "Switch", "Generic Switch"),
		mockapi.WithResource("B", "Switch", "Generic Switch"), mockapi.WithResource("B2", "Switch", "Generic Switch"))
	env.Server.Faults().Set("*", mockapi.Fault{LatencyJitter: time.Millisecond})
	setup, x, y := env.Client("setup"), env.Client("driver-x"), env.Client("driver-y")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for run := 0; run < runs; run++ {
		resID := env.Server.CreateReservation(fmt.Sprint("swap ", run), "admin")
		if _, err := setup.AddResourcesToReservation(ctx, resID, []string{"A", "B"}, false); err != nil {
			t.Fatal(err)
		}
		if err := setup.SetConnectorsInReservation(ctx, resID, []cloudshell.SetConnectorRequest{
			{SourceResourceFullName: "A/Port 1", TargetResourceFullName: "B/Port 1", Direction: "bi"}}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, job := range []struct {
			c         *cloudshell.Client
			old, repl string
		}{{x, "A", "A2"}, {y, "B", "B2"}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				edit := func(ctx context.Context) error { return topology.Replace(ctx, job.c, resID, job.old, job.repl) }
				if lock {
					errs[i] = mutex.With(ctx, job.c, resID, edit, fast()...)
				} else {
					errs[i] = edit(ctx)
				}
			}()
		}
		wg.Wait()
		d, err := setup.GetReservationDetails(ctx, resID, true)
		if err != nil {
			t.Fatal(err)
		}
		got := topology.Describe(d)
		ok := errors.Join(errs...) == nil && len(got) == 1 &&
			(got[0] == "A2/Port 1 -- B2/Port 1" || got[0] == "B2/Port 1 -- A2/Port 1")
		if !ok {
			failures++
			if lock {
				t.Errorf("run %d: topology %v, errors %v", run, got, errors.Join(errs...))
			}
		}
	}
	return failures
}

func TestConnectorSwapRace(t *testing.T) {
	if f := swapRuns(t, 100, true); f != 0 {
		t.Fatalf("%d of 100 runs under the mutex went wrong", f)
	}
}

func TestConnectorSwapRaceWithoutMutexFails(t *testing.T) {
	if f := swapRuns(t, 30, false); f == 0 {
		t.Fatal("30 unprotected runs all succeeded: the interleaving never happened, so the test above proves nothing")
	}
}

// legacySnippet does what the public Python snippet does on its normal path: add MUTEX
// without an owner, retry on the collision after a random sleep, remove it when done.
func legacySnippet(ctx context.Context, c *cloudshell.Client, resID string, fn func() error) error {
	for {
		err := c.AddServiceToReservation(ctx, resID, "Mutex Service", "MUTEX", nil)
		if err == nil {
			ferr := fn()
			return errors.Join(ferr, c.RemoveServicesFromReservation(ctx, resID, []string{"MUTEX"}))
		}
		if !cloudshell.IsAliasCollision(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond + rand.N(3*time.Millisecond)):
		}
	}
}

// Legacy Python drivers and csmutex drivers share the lock both ways: half the drivers use
// the snippet, half use csmutex, and no update is lost.
func TestLegacySnippetInterop(t *testing.T) {
	const drivers, rounds = 8, 25
	virtual(t, func(t *testing.T, env *testenv.Env) {
		runDrivers(t, env, drivers, rounds, func(ctx context.Context, c *cloudshell.Client, d int) error {
			if d%2 == 0 {
				return legacySnippet(ctx, c, env.ReservationID, func() error { return increment(ctx, c, env.ReservationID) })
			}
			return lockedIncrement(env)(ctx, c, d)
		})
		if got := counter(t, env, env.ReservationID); got != drivers*rounds {
			t.Fatalf("counter = %d, want %d", got, drivers*rounds)
		}
	})
}

// Lost responses on a fifth of the adds, under contention: every ambiguous add is resolved by
// reading, no update is lost, nothing is left behind.
func TestAmbiguousAddsUnderContention(t *testing.T) {
	const drivers, rounds = 8, 25
	virtual(t, func(t *testing.T, env *testenv.Env) {
		env.Server.Faults().Set("AddServiceToReservation", mockapi.Fault{DropAfterCommitRate: 0.2, LatencyJitter: time.Millisecond})
		runDrivers(t, env, drivers, rounds, lockedIncrement(env))
		wantCleanCount(t, env, drivers*rounds)
	}, mockapi.WithSeed(3))
}

// virtual runs an end-to-end test on virtual time: clients reach an in-process mock
// (testenv.NewInProcess) through the real client and the mock's real handler, every call
// takes a random millisecond or so of virtual latency (so that unprotected drivers really
// interleave), and nothing depends on how busy the machine is. Only the TCP layer is left
// out; the process tests in cmd/csmutex and the example driver cover it.
func virtual(t *testing.T, f func(t *testing.T, env *testenv.Env), opts ...mockapi.Option) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		env := testenv.NewInProcess(t, opts...)
		env.Server.Faults().Set("*", mockapi.Fault{LatencyJitter: time.Millisecond})
		f(t, env)
	})
}
