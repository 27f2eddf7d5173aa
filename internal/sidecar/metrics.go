package sidecar

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Results of csmutex_acquisitions_total.
const (
	resultAcquired = "acquired"
	resultTimeout  = "timeout"  // not obtained in time (409)
	resultError    = "error"    // CloudShell or setup failure
	resultCanceled = "canceled" // the client went away (or the sidecar shut down) while waiting
)

// metrics live in the sidecar's own registry, so that tests and embedders never collide
// with the process-wide default one.
type metrics struct {
	reg          *prometheus.Registry
	acquisitions *prometheus.CounterVec
	wait         prometheus.Histogram
	hold         prometheus.Histogram
	calls        *prometheus.CounterVec
	errors       *prometheus.CounterVec
	usage        *usage // per lock name and shape (usage.go)
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		acquisitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "csmutex_acquisitions_total",
			Help: "Lock acquisitions through the sidecar, by result (acquired, timeout, error, canceled).",
		}, []string{"result"}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "csmutex_wait_seconds",
			Help: "Time from an acquire request to its outcome, whatever the outcome.",
			// 10ms .. ~11min: an uncontended lock takes a few CloudShell round trips; a
			// contended one waits for a whole critical section.
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 9),
		}),
		hold: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "csmutex_hold_seconds",
			Help:    "How long locks taken through the sidecar were held.",
			Buckets: prometheus.ExponentialBuckets(0.1, 4, 9), // 100ms .. ~1.8h
		}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "csmutex_cloudshell_calls_total",
			Help: "CloudShell API calls made by the sidecar's locks, by method and outcome (ok, error, canceled).",
		}, []string{"method", "outcome"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "csmutex_cloudshell_errors_total",
			Help: "Failed CloudShell API calls, by kind (collision, ambiguous, transient, permanent, unauthorized). A collision is normal contention.",
		}, []string{"kind"}),
		usage: newUsage(),
	}
	// Every series exists from the start, at zero, so rate() and alerts work before the
	// first event.
	for _, r := range []string{resultAcquired, resultTimeout, resultError, resultCanceled} {
		m.acquisitions.WithLabelValues(r)
	}
	for _, k := range errorKinds {
		m.errors.WithLabelValues(k)
	}
	m.reg.MustRegister(m.usage.collectors()...)
	m.reg.MustRegister(m.acquisitions, m.wait, m.hold, m.calls, m.errors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "csmutex_locks_held",
			Help: "Locks the sidecar holds now.",
		}, func() float64 { h, _ := s.reg.counts(); return float64(h) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "csmutex_locks_waiting",
			Help: "Acquire requests waiting now.",
		}, func() float64 { _, w := s.reg.counts(); return float64(w) }),
	)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}
