package main

import (
	"fmt"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/csmutex/csmutex/mutex"
	"github.com/sethvargo/go-retry"
	"github.com/spf13/pflag"
)

// minPollInterval is the shortest wait between lock attempts --poll-interval accepts.
// CloudShell has no notification: every waiter polls the shared production server, which
// also serves every sandbox and the portal, and each attempt costs it several API calls.
// Half a second keeps even a crowd of waiters from loading it noticeably; the default
// (2s-5s) is the public snippet's interval.
const minPollInterval = 500 * time.Millisecond

// Default poll interval: a uniformly random wait in [2s, 5s), the public snippet's.
const (
	defaultPollMin = 2 * time.Second
	defaultPollMax = 5 * time.Second
)

// minLegacyMaxAge is the shortest --legacy-max-age accepted. A legacy holder (the public
// Python snippet) writes no heartbeat, so its age is the only evidence that it died; a
// shorter limit would break the lock under live drivers in the middle of their work.
const minLegacyMaxAge = time.Minute

// testJitterEnv names the testing-only knob that replaces the poll interval: "MIN,MAX" as
// durations, e.g. "5ms,20ms". It bypasses minPollInterval, so tests need not sleep; never
// set it in production.
const testJitterEnv = "CSMUTEX_TEST_JITTER"

// pollInterval is --poll-interval MIN[-MAX]: "2s-5s" waits a random time in [2s, 5s)
// between attempts, "3s" exactly 3 s. Plain numbers are seconds, as for -w.
type pollInterval struct{ min, max time.Duration }

func (p *pollInterval) String() string {
	if p.min == p.max {
		return p.min.String()
	}
	return p.min.String() + "-" + p.max.String()
}

// Type names the value in help when the usage names none.
func (p *pollInterval) Type() string { return "MIN[-MAX]" }

func (p *pollInterval) Set(s string) error {
	lo, hi, ranged := strings.Cut(s, "-")
	minD, err := parseDuration(lo)
	if err != nil {
		return fmt.Errorf("MIN: %w", err)
	}
	maxD := minD
	if ranged {
		if maxD, err = parseDuration(hi); err != nil {
			return fmt.Errorf("MAX: %w", err)
		}
	}
	switch {
	case minD < minPollInterval:
		return fmt.Errorf("%q polls faster than every %s, the floor that protects the shared CloudShell server (want MIN[-MAX] with %s <= MIN <= MAX, e.g. 2s-5s)",
			s, minPollInterval, minPollInterval)
	case maxD < minD:
		return fmt.Errorf("%q has MAX below MIN (want MIN[-MAX] with %s <= MIN <= MAX, e.g. 2s-5s)", s, minPollInterval)
	}
	p.min, p.max = minD, maxD
	return nil
}

// lockFlags are the mutex options run and serve share (status and release take only
// --service-model): how to find the lock, when to break a legacy holder, how often to poll.
type lockFlags struct {
	model        string
	legacyMaxAge time.Duration
	poll         pollInterval
	priority     int
	waiter       bool // the flags that only a waiting party uses are registered
}

// addModelFlag registers --service-model alone, for status and release.
func addModelFlag(fs *pflag.FlagSet) *lockFlags {
	l := &lockFlags{}
	fs.StringVar(&l.model, "service-model", mutex.DefaultServiceModel,
		"`MODEL` of the lock services (the service model installed for locks)")
	return l
}

// addLockFlags registers --service-model, --legacy-max-age and --poll-interval.
func addLockFlags(fs *pflag.FlagSet) *lockFlags {
	l := addModelFlag(fs)
	l.waiter = true
	fs.Var(newDurationValue(&l.legacyMaxAge, 0), "legacy-max-age",
		"break a legacy holder (Python snippet: no heartbeat) seen unchanged\nfor `DURATION` (at least "+minLegacyMaxAge.String()+"); 0 = never (the default)")
	l.poll = pollInterval{defaultPollMin, defaultPollMax}
	fs.Var(&l.poll, "poll-interval",
		"wait `MIN[-MAX]` between lock attempts: random in [MIN, MAX), or MIN;\nat least "+minPollInterval.String()+", to spare the shared CloudShell server")
	fs.IntVar(&l.priority, "priority", 0,
		"place in the waiting room, `0-9` (default 0): higher goes ahead of waiters that\narrived up to 16 joins per level earlier, never ahead of the one next in line")
	return l
}

// validate checks the values pflag could not.
func (l *lockFlags) validate() error {
	if strings.TrimSpace(l.model) == "" || strings.ContainsFunc(l.model, unicode.IsControl) {
		return usageErrorf("--service-model must name a service model, not %q", l.model)
	}
	if l.waiter && (l.priority < 0 || l.priority > mutex.MaxPriority) {
		return usageErrorf("--priority must be 0 to %d, not %d", mutex.MaxPriority, l.priority)
	}
	if l.waiter && l.legacyMaxAge > 0 && l.legacyMaxAge < minLegacyMaxAge {
		return usageErrorf("--legacy-max-age must be 0 (never break legacy holders) or at least %s, not %s: a legacy holder sends no heartbeat, and a shorter limit breaks live ones",
			minLegacyMaxAge, l.legacyMaxAge)
	}
	return nil
}

// options returns the mutex options, CSMUTEX_TEST_JITTER (tests only) overriding the poll
// interval.
func (l *lockFlags) options() ([]mutex.Option, error) {
	opts := []mutex.Option{mutex.WithServiceModel(l.model)}
	if !l.waiter {
		return opts, nil
	}
	if l.legacyMaxAge > 0 {
		opts = append(opts, mutex.WithLegacyMaxAge(l.legacyMaxAge))
	}
	if l.priority > 0 {
		opts = append(opts, mutex.WithPriority(l.priority))
	}
	strategy, err := l.retry()
	if err != nil {
		return nil, err
	}
	return append(opts, mutex.WithRetry(strategy)), nil
}

// retry is the wait between attempts: --poll-interval, or CSMUTEX_TEST_JITTER (tests only).
// Lock shapes take it apart from the mutex options, which they override (locks.WithRetry).
func (l *lockFlags) retry() (func() retry.Backoff, error) {
	jitter, err := testJitterStrategy()
	if err != nil || jitter != nil {
		return jitter, err
	}
	return mutex.Jitter(l.poll.min, l.poll.max), nil
}

// testJitter is CSMUTEX_TEST_JITTER as mutex options (none when it is not set).
func testJitter() ([]mutex.Option, error) {
	jitter, err := testJitterStrategy()
	if err != nil || jitter == nil {
		return nil, err
	}
	return []mutex.Option{mutex.WithRetry(jitter)}, nil
}

// testJitterStrategy reads CSMUTEX_TEST_JITTER (testing only, see testJitterEnv).
func testJitterStrategy() (func() retry.Backoff, error) {
	v := os.Getenv(testJitterEnv)
	if v == "" {
		return nil, nil
	}
	lo, hi, ok := strings.Cut(v, ",")
	minD, err1 := time.ParseDuration(strings.TrimSpace(lo))
	maxD, err2 := time.ParseDuration(strings.TrimSpace(hi))
	if !ok || err1 != nil || err2 != nil || minD <= 0 || maxD < minD {
		return nil, usageErrorf("$%s must be MIN,MAX durations such as 5ms,20ms", testJitterEnv)
	}
	return mutex.Jitter(minD, maxD), nil
}
