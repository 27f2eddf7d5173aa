package mutex_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mutex"
)

// One uncontended Lock+Unlock over HTTP against the mock: the API calls it makes and what it
// costs. The four calls are the add, the read-back (disableCache), the owner check before
// removal, and the remove; BenchmarkAPICall prices each.
func BenchmarkUncontendedCycle(b *testing.B) {
	env := testenv.New(b)
	c := env.Client("bench")
	m := mutex.New(c, env.ReservationID, fast()...)
	ctx := context.Background()
	before := env.Server.Calls("")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l, err := m.Lock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(env.Server.Calls("")-before)/float64(b.N), "calls/op")
}

// The latency of each call the mutex makes, client and mock together over loopback HTTP.
func BenchmarkAPICall(b *testing.B) {
	env := testenv.New(b)
	c := env.Client("bench")
	ctx := context.Background()
	res := env.ReservationID
	kv := []cloudshell.SandboxDataKeyValue{{Key: "k", Value: "v"}}
	calls := []struct {
		name string
		fn   func() error
	}{
		{"AddService+RemoveServices", func() error {
			if err := c.AddServiceToReservation(ctx, res, "Mutex Service", "BENCH", nil); err != nil {
				return err
			}
			return c.RemoveServicesFromReservation(ctx, res, []string{"BENCH"})
		}},
		{"GetReservationDetails/disableCache", func() error { _, err := c.GetReservationDetails(ctx, res, true); return err }},
		{"GetReservationDetails/cached", func() error { _, err := c.GetReservationDetails(ctx, res, false); return err }},
		{"SetSandboxData", func() error { return c.SetSandboxData(ctx, res, kv) }},
		{"GetSandboxData", func() error { _, err := c.GetSandboxData(ctx, res); return err }},
	}
	for _, call := range calls {
		b.Run(call.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := call.fn(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Four drivers take turns: the cost of a handoff, and the calls each acquisition makes
// including the failed attempts of waiters.
func BenchmarkContendedHandoff(b *testing.B) {
	const drivers = 4
	env := testenv.New(b)
	clients := make([]*cloudshell.Client, drivers)
	for i := range clients {
		clients[i] = env.Client("bench")
	}
	opts := []mutex.Option{mutex.WithRetry(mutex.Jitter(time.Millisecond, 3*time.Millisecond)), mutex.WithLease(time.Minute)}
	before := env.Server.Calls("")
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/drivers + 1
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if err := mutex.With(context.Background(), c, env.ReservationID, func(context.Context) error { return nil }, opts...); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(env.Server.Calls("")-before)/float64(per*drivers), "calls/acquisition")
}

// The load leases add. A holder holds for ten leases while a waiter polls: the metrics are the
// holder's heartbeat writes per lease (bounded by 3: one per lease/3), its other calls per
// lease (the ownership check after each heartbeat), and the waiter's calls per retry: the add
// and the read naming the holder, plus heartbeat reads (one per lease, not one per retry).
func BenchmarkLeaseLoad(b *testing.B) {
	const leaseD, leases = 60 * time.Millisecond, 10
	env := testenv.New(b)
	holderC, waiterC := env.Client("holder"), env.Client("waiter")
	var holderWrites, holderReads, waiterAdds, waiterDetails, waiterBeats int
	counts := func(client, method string) int {
		n := 0
		for _, m := range env.Server.History(env.ReservationID) {
			if m.Client == client && m.Method == method {
				n++
			}
		}
		return n
	}
	for i := 0; i < b.N; i++ {
		ctx := context.Background()
		l, err := mutex.New(holderC, env.ReservationID, mutex.WithLease(leaseD)).Lock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		d0, s0, a0 := env.Server.Calls("GetReservationDetails"), env.Server.Calls("GetSandboxData"), env.Server.Calls("AddServiceToReservation")
		w0 := counts("holder", "SetSandboxData")
		wctx, cancel := context.WithTimeout(ctx, leases*leaseD)
		_, err = mutex.New(waiterC, env.ReservationID, mutex.WithLease(leaseD),
			mutex.WithRetry(mutex.Jitter(4*time.Millisecond, 6*time.Millisecond))).Lock(wctx)
		cancel()
		if err == nil {
			b.Fatal("the waiter acquired a live holder's lock")
		}
		beats := counts("holder", "SetSandboxData") - w0
		holderWrites += beats
		holderReads += beats // one ownership check per heartbeat
		adds := env.Server.Calls("AddServiceToReservation") - a0
		waiterAdds += adds
		waiterDetails += env.Server.Calls("GetReservationDetails") - d0 - beats
		waiterBeats += env.Server.Calls("GetSandboxData") - s0
		l.Unlock(ctx)
	}
	n := float64(b.N)
	b.ReportMetric(float64(holderWrites)/n/leases, "holder-writes/lease")
	b.ReportMetric(float64(holderReads)/n/leases, "holder-reads/lease")
	b.ReportMetric(float64(waiterDetails)/float64(waiterAdds), "waiter-details/retry")
	b.ReportMetric(float64(waiterBeats)/float64(waiterAdds), "waiter-heartbeat-reads/retry")
	b.ReportMetric(float64(waiterAdds)/n/leases, "waiter-retries/lease")
}
