package locks

import (
	"context"
	"fmt"
	"slices"

	"github.com/csmutex/csmutex/mutex"
)

// Pool hands out any k free members of a list (traffic-generator ports, say): each member is
// a plain lock name, so a member is also excluded from anyone who locks that name directly.
// A taker takes its k members in one pass (reading the reservation once, then TryLock on free
// members) or releases what it took and waits: nobody waits for a member while holding
// another, so two takers never deadlock by hoarding. Info().Members says which it got.
type Pool struct {
	t       taker
	members []string
	k       int
	err     error
}

// NewPool returns the pool of members in the reservation, of which an acquisition takes k.
// Configuration errors (a bad or duplicate member; k outside 1..len(members)) are reported
// by Acquire.
func NewPool(api mutex.API, reservationID string, members []string, k int, opts ...Option) *Pool {
	ms := slices.Clone(members)
	p := &Pool{t: taker{api: api, resID: reservationID, cfg: newConfig(opts), shape: ShapePool, name: fmt.Sprint(ms)}, members: ms, k: k}
	p.err = p.t.cfg.validate(ShapePool, api, reservationID)
	seen := map[string]bool{}
	for _, m := range ms {
		if p.err == nil {
			p.err = mutex.ValidateName(m)
		}
		if p.err == nil && seen[m] {
			p.err = &ConfigError{Shape: string(ShapePool), Reason: fmt.Sprintf("member %q is listed twice", m)}
		}
		seen[m] = true
	}
	if p.err == nil && (k < 1 || k > len(ms)) {
		p.err = &ConfigError{Shape: string(ShapePool), Reason: fmt.Sprintf("k must be 1 to %d (the number of members), got %d", len(ms), k)}
	}
	return p
}

// Members returns the pool's members, in the order they are tried.
func (p *Pool) Members() []string { return slices.Clone(p.members) }

// K returns how many members an acquisition takes.
func (p *Pool) K() int { return p.k }

// Acquire takes k free members, waiting while fewer are free, until ctx is done or the wait
// limit passes. Members held by crashed holders are freed as the exclusive lock frees them.
func (p *Pool) Acquire(ctx context.Context) (*Hold, error) { return p.acquire(ctx, true) }

// TryAcquire makes one attempt: a *BusyError (mutex.ErrLocked) when fewer than k were free.
func (p *Pool) TryAcquire(ctx context.Context) (*Hold, error) { return p.acquire(ctx, false) }

// With runs fn holding k members and releases them on every path.
func (p *Pool) With(ctx context.Context, fn func(ctx context.Context, h *Hold) error) error {
	h, err := p.Acquire(ctx)
	if err != nil {
		return err
	}
	return run(ctx, h, p.t.cfg.clock, fn)
}

func (p *Pool) acquire(ctx context.Context, wait bool) (*Hold, error) {
	if p.err != nil {
		return nil, p.err
	}
	res, err := p.t.takeAny(ctx, anyRequest{cands: p.members, k: p.k, wait: wait})
	if err != nil {
		return nil, err
	}
	return newHold(Info{Shape: ShapePool, Members: slices.Clone(res.aliases), Aliases: res.aliases}, res.held), nil
}
