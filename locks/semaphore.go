package locks

import (
	"context"
	"fmt"
	"strconv"

	"github.com/csmutex/csmutex/mutex"
)

// Semaphore admits at most n holders at once. It is n exclusive locks, its slots, with the
// aliases "<name>.slot.1" to "<name>.slot.<n>": a holder holds one slot. Every party must use
// the same n (a party with a larger n admits more).
type Semaphore struct {
	t   taker
	n   int
	err error
}

// NewSemaphore returns a semaphore of n slots named name in the reservation. Configuration
// errors (a bad name: mutex.ValidateShapeName; n outside 1..mutex.MaxSlots) are reported by
// Acquire and TryAcquire (class Invalid).
func NewSemaphore(api mutex.API, reservationID, name string, n int, opts ...Option) *Semaphore {
	s := &Semaphore{t: taker{api: api, resID: reservationID, cfg: newConfig(opts), shape: ShapeSemaphore, name: name}, n: n}
	s.err = s.t.cfg.validate(ShapeSemaphore, api, reservationID)
	if s.err == nil {
		s.err = mutex.ValidateShapeName(name)
	}
	if s.err == nil && (n < 1 || n > mutex.MaxSlots) {
		s.err = &ConfigError{Shape: string(ShapeSemaphore), Reason: fmt.Sprintf("n must be 1 to %d, got %d", mutex.MaxSlots, n)}
	}
	return s
}

// SlotAlias is the alias of slot i (1-based) of the semaphore name.
func SlotAlias(name string, i int) string { return name + mutex.SlotInfix + strconv.Itoa(i) }

// Name returns the semaphore's name.
func (s *Semaphore) Name() string { return s.t.name }

// Slots returns n.
func (s *Semaphore) Slots() int { return s.n }

// Acquire takes a free slot, waiting while all n are held, until ctx is done or the wait
// limit passes (an error matching mutex.ErrTimeout). Info().Slot says which slot it took.
// Slots of crashed holders are freed as the exclusive lock frees a crashed holder's lock.
func (s *Semaphore) Acquire(ctx context.Context) (*Hold, error) { return s.acquire(ctx, true) }

// TryAcquire makes one attempt: a *BusyError (errors.Is(err, mutex.ErrLocked)) when no slot
// was free.
func (s *Semaphore) TryAcquire(ctx context.Context) (*Hold, error) { return s.acquire(ctx, false) }

// With runs fn while holding a slot and releases it on every path, as mutex.With does: fn's
// ctx is canceled if the slot is lost, and With then reports the loss (mutex.ErrLost).
func (s *Semaphore) With(ctx context.Context, fn func(ctx context.Context, h *Hold) error) error {
	h, err := s.Acquire(ctx)
	if err != nil {
		return err
	}
	return run(ctx, h, s.t.cfg.clock, fn)
}

func (s *Semaphore) acquire(ctx context.Context, wait bool) (*Hold, error) {
	if s.err != nil {
		return nil, s.err
	}
	res, err := s.t.takeAny(ctx, anyRequest{cands: s.slots(), k: 1, wait: wait})
	if err != nil {
		return nil, err
	}
	return newHold(Info{Shape: ShapeSemaphore, Name: s.t.name, Slot: slotOf(res.aliases[0]), Aliases: res.aliases}, res.held), nil
}

func (s *Semaphore) slots() []string {
	out := make([]string, s.n)
	for i := range out {
		out[i] = SlotAlias(s.t.name, i+1)
	}
	return out
}

// slotOf is the number at the end of a derived alias.
func slotOf(alias string) int {
	for i := len(alias) - 1; i >= 0; i-- {
		if alias[i] == '.' {
			n, _ := strconv.Atoi(alias[i+1:])
			return n
		}
	}
	return 0
}
