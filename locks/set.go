package locks

import (
	"context"
	"fmt"
	"slices"

	"github.com/csmutex/csmutex/mutex"
)

// Set holds several locks, all or none. Its names are plain lock names: a Set of
// {"SWITCH-1", "SWITCH-2"} excludes anyone holding either name, however taken. Names are
// taken in one canonical order (sorted), waiting for each, so two sets never deadlock: the
// one that holds the smallest contended name goes on, the other waits for it. If the wait
// ends (timeout, cancellation, a failure), what was taken is released.
type Set struct {
	t     taker
	names []string
	err   error
}

// NewSet returns the set of names in the reservation; duplicates are taken once.
// Configuration errors (no names, a bad name: mutex.ValidateName) are reported by Acquire.
// WithLevels makes Acquire check lock levels (see Levels).
func NewSet(api mutex.API, reservationID string, names []string, opts ...Option) *Set {
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	s := &Set{t: taker{api: api, resID: reservationID, cfg: newConfig(opts), shape: ShapeSet, name: fmt.Sprint(sorted)}, names: sorted}
	s.err = s.t.cfg.validate(ShapeSet, api, reservationID)
	if s.err == nil && len(sorted) == 0 {
		s.err = &ConfigError{Shape: string(ShapeSet), Reason: "no names"}
	}
	for _, n := range sorted {
		if s.err == nil {
			s.err = mutex.ValidateName(n)
		}
	}
	return s
}

// Names returns the set's names in the order they are taken.
func (s *Set) Names() []string { return slices.Clone(s.names) }

// Acquire takes every name, in order, waiting for each, until ctx is done or the wait limit
// passes; on any failure it releases what it took and returns the error (naming the lock
// it was waiting for). With Levels, a set that breaks the level rule for the holds carried
// by ctx is refused before anything is sent (*LevelError).
func (s *Set) Acquire(ctx context.Context) (*Hold, error) { return s.acquire(ctx, true) }

// TryAcquire makes one attempt at each name, in order; if one is held (a *mutex.LockedError
// naming it and its holder), what was taken is released.
func (s *Set) TryAcquire(ctx context.Context) (*Hold, error) { return s.acquire(ctx, false) }

// With runs fn holding the whole set and releases it on every path. fn's ctx is canceled if
// any of the set's locks is lost.
func (s *Set) With(ctx context.Context, fn func(ctx context.Context, h *Hold) error) error {
	h, err := s.Acquire(ctx)
	if err != nil {
		return err
	}
	return run(ctx, h, s.t.cfg.clock, fn)
}

func (s *Set) acquire(ctx context.Context, wait bool) (*Hold, error) {
	if s.err != nil {
		return nil, s.err
	}
	if lv := s.t.cfg.levels; lv != nil {
		if err := lv.check(ctx, s.names); err != nil {
			return nil, err
		}
	}
	start := s.t.cfg.clock.Now()
	bctx, cancel := s.t.bound(ctx)
	defer cancel()
	var held []*mutex.Lock
	for _, n := range s.names {
		m := s.t.mutexFor(n)
		take := m.Lock
		if !wait {
			take = m.TryLock
		}
		l, err := take(bctx)
		if err == nil {
			// A lock lost while we waited for a later one leaves the set incomplete.
			held = append(held, l)
			if err = lostAny(held, s.names); err == nil {
				continue
			}
		}
		_ = releaseAll(ctx, held)
		if bctx.Err() != nil {
			err = s.t.stopped(ctx, bctx, start, 1, err, nil)
		}
		return nil, fmt.Errorf("locks: set %v: taking %q (%d of %d held, released): %w", s.names, n, len(held), len(s.names), err)
	}
	return newHold(Info{Shape: ShapeSet, Members: slices.Clone(s.names), Aliases: slices.Clone(s.names)}, held), nil
}
