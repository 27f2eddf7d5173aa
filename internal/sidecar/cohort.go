package sidecar

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/csmutex/csmutex/mutex"
)

// WithCohort makes the sidecar's clients of one lock a cohort (mutex.WithCohort): drivers
// that ask this sidecar for the same lock, with the same CloudShell credentials, reservation,
// lease and sandbox-message setting, pass one CloudShell acquisition among themselves in
// FIFO order, without calling CloudShell, up to bound. Off by default, because the lock's
// owner record then names the driver that acquired for the cohort, not each driver that
// holds it in turn (GET /v1/locks shows the one holding).
func WithCohort(bound mutex.CohortBound) Option {
	return func(s *Server) { s.cohorts = &cohorts{bound: bound, shared: map[string]*cohortEntry{}} }
}

// cohorts keeps one cohort Mutex per lock while any request uses it.
type cohorts struct {
	bound mutex.CohortBound

	mu     sync.Mutex
	shared map[string]*cohortEntry
}

type cohortEntry struct {
	m     *mutex.Mutex
	users int // requests waiting for or holding the lock through m
}

// cohortKey names what members of one cohort must agree on. The owner label and the wait
// limit are per request and not part of it: the record carries the first member's label, and
// each member's wait is bounded by its own context. The priority is: the cohort waits in the
// room as one waiter, and a member must not wait at another's priority.
func cohortKey(p acquireParams) string {
	return strings.Join([]string{p.creds.key(), p.resID, p.name, p.lease.String(),
		strconv.FormatInt(int64(p.messages/time.Millisecond), 10), strconv.Itoa(p.priority)}, "\x00")
}

// mutex returns the cohort Mutex for p, made by build on first use, and the function to
// call once the request no longer waits for or holds the lock.
func (c *cohorts) mutex(p acquireParams, build func() *mutex.Mutex) (*mutex.Mutex, func()) {
	k := cohortKey(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.shared[k]
	if e == nil {
		e = &cohortEntry{m: build()}
		c.shared[k] = e
	}
	e.users++
	var once sync.Once
	return e.m, func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if e.users--; e.users == 0 {
				delete(c.shared, k)
			}
		})
	}
}

// newCohortMutex makes the Mutex a cohort shares: the first member's owner label, lease,
// sandbox messages and priority (members agree on the last three, cohortKey), and no wait
// limit or observer of its own (each member waits under its own context).
func (s *Server) newCohortMutex(api mutex.API, p acquireParams) *mutex.Mutex {
	opts := append([]mutex.Option{mutex.WithLogger(s.log)}, s.mutexOpts...)
	opts = append(opts, mutex.WithName(p.name), mutex.WithOwner(p.owner), mutex.WithLease(p.lease),
		mutex.WithWaitLimit(0), mutex.WithCohort(s.cohorts.bound))
	if p.messages > 0 {
		opts = append(opts, mutex.WithSandboxMessages(p.messages))
	}
	if p.priority != noPriority {
		opts = append(opts, mutex.WithPriority(p.priority))
	}
	return mutex.New(api, p.resID, opts...)
}
