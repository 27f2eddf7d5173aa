package locks

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
)

// RWMutex is a shared/exclusive lock: any number of readers up to WithReaders (default
// DefaultReaders), or one writer. The writer holds the plain lock "<name>" (so it excludes,
// and is excluded by, every driver that takes that name exclusively: mutex, csmutex run, the
// public Python snippet); a reader holds one reader slot "<name>.read.<i>".
//
// Each side writes its own record, then reads the other side's: a reader adds its slot and
// proceeds only if a read after that shows no "<name>"; a writer adds "<name>" and then
// waits for every reader slot that a read after that shows. On CloudShell, whose calls are
// atomic and ordered, one of the two reads sees the other's record, so a reader and a writer
// never both proceed (docs/PROTOCOL.md). Writers have preference: once a writer has added
// "<name>", no new reader gets in, and the writer waits only for the readers already in.
// Readers can starve while writers keep coming.
//
// A legacy driver that takes "<name>" is a writer that does not wait for readers: readers
// that arrive while it holds the lock wait, but readers already in are not waited for.
type RWMutex struct {
	w       taker // the writer's side
	r       taker // the readers' side
	readers int
	err     error
}

// NewRWMutex returns the shared/exclusive lock name in the reservation. Configuration
// errors are reported by every acquisition (class Invalid).
func NewRWMutex(api mutex.API, reservationID, name string, opts ...Option) *RWMutex {
	cfg := newConfig(opts)
	rw := &RWMutex{w: taker{api: api, resID: reservationID, cfg: cfg, shape: ShapeWrite, name: name},
		r: taker{api: api, resID: reservationID, cfg: cfg, shape: ShapeRead, name: name}, readers: cfg.readers}
	rw.err = cfg.validate(ShapeWrite, api, reservationID)
	if rw.err == nil {
		rw.err = mutex.ValidateShapeName(name)
	}
	return rw
}

// ReadAlias is the alias of reader slot i (1-based) of the shared/exclusive lock name.
func ReadAlias(name string, i int) string { return name + mutex.ReadInfix + strconv.Itoa(i) }

// Name returns the lock's name: the writer's alias.
func (rw *RWMutex) Name() string { return rw.w.name }

// Readers returns how many reader slots the lock has.
func (rw *RWMutex) Readers() int { return rw.readers }

// Lock takes the lock exclusively, waiting for other writers, then for readers already in.
func (rw *RWMutex) Lock(ctx context.Context) (*Hold, error) { return rw.lock(ctx, true) }

// TryLock makes one attempt at the exclusive side: a *BusyError, or mutex's *LockedError
// (both match mutex.ErrLocked), when a writer or a reader is in.
func (rw *RWMutex) TryLock(ctx context.Context) (*Hold, error) { return rw.lock(ctx, false) }

// RLock takes the lock shared, waiting while a writer holds it (or waits for readers to
// leave) or all reader slots are taken. Info().Slot says which reader slot it holds.
func (rw *RWMutex) RLock(ctx context.Context) (*Hold, error) { return rw.rlock(ctx, true) }

// TryRLock makes one attempt at the shared side: a *BusyError (mutex.ErrLocked) when a
// writer is in or every reader slot is taken.
func (rw *RWMutex) TryRLock(ctx context.Context) (*Hold, error) { return rw.rlock(ctx, false) }

// WithExclusive runs fn holding the lock exclusively and releases it on every path, as
// mutex.With does.
func (rw *RWMutex) WithExclusive(ctx context.Context, fn func(ctx context.Context, h *Hold) error) error {
	h, err := rw.Lock(ctx)
	if err != nil {
		return err
	}
	return run(ctx, h, rw.w.cfg.clock, fn)
}

// WithShared runs fn holding the lock shared and releases it on every path.
func (rw *RWMutex) WithShared(ctx context.Context, fn func(ctx context.Context, h *Hold) error) error {
	h, err := rw.RLock(ctx)
	if err != nil {
		return err
	}
	return run(ctx, h, rw.r.cfg.clock, fn)
}

