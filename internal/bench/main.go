// Command bench measures csmutex against an emulation of the public Reservation-Mutex-Lock
// snippet, side by side in one run, on one mock CloudShell over loopback HTTP with a fixed
// call latency. Every wait (the snippet's 2–5 s sleeps, csmutex's default 2–5 s polling, its
// 60 s lease) is multiplied by -scale, so a run takes seconds; the ratios are what to read.
//
//	go run ./internal/bench                 # scale 0.01: 2–5 s becomes 20–50 ms
//	go run ./internal/bench -scale 0.02 -latency 5ms
//
// docs/BENCHMARKS.md keeps a run's table and what each row means.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
)

func main() {
	var (
		scale   = flag.Float64("scale", 0.01, "multiply every wait (sleeps, polling, lease) by `F`")
		latency = flag.Duration("latency", 2*time.Millisecond, "fixed `LATENCY` of every mock call")
		hold    = flag.Duration("hold", 50*time.Millisecond, "`DURATION` of each critical section")
		rounds  = flag.Int("rounds", 4, "critical sections per contender")
		only    = flag.String("only", "", "run only these comma-separated `GROUPS` of rows: uncontended, contention, load, handoff, legacy, cohort")
	)
	flag.Parse()
	if *scale <= 0 || *latency < 0 || *hold <= 0 || *rounds < 1 {
		fmt.Fprintln(os.Stderr, "bench: -scale, -hold and -rounds must be positive, -latency not negative")
		os.Exit(64)
	}
	b := &bench{scale: *scale, latency: *latency, hold: *hold, rounds: *rounds, only: map[string]bool{}}
	for _, g := range strings.Split(*only, ",") {
		if g = strings.TrimSpace(g); g != "" {
			b.only[g] = true
		}
	}
	if err := b.run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	scale   float64
	latency time.Duration
	hold    time.Duration
	rounds  int
	only    map[string]bool // empty: every group
}

func (b *bench) wants(group string) bool { return len(b.only) == 0 || b.only[group] }

func (b *bench) scaled(d time.Duration) time.Duration { return time.Duration(float64(d) * b.scale) }

// env is a fresh mock with one reservation: every measurement starts clean.
type env struct {
	mock *mockapi.Server
	res  string
	host string
	port int
}

func (b *bench) newEnv() (*env, error) {
	m := mockapi.New()
	if _, err := m.Start("127.0.0.1:0"); err != nil {
		return nil, err
	}
	m.Faults().Set("*", mockapi.Fault{Latency: b.latency})
	host, port := m.Addr()
	return &env{mock: m, res: m.CreateReservation("bench", "admin"), host: host, port: port}, nil
}

func (e *env) client(name string) (*cloudshell.Client, error) {
	return cloudshell.Dial(context.Background(), cloudshell.Config{Host: e.host, Port: e.port,
		Username: "admin", Password: "admin", MachineName: name, Timeout: time.Minute})
}

// locker takes the lock once, runs fn, releases it: csmutex or the snippet.
type locker func(ctx context.Context, c *cloudshell.Client, res, who string, fn func()) error

func (b *bench) csmutex(ctx context.Context, c *cloudshell.Client, res, who string, fn func()) error {
	return mutex.With(ctx, c, res, func(context.Context) error { fn(); return nil },
		mutex.WithOwner(who), mutex.WithWaitLimit(0),
		mutex.WithRetry(mutex.Jitter(b.scaled(2*time.Second), b.scaled(5*time.Second))),
		mutex.WithLease(max(b.scaled(mutex.DefaultLease), 50*b.latency)))
}

// errGaveUp is the snippet running out of its 100 tries (the real one then proceeds without
// the lock; this emulation reports it instead).
var errGaveUp = errors.New("snippet: 100 tries without the lock")

