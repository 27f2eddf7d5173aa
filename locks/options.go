package locks

import (
	"fmt"
	"time"

	"github.com/csmutex/csmutex/mutex"
	"github.com/sethvargo/go-retry"
)

// Option configures a lock shape.
type Option func(*config)

type config struct {
	mutexOpts []mutex.Option
	retry     func() retry.Backoff
	waitLimit time.Duration
	clock     mutex.Clock
	readers   int
	levels    *Levels
}

// DefaultReaders is how many readers a shared/exclusive lock admits at once unless
// WithReaders says otherwise: enough for the drivers of one sandbox, few enough that a writer
// reads them all in one details call.
const DefaultReaders = 16

func newConfig(opts []Option) config {
	c := config{retry: mutex.Jitter(2*time.Second, 5*time.Second), waitLimit: mutex.DefaultWaitLimit,
		clock: realClock{}, readers: DefaultReaders}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// mutexOptions are the options of every exclusive lock a shape takes: the caller's, then
// the shape's own retry strategy and clock, and no wait limit of its own: the shape's wait
// limit bounds its whole acquisition, which may take several locks.
func (c *config) mutexOptions(name string) []mutex.Option {
	return append(append([]mutex.Option{}, c.mutexOpts...),
		mutex.WithRetry(c.retry), mutex.WithClock(c.clock), mutex.WithWaitLimit(0), mutex.WithName(name))
}

// MutexOptions passes options to every exclusive lock a shape takes (mutex.WithLease,
// mutex.WithOwner, mutex.WithLogger, mutex.WithServiceModel, ...). mutex.WithName,
// mutex.WithRetry, mutex.WithClock and mutex.WithWaitLimit are overridden by the shape: use
// the shape's name and WithRetry, WithClock and WithWaitLimit instead.
func MutexOptions(opts ...mutex.Option) Option {
	return func(c *config) { c.mutexOpts = append(c.mutexOpts, opts...) }
}

// WithRetry sets how long to wait between attempts while the shape is full or contended,
// for the shape's own polling and for every lock it waits on (default mutex.Jitter(2s, 5s),
// as for mutex).
func WithRetry(strategy func() retry.Backoff) Option { return func(c *config) { c.retry = strategy } }

// WithWaitLimit bounds a whole acquisition when ctx has no earlier deadline (default
// mutex.DefaultWaitLimit). Zero means wait until ctx is done.
func WithWaitLimit(d time.Duration) Option { return func(c *config) { c.waitLimit = d } }

// WithClock replaces the clock of the shape and of its locks (tests: virtual time).
func WithClock(clock mutex.Clock) Option { return func(c *config) { c.clock = clock } }

// WithReaders sets how many readers a shared/exclusive lock admits at once (default
// DefaultReaders, at most mutex.MaxSlots). Every party using the lock must use the same
// number: a writer only looks at reader slots 1..n.
func WithReaders(n int) Option { return func(c *config) { c.readers = n } }

// WithLevels declares lock levels for a Set: see Levels.
func WithLevels(l *Levels) Option { return func(c *config) { c.levels = l } }

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// validate checks what every shape shares; the error is reported by Acquire (class Invalid).
func (c *config) validate(shape Shape, api mutex.API, reservationID string) error {
	bad := func(format string, args ...any) error {
		return &ConfigError{Shape: string(shape), Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case api == nil:
		return bad("api must not be nil")
	case reservationID == "":
		return bad("reservation id must not be empty")
	case c.retry == nil:
		return bad("retry strategy must not be nil")
	case c.clock == nil:
		return bad("clock must not be nil")
	case c.waitLimit < 0:
		return bad("wait limit must not be negative, got %s", c.waitLimit)
	case c.readers < 1 || c.readers > mutex.MaxSlots:
		return bad("readers must be 1 to %d, got %d", mutex.MaxSlots, c.readers)
	}
	return nil
}
