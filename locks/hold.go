package locks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
)

// Shape names a kind of lock shape, as Info reports it.
type Shape string

// The shapes.
const (
	ShapeSemaphore Shape = "semaphore"
	ShapeRead      Shape = "rw-shared"
	ShapeWrite     Shape = "rw-exclusive"
	ShapeSet       Shape = "set"
	ShapePool      Shape = "pool"
)

// Info describes what a Hold holds: enough for a status line, an environment variable or a
// JSON answer.
type Info struct {
	Shape Shape  `json:"shape"`
	Name  string `json:"name,omitempty"` // the semaphore's or shared/exclusive lock's name; "" for sets and pools
	// Slot is the semaphore slot or reader slot held (1-based); 0 for other shapes.
	Slot int `json:"slot,omitempty"`
	// Members are the set's names or the pool's members held, in the order taken.
	Members []string `json:"members,omitempty"`
	// Aliases are the lock services held, in the order taken.
	Aliases []string `json:"aliases"`
	// Owners are the owner records of those locks (one token per lock).
	Owners []mutex.Owner `json:"-"`
}

// Hold is a held lock shape: one or more exclusive locks taken together. Done is closed when
// the hold ends: at Release, or as soon as any of its locks is lost (Err then wraps
// mutex.ErrLost and names it). A lost part is not re-taken: the shape's promise is gone.
type Hold struct {
	info  Info
	locks []*mutex.Lock

	done chan struct{}
	stop chan struct{}

	mu       sync.Mutex
	err      error
	released bool
}

// errReleased is Err's answer after Release.
var errReleased = fmt.Errorf("%w: released", mutex.ErrNotHeld)

func newHold(info Info, held []*mutex.Lock) *Hold {
	h := &Hold{info: info, locks: held, done: make(chan struct{}), stop: make(chan struct{})}
	for i, l := range held {
		h.info.Owners = append(h.info.Owners, l.Owner())
		go func() {
			select {
			case <-l.Done():
				select {
				case <-h.stop:
					return // Release is unlocking it: Release reports how that went
				default:
				}
				h.finish(fmt.Errorf("locks: %s: lock %q: %w", info.Shape, info.Aliases[i], l.Err()))
			case <-h.stop:
			}
		}()
	}
	return h
}

// Info says what is held.
func (h *Hold) Info() Info {
	i := h.info
	i.Members = slices.Clone(i.Members)
	i.Aliases = slices.Clone(i.Aliases)
	i.Owners = slices.Clone(i.Owners)
	return i
}

// Locks returns the exclusive locks held, in the order taken.
func (h *Hold) Locks() []*mutex.Lock { return slices.Clone(h.locks) }

// Done is closed when the hold ends: after Release, or when any of its locks is lost.
func (h *Hold) Done() <-chan struct{} { return h.done }

// Err is nil while everything is held. After Done is closed it says why: errors.Is(err,
// mutex.ErrLost) when a lock was lost, errors.Is(err, mutex.ErrNotHeld) after Release.
func (h *Hold) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

func (h *Hold) finish(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return
	}
	h.err = err
	close(h.done)
}

// Release releases every lock, the last taken first, and reports what went wrong with any
// of them (errors.Join): mutex.ErrNotHeld wrapping mutex.ErrLost for a lock that was lost.
// A second Release returns mutex.ErrNotHeld. ctx may be canceled: each lock is still
// released, as Lock.Unlock does.
func (h *Hold) Release(ctx context.Context) error {
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return fmt.Errorf("%w: Release called twice", mutex.ErrNotHeld)
	}
	h.released = true
	h.mu.Unlock()
	close(h.stop)
	err := releaseAll(ctx, h.locks)
	lost := h.Err()
	h.finish(errReleased)
	if lost != nil && !errors.Is(err, mutex.ErrLost) {
		err = errors.Join(err, fmt.Errorf("%w: %w", mutex.ErrNotHeld, lost))
	}
	return err
}

// releaseAll unlocks locks in reverse order: the order of taking them reversed keeps a
// waiter for the first from getting it while the later ones are still held.
func releaseAll(ctx context.Context, held []*mutex.Lock) error {
	var errs []error
	for i := len(held) - 1; i >= 0; i-- {
		if err := held[i].Unlock(context.WithoutCancel(ctx)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// run is the body of every shape's With: fn runs with a context canceled (cause: the loss)
// when the hold is lost, and the hold is released on every path. If fn fails with a write
// of unknown outcome, the hold is kept until that write can no longer land, as mutex.With
// does.
func run(ctx context.Context, h *Hold, clock mutex.Clock, fn func(context.Context, *Hold) error) (err error) {
	fctx, cancel := context.WithCancelCause(ContextWithHold(ctx, h))
	go func() {
		select {
		case <-h.Done():
			cancel(h.Err())
		case <-fctx.Done():
		}
	}()
	defer func() {
		lostDuringFn := context.Cause(fctx)
		cancel(context.Canceled)
		if isAmbiguous(err) {
			settle(h, clock)
		}
		rerr := h.Release(context.WithoutCancel(ctx))
		if errors.Is(lostDuringFn, mutex.ErrLost) {
			err = errors.Join(err, lostDuringFn)
			return
		}
		err = errors.Join(err, rerr)
	}()
	return fn(fctx, h)
}

type holdKey struct{}

// heldChain is the holds a call chain has taken, innermost first.
type heldChain struct {
	h      *Hold
	parent *heldChain
}

// ContextWithHold returns a context that carries h, as With does for the function it runs:
// a Set with Levels taken with that context is checked against h (see Levels). Use it when
// holding a shape through Acquire rather than With.
func ContextWithHold(ctx context.Context, h *Hold) context.Context {
	parent, _ := ctx.Value(holdKey{}).(*heldChain)
	return context.WithValue(ctx, holdKey{}, &heldChain{h: h, parent: parent})
}

// HeldShape returns the innermost hold carried by ctx: the one a shape's With holds for the
// function it runs.
func HeldShape(ctx context.Context) (*Hold, bool) {
	c, ok := ctx.Value(holdKey{}).(*heldChain)
	if !ok {
		return nil, false
	}
	return c.h, true
}

// heldIn lists the holds carried by ctx that are still held.
func heldIn(ctx context.Context) []*Hold {
	var out []*Hold
	for c, _ := ctx.Value(holdKey{}).(*heldChain); c != nil; c = c.parent {
		if c.h.Err() == nil {
			out = append(out, c.h)
		}
	}
	return out
}

func isAmbiguous(err error) bool { return errors.Is(err, cloudshell.ErrAmbiguous) }

// settle keeps the hold for the loss margin of its shortest lease, or until it is lost: a
// write that fn gave up on lands within that margin or is outside the protocol's reach.
func settle(h *Hold, clock mutex.Clock) {
	lease := h.locks[0].Owner().Lease
	for _, l := range h.locks {
		lease = min(lease, l.Owner().Lease)
	}
	select {
	case <-clock.After(mutex.LossMargin(lease)):
	case <-h.Done():
	}
}