// snippet is the public snippet's algorithm (generation B): add MUTEX; on any failure sleep a
// uniform 2–5 s and try again, 100 times at most; remove MUTEX when done.
func (b *bench) snippet(ctx context.Context, c *cloudshell.Client, res, _ string, fn func()) error {
	for range 100 {
		if err := c.AddServiceToReservation(ctx, res, mutex.DefaultServiceModel, mutex.DefaultName, nil); err == nil {
			fn()
			return c.RemoveServicesFromReservation(ctx, res, []string{mutex.DefaultName})
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(b.scaled(2*time.Second) + time.Duration(rand.Int64N(int64(b.scaled(3*time.Second))))):
		}
	}
	return errGaveUp
}

type row struct{ name, csm, snip, ratio, note string }

func (b *bench) run(w io.Writer) error {
	fmt.Fprintf(w, "scale %.3g (2–5 s → %s–%s), call latency %s, critical sections %s, %d per contender\n\n",
		b.scale, b.scaled(2*time.Second), b.scaled(5*time.Second), b.latency, b.hold, b.rounds)
	var rows []row
	add := func(r []row, err error) error {
		rows = append(rows, r...)
		return err
	}
	groups := []struct {
		name string
		run  func() ([]row, error)
	}{
		{"uncontended", b.uncontended},
		{"contention", func() ([]row, error) { return b.each([]int{8, 16}, b.contention) }},
		{"load", func() ([]row, error) { return b.each([]int{16, 64}, b.heldLoad) }},
		{"handoff", b.handoff},
		{"legacy", b.legacy},
		{"cohort", b.cohorts},
	}
	for _, g := range groups {
		if !b.wants(g.name) {
			continue
		}
		if err := add(g.run()); err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tcsmutex\tsnippet\tcsmutex/snippet\tnote")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.name, r.csm, r.snip, r.ratio, r.note)
	}
	return tw.Flush()
}

