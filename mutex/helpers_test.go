package mutex_test

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
)

// Test timings. Retries are milliseconds apart; leases are long enough that a loaded CI
// machine running the race detector still renews in time, short enough to keep tests fast.
const (
	retryMin = 2 * time.Millisecond
	retryMax = 10 * time.Millisecond
	lease    = 300 * time.Millisecond
)

func fast(extra ...mutex.Option) []mutex.Option {
	return append([]mutex.Option{
		mutex.WithRetry(mutex.Jitter(retryMin, retryMax)),
		mutex.WithReleaseTimeout(3 * time.Second),
		mutex.WithLease(lease),
	}, extra...)
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// lockService returns the lock service with the given alias in the mock's current state.
func lockService(t *testing.T, env *testenv.Env, alias string) (mockapi.ServiceState, bool) {
	t.Helper()
	snap, err := env.Server.Snapshot(env.ReservationID)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snap.Services {
		if s.Alias == alias {
			return s, true
		}
	}
	return mockapi.ServiceState{}, false
}

func countServices(t *testing.T, env *testenv.Env, substr string) int {
	t.Helper()
	snap, err := env.Server.Snapshot(env.ReservationID)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range snap.Services {
		if strings.Contains(s.Alias, substr) {
			n++
		}
	}
	return n
}

// writesBy counts the mutations of one method applied for one client.
func writesBy(env *testenv.Env, client, method string) int {
	n := 0
	for _, m := range env.Server.History(env.ReservationID) {
		if m.Client == client && m.Method == method {
			n++
		}
	}
	return n
}

// offsetClock is a host whose wall clock is off by a fixed amount. time.Time.Add keeps the
// monotonic reading, so intervals stay right: the way a skewed but sane host behaves.
type offsetClock struct{ offset time.Duration }

func (c offsetClock) Now() time.Time                         { return time.Now().Add(c.offset) }
func (c offsetClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// virtual runs a test on virtual time against an in-process mock (testenv.NewInProcess):
// leases, retries, latency faults and client timeouts all tick on the bubble's clock, so
// the test neither waits in real time nor depends on how busy the machine is.
func virtual(t *testing.T, f func(t *testing.T, env *testenv.Env), opts ...mockapi.Option) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) { f(t, testenv.NewInProcess(t, opts...)) })
}
