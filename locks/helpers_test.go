package locks_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
)

// Test timings, as in mutex's tests: retries milliseconds apart, short leases; every test
// runs on virtual time, so they cost nothing and do not depend on the machine's load.
const (
	retryMin = 2 * time.Millisecond
	retryMax = 10 * time.Millisecond
	lease    = 300 * time.Millisecond
)

func fast(extra ...locks.Option) []locks.Option {
	return append([]locks.Option{
		locks.WithRetry(mutex.Jitter(retryMin, retryMax)),
		locks.MutexOptions(mutex.WithReleaseTimeout(3*time.Second), mutex.WithLease(lease)),
	}, extra...)
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// virtual runs a test on virtual time against an in-process mock.
func virtual(t *testing.T, f func(t *testing.T, env *testenv.Env), opts ...mockapi.Option) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) { f(t, testenv.NewInProcess(t, opts...)) })
}

// aliases lists the services in the reservation whose alias starts with prefix.
func aliases(t *testing.T, env *testenv.Env, prefix string) []string {
	t.Helper()
	snap, err := env.Server.Snapshot(env.ReservationID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range snap.Services {
		if strings.HasPrefix(s.Alias, prefix) {
			out = append(out, s.Alias)
		}
	}
	return out
}

// calls counts the API calls an operation makes, by method.
func calls(env *testenv.Env, op func()) (int, map[string]int) {
	methods := []string{"AddServiceToReservation", "RemoveServicesFromReservation", "GetReservationDetails", "GetSandboxData", "SetSandboxData"}
	before := map[string]int{}
	for _, m := range methods {
		before[m] = env.Server.Calls(m)
	}
	total0 := env.Server.Calls("")
	op()
	by := map[string]int{}
	for _, m := range methods {
		if d := env.Server.Calls(m) - before[m]; d > 0 {
			by[m] = d
		}
	}
	return env.Server.Calls("") - total0, by
}

// deadHolder adds a lock service as a crashed csmutex holder would leave it: a record with a
// lease and no heartbeat, ever.
func deadHolder(t *testing.T, c *cloudshell.Client, resID, alias string) {
	t.Helper()
	rec := fmt.Sprintf("csmutex/1 owner=dead host=gone pid=1 token=%016x lease=%s", len(alias)+1, lease)
	if err := c.AddServiceToReservation(context.Background(), resID, mutex.DefaultServiceModel, alias,
		[]cloudshell.AttributeNameValue{{Name: mutex.OwnerAttribute, Value: rec}}); err != nil {
		t.Fatal(err)
	}
}

// occupancy tracks how many parties are inside a section, and the most ever seen.
type occupancy struct {
	mu       sync.Mutex
	in, peak int
	who      map[string]int
}

func (o *occupancy) enter(who string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.who == nil {
		o.who = map[string]int{}
	}
	o.in++
	o.who[who]++
	o.peak = max(o.peak, o.in)
	return o.who[who]
}

func (o *occupancy) leave(who string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.in--
	o.who[who]--
}

func (o *occupancy) max() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.peak
}
