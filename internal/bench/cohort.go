package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/csmutex/csmutex/mutex"
)

// mixed is a run of nLocal contenders in one process (one client; one cohort Mutex when
// cohort is set, else a Mutex each) and nRemote contenders on other hosts.
type mixed struct {
	calls         float64 // all server calls per acquisition
	utilisation   float64
	localGapP50   time.Duration // end of one local critical section to the start of the next local one
	remoteMaxWait time.Duration
	failed        int
}

func (b *bench) cohortOptions(who string, cohort, realLease bool) []mutex.Option {
	lease := max(b.scaled(mutex.DefaultLease), 50*b.latency)
	if realLease {
		lease = mutex.DefaultLease
	}
	opts := []mutex.Option{
		mutex.WithOwner(who), mutex.WithWaitLimit(0),
		mutex.WithRetry(mutex.Jitter(b.scaled(2*time.Second), b.scaled(5*time.Second))),
		mutex.WithLease(lease),
	}
	if cohort {
		bound := mutex.DefaultCohortBound
		bound.Hold, bound.Yield = b.scaled(bound.Hold), b.scaled(bound.Yield)
		opts = append(opts, mutex.WithCohort(bound))
	}
	return opts
}

// realLease keeps the 60 s default lease unscaled: the critical sections are 50 ms of real
// time, so with a scaled lease they would stand for 5 s ones (renewals every 12 of them).
func (b *bench) mixed(nLocal, nRemote int, cohort, realLease bool) (mixed, error) {
	e, err := b.newEnv()
	if err != nil {
		return mixed{}, err
	}
	defer e.mock.Close()
	local, err := e.client("local")
	if err != nil {
		return mixed{}, err
	}
	shared := mutex.New(local, e.res, b.cohortOptions("local", true, realLease)...)
	type section struct {
		local      bool
		start, end time.Time
	}
	var (
		mu       sync.Mutex
		sections []section
		remote   []time.Duration
		failed   int
		wg       sync.WaitGroup
	)
	run := func(m *mutex.Mutex, isLocal bool) {
		defer wg.Done()
		for range b.rounds {
			asked := time.Now()
			err := m.With(context.Background(), func(context.Context) error {
				start := time.Now()
				time.Sleep(b.hold)
				mu.Lock()
				defer mu.Unlock()
				sections = append(sections, section{isLocal, start, time.Now()})
				if !isLocal {
					remote = append(remote, start.Sub(asked))
				}
				return nil
			})
			if err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}
	}
	before := e.mock.Calls("")
	for i := range nLocal {
		m := shared
		if !cohort {
			m = mutex.New(local, e.res, b.cohortOptions(fmt.Sprintf("local-%d", i), false, realLease)...)
		}
		wg.Add(1)
		go run(m, true)
	}
	for i := range nRemote {
		c, err := e.client(fmt.Sprintf("remote%d", i))
		if err != nil {
			return mixed{}, err
		}
		wg.Add(1)
		go run(mutex.New(c, e.res, b.cohortOptions(fmt.Sprintf("remote-%d", i), false, realLease)...), false)
	}
	wg.Wait()
	res := mixed{failed: failed}
	if len(sections) == 0 {
		return res, nil
	}
	res.calls = float64(e.mock.Calls("")-before) / float64(len(sections))
	slices.SortFunc(sections, func(a, b section) int { return a.start.Compare(b.start) })
	var inCS time.Duration
	var gaps []time.Duration
	for i, s := range sections {
		inCS += s.end.Sub(s.start)
		if i > 0 && s.local && sections[i-1].local {
			gaps = append(gaps, s.start.Sub(sections[i-1].end))
		}
	}
	res.utilisation = float64(inCS) / float64(sections[len(sections)-1].end.Sub(sections[0].start))
	if len(gaps) > 0 {
		slices.Sort(gaps)
		res.localGapP50 = gaps[len(gaps)/2]
	}
	for _, w := range remote {
		res.remoteMaxWait = max(res.remoteMaxWait, w)
	}
	return res, nil
}

// cohorts: 16 contenders in one process against the snippet's 16 hosts, and what cohorting
// costs two remote contenders that compete with 8 local ones.
func (b *bench) cohorts() ([]row, error) {
	c, err := b.mixed(16, 0, true, false)
	if err != nil {
		return nil, err
	}
	real, err := b.mixed(16, 0, true, true)
	if err != nil {
		return nil, err
	}
	s, err := b.contend(b.snippet, 16)
	if err != nil {
		return nil, err
	}
	with, err := b.mixed(8, 2, true, false)
	if err != nil {
		return nil, err
	}
	without, err := b.mixed(8, 2, false, false)
	if err != nil {
		return nil, err
	}
	note := ""
	if n := c.failed + with.failed + without.failed + s.failed; n > 0 {
		note = fmt.Sprintf("; %d failed acquisitions", n)
	}
	ms := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	// The physical limits of a cohort that yields to legacy drivers: one safe cycle (3
	// calls) per bound's worth of passes (64, or as many sections as fit in the bound's
	// scaled 60 s), and the lock free for the yield after each bound.
	bound := mutex.DefaultCohortBound
	active := min(b.scaled(bound.Hold), time.Duration(bound.Passes)*b.hold)
	passes := int(active / b.hold)
	perPass := 3 / float64(passes)
	busy := 100 * float64(active) / float64(active+b.scaled(bound.Yield))
	return []row{
		{"16 local contenders (cohort): calls per acquisition", fmt.Sprintf("%.2f", c.calls), fmt.Sprintf("%.1f", s.calls), ratio(c.calls, s.calls), fmt.Sprintf("target ≤ 0.2; physical limit %.2f (3 calls per bound of %d passes); snippet: 16 hosts; lease scaled: a renewal (2 calls) every 4 sections", perPass, passes) + note},
		{"  the same, 60 s lease unscaled (50 ms sections as such)", fmt.Sprintf("%.2f", real.calls), fmt.Sprintf("%.1f", s.calls), ratio(real.calls, s.calls), fmt.Sprintf("target ≤ 0.2; physical limit %.2f", perPass)},
		{"16 local contenders (cohort): utilisation", fmt.Sprintf("%.1f%%", 100*c.utilisation), fmt.Sprintf("%.0f%%", 100*s.utilisation), ratio(c.utilisation, s.utilisation), fmt.Sprintf("target ≥ 98%%; physical limit 100%% without yielding, %.0f%% yielding %s per %s to legacy drivers", busy, bound.Yield, bound.Hold)},
		{"16 local contenders (cohort): local handoff p50", ms(c.localGapP50), "—", "", "target ≤ 1ms; physical limit 0 (no call is made)"},
		{"8 local + 2 remote: a remote waiter's longest wait, cohort vs none", ms(with.remoteMaxWait), ms(without.remoteMaxWait) + " (no cohort)", ratio(float64(with.remoteMaxWait), float64(without.remoteMaxWait)), "target ≤ 2; physical limit 1"},
	}, nil
}