// each runs one measurement for every n.
func (b *bench) each(ns []int, measure func(int) ([]row, error)) ([]row, error) {
	var rows []row
	for _, n := range ns {
		r, err := measure(n)
		if err != nil {
			return nil, err
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

func ratio(a, b float64) string {
	if b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// uncontended: calls for one acquire+release, the first in a reservation and a later one.
func (b *bench) uncontended() ([]row, error) {
	measure := func(lock locker) (first, later int, err error) {
		e, err := b.newEnv()
		if err != nil {
			return 0, 0, err
		}
		defer e.mock.Close()
		c, err := e.client("solo")
		if err != nil {
			return 0, 0, err
		}
		for i := range 2 {
			before := e.mock.Calls("")
			if err := lock(context.Background(), c, e.res, "solo", func() {}); err != nil {
				return 0, 0, err
			}
			n := e.mock.Calls("") - before
			if i == 0 {
				first = n
			} else {
				later = n
			}
		}
		return first, later, nil
	}
	cf, cl, err := measure(b.csmutex)
	if err != nil {
		return nil, err
	}
	sf, sl, err := measure(b.snippet)
	if err != nil {
		return nil, err
	}
	return []row{
		{"uncontended calls per acquire+release (first in a reservation)", fmt.Sprint(cf), fmt.Sprint(sf), ratio(float64(cf), float64(sf)), "csmutex checks the installed model once; physical limit 3 (a safe cycle)"},
		{"uncontended calls per acquire+release (later)", fmt.Sprint(cl), fmt.Sprint(sl), ratio(float64(cl), float64(sl)), "add; read, remove (the snippet never checks whose lock it removes); physical limit 3 (a safe cycle)"},
	}, nil
}

// contention: n contenders, each its own client, each running rounds critical sections.
type contended struct {
	calls       float64 // per acquisition
	utilisation float64 // time in critical sections / wall
	p99OverMean float64
	maxOverMean float64
	again       float64 // share of handoffs where the releaser took the lock again
	failed      int
}

func (b *bench) contend(lock locker, n int) (contended, error) {
	e, err := b.newEnv()
	if err != nil {
		return contended{}, err
	}
	defer e.mock.Close()
	clients := make([]*cloudshell.Client, n)
	for i := range clients {
		if clients[i], err = e.client(fmt.Sprintf("c%d", i)); err != nil {
			return contended{}, err
		}
	}
	var (
		mu     sync.Mutex
		waits  []time.Duration
		order  []int
		inCS   time.Duration
		first  time.Time
		last   time.Time
		failed int
		wg     sync.WaitGroup
	)
	before := e.mock.Calls("")
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range b.rounds {
				asked := time.Now()
				err := lock(context.Background(), c, e.res, fmt.Sprintf("c%d", i), func() {
					got := time.Now()
					time.Sleep(b.hold)
					mu.Lock()
					defer mu.Unlock()
					waits = append(waits, got.Sub(asked))
					order = append(order, i)
					inCS += time.Since(got)
					if first.IsZero() || got.Before(first) {
						first = got
					}
					last = time.Now()
				})
				if err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	calls := e.mock.Calls("") - before

	slices.Sort(waits)
	var sum time.Duration
	for _, w := range waits {
		sum += w
	}
	res := contended{failed: failed}
	if len(waits) > 0 {
		mean := float64(sum) / float64(len(waits))
		res.calls = float64(calls) / float64(len(waits))
		res.utilisation = float64(inCS) / float64(last.Sub(first))
		res.p99OverMean = float64(waits[(len(waits)*99)/100]) / mean
		res.maxOverMean = float64(waits[len(waits)-1]) / mean
	}
	again := 0
	for i := 1; i < len(order); i++ {
		if order[i] == order[i-1] {
			again++
		}
	}
	if len(order) > 1 {
		res.again = float64(again) / float64(len(order)-1)
	}
	return res, nil
}

func (b *bench) contention(n int) ([]row, error) {
	c, err := b.contend(b.csmutex, n)
	if err != nil {
		return nil, err
	}
	s, err := b.contend(b.snippet, n)
	if err != nil {
		return nil, err
	}
	note := ""
	if c.failed+s.failed > 0 {
		note = fmt.Sprintf("failed acquisitions: csmutex %d, snippet %d", c.failed, s.failed)
	}
	p := func(f float64) string { return fmt.Sprintf("%.0f%%", 100*f) }
	f := func(f float64) string { return fmt.Sprintf("%.1f", f) }
	// The physical limits of utilisation: between two critical sections the lock must be
	// released and taken, with no time lost to polling: csmutex's safe release is a read and
	// a remove, the snippet's a remove; then one add.
	busy := func(trips int) string { return p(float64(b.hold) / float64(b.hold+time.Duration(trips)*b.latency)) }
	return []row{
		{fmt.Sprintf("%d contenders: calls per acquisition", n), f(c.calls), f(s.calls), ratio(c.calls, s.calls),
			strings.TrimPrefix(note+"; target ≤ 0.5; physical limit 4 (snippet 3): the cycle and one failed add by the next in line", "; ")},
		{fmt.Sprintf("%d contenders: utilisation (critical sections / wall)", n), p(c.utilisation), p(s.utilisation), ratio(c.utilisation, s.utilisation),
			fmt.Sprintf("target ≥ 1 (the snippet's); physical limit %s (snippet %s): release and add between sections, no polling delay", busy(3), busy(2))},
		{fmt.Sprintf("%d contenders: wait p99 / mean", n), f(c.p99OverMean), f(s.p99OverMean), "", "target ≤ 2; physical limit 1 (equal waits)"},
		{fmt.Sprintf("%d contenders: longest wait / mean", n), f(c.maxOverMean), f(s.maxOverMean), "", "target ≤ 3; physical limit 1"},
		{fmt.Sprintf("%d contenders: releaser wins again", n), p(c.again), p(s.again), "", fmt.Sprintf("fair: %.0f%%; physical limit 0%% (a strict queue)", 100/float64(n))},
	}, nil
}

// heldLoad: while one holder keeps the lock, n waiters poll; server calls per second.
func (b *bench) heldLoad(n int) ([]row, error) {
	measure := func(lock locker) (float64, error) {
		e, err := b.newEnv()
		if err != nil {
			return 0, err
		}
		defer e.mock.Close()
		holderC, err := e.client("holder")
		if err != nil {
			return 0, err
		}
		window := b.scaled(30 * time.Second)
		held := make(chan struct{})
		release := make(chan struct{})
		go func() {
			_ = lock(context.Background(), holderC, e.res, "holder", func() { close(held); <-release })
		}()
		<-held
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for i := range n {
			c, err := e.client(fmt.Sprintf("w%d", i))
			if err != nil {
				cancel()
				close(release)
				return 0, err
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = lock(ctx, c, e.res, fmt.Sprintf("w%d", i), func() {})
			}()
		}
		time.Sleep(b.scaled(5 * time.Second)) // let every waiter start polling
		before, t0 := e.mock.Calls(""), time.Now()
		time.Sleep(window)
		rate := float64(e.mock.Calls("")-before) / time.Since(t0).Seconds()
		cancel()
		close(release)
		wg.Wait()
		return rate, nil
	}
	c, err := measure(b.csmutex)
	if err != nil {
		return nil, err
	}
	s, err := measure(b.snippet)
	if err != nil {
		return nil, err
	}
	// The physical limit: the holder's renewals (a write and a read every lease/3) and one
	// waiter polling at the mean base interval, whatever the number of waiters.
	limit := 6/b.scaled(60*time.Second).Seconds() + 1/b.scaled(3500*time.Millisecond).Seconds()
	return []row{{fmt.Sprintf("held lock, %d waiters: server calls/s", n),
		fmt.Sprintf("%.1f", c), fmt.Sprintf("%.1f", s), ratio(c, s),
		fmt.Sprintf("target ≤ 0.5, growing sublinearly; holder's renewals included; physical limit %.0f/s: the renewals and one poller", limit)}}, nil
}

// handoff: a waiter on another client; time from the holder's release to the waiter holding.
func (b *bench) handoff() ([]row, error) {
	const runs = 40
	measure := func(lock locker) (time.Duration, error) {
		e, err := b.newEnv()
		if err != nil {
			return 0, err
		}
		defer e.mock.Close()
		hc, err := e.client("holder")
		if err != nil {
			return 0, err
		}
		wc, err := e.client("waiter")
		if err != nil {
			return 0, err
		}
		var gaps []time.Duration
		for range runs {
			var released atomic.Int64
			held := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				done <- lock(context.Background(), hc, e.res, "holder", func() {
					close(held)
					time.Sleep(b.scaled(3 * time.Second))
					released.Store(time.Now().UnixNano())
				})
			}()
			<-held
			var got time.Time
			if err := lock(context.Background(), wc, e.res, "waiter", func() { got = time.Now() }); err != nil {
				return 0, err
			}
			if err := <-done; err != nil {
				return 0, err
			}
			// From the end of the holder's critical section: its release is part of the handoff.
			gaps = append(gaps, got.Sub(time.Unix(0, released.Load())))
		}
		var sum time.Duration
		for _, g := range gaps {
			sum += g
		}
		return sum / time.Duration(len(gaps)), nil
	}
	c, err := measure(b.csmutex)
	if err != nil {
		return nil, err
	}
	s, err := measure(b.snippet)
	if err != nil {
		return nil, err
	}
	return []row{{"handoff to a waiter on another host, mean",
		c.Round(100 * time.Microsecond).String(), s.Round(100 * time.Microsecond).String(),
		ratio(float64(c), float64(s)), fmt.Sprintf("target ≤ 0.5; physical limit %s: read, remove and add, 3 round trips", 3*b.latency)}}, nil
}
