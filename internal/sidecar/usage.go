package sidecar

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Per-lock usage metrics, labelled by lock name and shape, as resource_locker's usage
// reporter gives them: how often each lock is taken, how long takers wait for it, how long
// they hold it. Sums rather than histograms: a histogram per lock would multiply the series
// by its buckets, and the mean (rate of the sum over rate of the count) is what a usage
// report shows.
const (
	// MaxUsageLocks bounds the distinct (name, shape) pairs labelled: lock names come from
	// requests, and a client inventing names must not grow /metrics without end. Later pairs
	// are counted under the name otherLocks.
	MaxUsageLocks = 100
	// otherLocks is the name label of the pairs beyond MaxUsageLocks.
	otherLocks = "_other"
	// maxUsageNameLen truncates a long label (a set's or pool's joined names).
	maxUsageNameLen = 128
)

type usage struct {
	acquired *prometheus.CounterVec
	waitSum  *prometheus.CounterVec
	released *prometheus.CounterVec
	holdSum  *prometheus.CounterVec

	mu   sync.Mutex
	seen map[[2]string]bool
}

func newUsage() *usage {
	labels := []string{"name", "shape"}
	return &usage{
		acquired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "csmutex_lock_acquisitions_total",
			Help: "Acquisitions obtained through the sidecar, by lock name (a set's or pool's names joined by commas) and shape.",
		}, labels),
		waitSum: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "csmutex_lock_wait_seconds_total",
			Help: "Time spent waiting by the acquisitions counted in csmutex_lock_acquisitions_total.",
		}, labels),
		released: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "csmutex_lock_releases_total",
			Help: "Holds ended (released, expired, lost or shut down), by lock name and shape.",
		}, labels),
		holdSum: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "csmutex_lock_hold_seconds_total",
			Help: "Time held by the holds counted in csmutex_lock_releases_total.",
		}, labels),
		seen: map[[2]string]bool{},
	}
}

func (u *usage) collectors() []prometheus.Collector {
	return []prometheus.Collector{u.acquired, u.waitSum, u.released, u.holdSum}
}

// label returns the name label of (name, shape): the name itself for the first
// MaxUsageLocks pairs seen, otherLocks after.
func (u *usage) label(name, shape string) string {
	if len(name) > maxUsageNameLen {
		name = name[:maxUsageNameLen]
	}
	k := [2]string{name, shape}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.seen[k] {
		return name
	}
	if len(u.seen) >= MaxUsageLocks {
		return otherLocks
	}
	u.seen[k] = true
	return name
}

// waited records an acquisition's wait; only obtained ones are counted per lock (the
// failures are in csmutex_acquisitions_total by result).
func (u *usage) waited(name, shape string, d time.Duration, ok bool) {
	if !ok {
		return
	}
	n := u.label(name, shape)
	u.acquired.WithLabelValues(n, shape).Inc()
	u.waitSum.WithLabelValues(n, shape).Add(d.Seconds())
}

func (u *usage) heldFor(name, shape string, d time.Duration) {
	n := u.label(name, shape)
	u.released.WithLabelValues(n, shape).Inc()
	u.holdSum.WithLabelValues(n, shape).Add(d.Seconds())
}