func (rw *RWMutex) readSlots() []string {
	out := make([]string, rw.readers)
	for i := range out {
		out[i] = ReadAlias(rw.r.name, i+1)
	}
	return out
}

func (rw *RWMutex) rlock(ctx context.Context, wait bool) (*Hold, error) {
	if rw.err != nil {
		return nil, rw.err
	}
	t := &rw.r
	writer := func(d *cloudshell.ReservationDetails) (string, bool) {
		_, ok := d.Service(t.name)
		return t.name, ok
	}
	res, err := t.takeAny(ctx, anyRequest{cands: rw.readSlots(), k: 1, wait: wait, blocked: writer,
		// The read that admits a reader must follow its slot's add: that order is the proof.
		admit: func(ctx context.Context) (bool, error) {
			d, err := t.read(ctx)
			if err != nil {
				return false, err
			}
			_, held := writer(d)
			return !held, nil
		}})
	if err != nil {
		return nil, err
	}
	return newHold(Info{Shape: ShapeRead, Name: t.name, Slot: slotOf(res.aliases[0]), Aliases: res.aliases}, res.held), nil
}

func (rw *RWMutex) lock(ctx context.Context, wait bool) (*Hold, error) {
	if rw.err != nil {
		return nil, rw.err
	}
	t := &rw.w
	start := t.cfg.clock.Now()
	bctx, cancel := t.bound(ctx)
	defer cancel()
	m := t.mutexFor(t.name)
	take := m.Lock
	if !wait {
		take = m.TryLock
	}
	w, err := take(bctx)
	if err != nil {
		if bctx.Err() != nil {
			return nil, t.stopped(ctx, bctx, start, 1, err, nil)
		}
		return nil, fmt.Errorf("locks: %s %q: %w", t.shape, t.name, err)
	}
	held, aliases := []*mutex.Lock{w}, []string{t.name}
	fail := func(err error) (*Hold, error) {
		_ = releaseAll(ctx, held)
		return nil, err
	}
	// The read that decides which readers to wait for must follow our add.
	d, tries, err := t.readRetrying(bctx, wait)
	if err != nil {
		return fail(t.stopped(ctx, bctx, start, tries, err, nil))
	}
	var occupied, holders []string
	for _, a := range rw.readSlots() {
		if svc, ok := d.Service(a); ok {
			occupied = append(occupied, a)
			holders = append(holders, record(svc))
		}
	}
	if !wait && len(occupied) > 0 {
		return fail(&BusyError{Shape: string(t.shape), Name: t.name, Holders: holders})
	}
	// Wait for each reader already in (or arriving, to find us and leave) with mutex.Lock,
	// which also breaks a dead reader's slot. Holding the slots until Release changes
	// nothing for readers (they find "<name>" anyway) and keeps the writer's hold one piece.
	for _, a := range occupied {
		l, err := t.mutexFor(a).Lock(bctx)
		if err != nil {
			return fail(t.stopped(ctx, bctx, start, tries, err, nil))
		}
		held, aliases = append(held, l), append(aliases, a)
	}
	if err := lostAny(held, aliases); err != nil {
		return fail(fmt.Errorf("locks: %s %q: %w", t.shape, t.name, err))
	}
	return newHold(Info{Shape: ShapeWrite, Name: t.name, Aliases: aliases}, held), nil
}

// readRetrying reads the reservation, retrying failures that may pass (with the retry
// strategy) until ctx ends; once only if !wait.
func (t *taker) readRetrying(ctx context.Context, wait bool) (*cloudshell.ReservationDetails, int, error) {
	backoff := t.cfg.retry()
	for tries := 1; ; tries++ {
		d, err := t.read(ctx)
		if err == nil || !wait || !retryable(err) {
			return d, tries, err
		}
		next, stop := backoff.Next()
		if stop {
			return nil, tries, err
		}
		select {
		case <-t.cfg.clock.After(min(next, time.Hour)):
		case <-ctx.Done():
			return nil, tries, err
		}
	}
}
