package mutex

import (
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"
	"github.com/sethvargo/go-retry"

	"github.com/csmutex/csmutex/mutexpkg"
)

// Defaults, each with its reason.
const (
	// DefaultName is the alias of the lock service: the public snippet's default, so that
	// csmutex and existing Python drivers exclude each other out of the box.
	DefaultName = "MUTEX"
	// DefaultServiceModel is the model the public package defines. It is taken from the
	// package csmutex ships, so the model drivers add is the one customers import.
	DefaultServiceModel = mutexpkg.ModelName
	// OwnerAttribute holds the owner record on the lock service; like the model, it comes
	// from the shipped package's data model.
	OwnerAttribute = mutexpkg.OwnerAttrName
	// DefaultLease: long enough that a holder survives a CloudShell hiccup of tens of
	// seconds (and that its 10 s loss margin covers a slow request), short enough that a
	// crashed driver blocks its reservation for one to two minutes: a waiter watches the
	// dead holder for one lease from its first sighting, which may come up to a lease after
	// the holder's last heartbeat.
	DefaultLease = 60 * time.Second
	// DefaultWaitLimit applies when the context has no deadline: a driver should fail
	// loudly rather than hang forever behind a stuck legacy holder.
	DefaultWaitLimit = 5 * time.Minute
	// DefaultReleaseTimeout bounds how long Unlock retries a failing release before it
	// reports the error; after that the lease (if any) frees the lock.
	DefaultReleaseTimeout = 30 * time.Second
)

// Option configures a Mutex.
type Option func(*config)

type config struct {
	name           string
	model          string
	ownerName      string
	retry          func() retry.Backoff
	waitLimit      time.Duration
	lease          time.Duration
	legacyMaxAge   time.Duration
	releaseTimeout time.Duration
	clock          Clock
	log            zerolog.Logger
	observer       func(WaitEvent)
	messageEvery   time.Duration
	cohort         *CohortBound
	noQueue        bool
	priority       int
	host           string
	pid            int
}

func defaultConfig() config {
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown-host"
	}
	return config{
		name:           DefaultName,
		model:          DefaultServiceModel,
		retry:          Jitter(2*time.Second, 5*time.Second),
		waitLimit:      DefaultWaitLimit,
		lease:          DefaultLease,
		releaseTimeout: DefaultReleaseTimeout,
		clock:          realClock{},
		log:            zerolog.Nop(),
		host:           host,
		pid:            os.Getpid(),
	}
}

func (c *config) validate() error {
	if err := ValidateName(c.name); err != nil {
		return err
	}
	switch {
	case c.model == "":
		return fmt.Errorf("mutex: service model must not be empty")
	case c.lease < 0:
		return fmt.Errorf("mutex: lease must not be negative, got %s", c.lease)
	case c.waitLimit < 0:
		return fmt.Errorf("mutex: wait limit must not be negative, got %s", c.waitLimit)
	case c.retry == nil:
		return fmt.Errorf("mutex: retry strategy must not be nil")
	case c.clock == nil:
		return fmt.Errorf("mutex: clock must not be nil")
	case c.messageEvery < 0:
		return fmt.Errorf("mutex: sandbox message interval must not be negative, got %s", c.messageEvery)
	case c.priority < 0 || c.priority > MaxPriority:
		return fmt.Errorf("mutex: priority must be 0 to %d, got %d", MaxPriority, c.priority)
	case c.cohort != nil:
		return c.cohort.validate()
	}
	return nil
}

// WithName sets the lock domain: the alias of the lock service. Parties that use the same
// name in the same reservation exclude each other; different names are independent locks.
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithServiceModel sets the service model to add (default "Mutex Service").
func WithServiceModel(model string) Option { return func(c *config) { c.model = model } }

// WithOwner sets the owner label recorded with the lock (default host:pid). Every
// acquisition still gets its own token, so the label need not be unique.
func WithOwner(name string) Option { return func(c *config) { c.ownerName = name } }

// WithRetry sets how long to wait between attempts while the lock is held by someone
// else. The factory is called once per Lock call. The default is Jitter(2s, 5s), the
// public snippet's interval: CloudShell is a shared server, and many drivers polling it
// faster would load it for nothing.
func WithRetry(strategy func() retry.Backoff) Option { return func(c *config) { c.retry = strategy } }

// Jitter waits a uniformly random duration in [min, max) between attempts.
func Jitter(min, max time.Duration) func() retry.Backoff {
	if max < min {
		min, max = max, min
	}
	half := (max - min) / 2
	return func() retry.Backoff { return retry.WithJitter(half, retry.NewConstant(min+half)) }
}

// WithWaitLimit bounds how long Lock waits when ctx has no earlier deadline
// (default DefaultWaitLimit). Zero means wait until ctx is done.
func WithWaitLimit(d time.Duration) Option { return func(c *config) { c.waitLimit = d } }

// WithLease sets the lease (default DefaultLease): the holder renews it about every lease/3
// while it lives, and waiters break a holder whose heartbeat they have seen unchanged for
// longer than the lease. Zero disables leases: the lock is then never broken automatically.
func WithLease(d time.Duration) Option { return func(c *config) { c.lease = d } }

// WithLegacyMaxAge lets waiters break a legacy holder (one without a csmutex record, such
// as the public Python snippet) after observing it unchanged for d. Off by default:
// a legacy holder sends no heartbeat, so age is the only evidence that it died, and a
// long but live legacy critical section would be broken.
func WithLegacyMaxAge(d time.Duration) Option { return func(c *config) { c.legacyMaxAge = d } }

// WithReleaseTimeout bounds how long Unlock retries a failing release (default
// DefaultReleaseTimeout).
func WithReleaseTimeout(d time.Duration) Option { return func(c *config) { c.releaseTimeout = d } }

// WithClock replaces the clock (tests: skewed or scaled clocks).
func WithClock(clock Clock) Option { return func(c *config) { c.clock = clock } }

// WithLogger sets the logger (default: none). The mutex logs acquisitions, waits, releases,
// broken locks and losses; never credentials.
func WithLogger(l zerolog.Logger) Option { return func(c *config) { c.log = l } }
