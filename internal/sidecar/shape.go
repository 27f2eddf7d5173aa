package sidecar

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
)

// Shapes an acquire request may ask for (its "shape" field), built on package locks.
const (
	// ShapeExclusive is the default: the exclusive lock "name", as before shapes existed.
	// With "readers" it is the writer side of the shared/exclusive lock "name": it also
	// waits for the readers already in (locks.RWMutex.Lock).
	ShapeExclusive = "exclusive"
	// ShapeSemaphore admits at most "slots" holders of "name" at once.
	ShapeSemaphore = "semaphore"
	// ShapeShared is the reader side of the shared/exclusive lock "name".
	ShapeShared = "shared"
	// ShapeSet holds every one of "names", or none.
	ShapeSet = "set"
	// ShapePool holds any "count" free members of "members".
	ShapePool = "pool"
)

// Bounds of a shape request, so that one request cannot make the sidecar poll hundreds of
// locks. A reservation with more lock services than this is unusual anyway: every one is a
// row in the reservation's details that each waiter reads.
const (
	// MaxSetNames is the most names one set may take.
	MaxSetNames = 32
	// MaxPoolMembers is the most members a pool may list.
	MaxPoolMembers = 64
	// MaxLevels is the most lock levels a set may declare.
	MaxLevels = 16
	// maxLevelNameLen bounds a level's name (it appears in error messages only).
	maxLevelNameLen = 64
)

// shapeRequest is the part of an acquire request that names a shape.
type shapeRequest struct {
	Shape   string   `json:"shape"`
	Slots   *int     `json:"slots"`
	Readers *int     `json:"readers"`
	Names   []string `json:"names"`
	// Levels declares lock levels for a set, coarse to fine; Inside is the token of a set
	// this sidecar holds for the client, against which the new set is checked.
	Levels  []levelJSON `json:"levels"`
	Inside  string      `json:"inside"`
	Members []string    `json:"members"`
	Count   *int        `json:"count"`
}

// levelJSON is one lock level: its name and the lock names at it.
type levelJSON struct {
	Level string   `json:"level"`
	Names []string `json:"names"`
}

// shapeParams is a validated shape request.
type shapeParams struct {
	kind    string
	slots   int      // semaphore
	readers int      // shared; exclusive: >0 for the writer side of a shared/exclusive lock
	names   []string // set: sorted, without duplicates
	levels  []levelJSON
	inside  string
	members []string // pool, in the order given (the order they are tried)
	count   int      // pool
}

// plain reports whether p is the exclusive lock as it was before shapes: the only shape
// that cohorts (cohort.go) serve.
func (p shapeParams) plain() bool { return p.kind == ShapeExclusive && p.readers == 0 }

// Wanted is what a waiting request asks for, in GET /v1/locks.
type Wanted struct {
	Shape   string   `json:"shape"`
	Slots   int      `json:"slots,omitempty"`
	Readers int      `json:"readers,omitempty"`
	Names   []string `json:"names,omitempty"`
	Members []string `json:"members,omitempty"`
	Count   int      `json:"count,omitempty"`
}

func (p shapeParams) wanted() Wanted {
	return Wanted{Shape: p.kind, Slots: p.slots, Readers: p.readers, Names: p.names, Members: p.members, Count: p.count}
}

// Obtained says what an acquisition got: in the acquire answer and in GET /v1/locks.
type Obtained struct {
	Shape string `json:"shape"`
	// Access is "exclusive" or "shared" (a semaphore slot, a set and a pool member are
	// exclusive locks: no one else holds the same one).
	Access string `json:"access"`
	// Slot is the semaphore slot or reader slot held (1-based); Slots the semaphore's size,
	// or the reader slots of a shared/exclusive lock.
	Slot  int `json:"slot,omitempty"`
	Slots int `json:"slots,omitempty"`
	// Names are a set's names, in the order taken; Members the pool members taken.
	Names   []string `json:"names,omitempty"`
	Members []string `json:"members,omitempty"`
	// Aliases are the lock services held in the reservation, in the order taken.
	Aliases []string `json:"aliases"`
}

func obtainedOf(p shapeParams, name string, l heldLock) Obtained {
	sl, ok := l.(shapeLock)
	if !ok {
		return Obtained{Shape: ShapeExclusive, Access: "exclusive", Aliases: []string{name}}
	}
	info := sl.Info()
	o := Obtained{Shape: p.kind, Access: "exclusive", Slot: info.Slot, Aliases: info.Aliases}
	switch p.kind {
	case ShapeSemaphore:
		o.Slots = p.slots
	case ShapeShared:
		o.Access, o.Slots = "shared", p.readers
	case ShapeExclusive:
		o.Slots = p.readers
	case ShapeSet:
		o.Names = info.Members
	case ShapePool:
		o.Members = info.Members
	}
	return o
}

// usageName is how a request's lock is named in metrics, logs and GET /v1/locks: its name,
// or for a set or pool its names or members joined by commas.
func usageName(p acquireParams) string {
	switch p.shape.kind {
	case ShapeSet:
		return strings.Join(p.shape.names, ",")
	case ShapePool:
		return strings.Join(p.shape.members, ",")
	}
	return p.name
}

// parseShape validates the shape part of an acquire request. name says whether the request
// named a lock (sets and pools name theirs in "names" and "members").
func parseShape(req shapeRequest, named bool) (shapeParams, error) {
	p := shapeParams{kind: req.Shape}
	if p.kind == "" {
		p.kind = ShapeExclusive
	}
	only := func(field string, set bool, shapes ...string) error {
		if set && !slices.Contains(shapes, p.kind) {
			return fieldErrorf(field, "%s applies only to shape %s, not %q", field, quoteList(shapes), p.kind)
		}
		return nil
	}
	for _, err := range []error{
		only("slots", req.Slots != nil, ShapeSemaphore),
		only("readers", req.Readers != nil, ShapeShared, ShapeExclusive),
		only("names", req.Names != nil, ShapeSet),
		only("levels", req.Levels != nil, ShapeSet),
		only("inside", req.Inside != "", ShapeSet),
		only("members", req.Members != nil, ShapePool),
		only("count", req.Count != nil, ShapePool),
		only("name", named, ShapeExclusive, ShapeSemaphore, ShapeShared),
	} {
		if err != nil {
			return p, err
		}
	}
	switch p.kind {
	case ShapeExclusive:
		if req.Readers != nil {
			if err := intIn("readers", *req.Readers, 1, mutex.MaxSlots); err != nil {
				return p, err
			}
			p.readers = *req.Readers
		}
	case ShapeShared:
		p.readers = locks.DefaultReaders
		if req.Readers != nil {
			if err := intIn("readers", *req.Readers, 1, mutex.MaxSlots); err != nil {
				return p, err
			}
			p.readers = *req.Readers
		}
	case ShapeSemaphore:
		if req.Slots == nil {
			return p, fieldErrorf("slots", `slots is required for shape "semaphore"`)
		}
		if err := intIn("slots", *req.Slots, 1, mutex.MaxSlots); err != nil {
			return p, err
		}
		p.slots = *req.Slots
	case ShapeSet:
		if len(req.Names) == 0 {
			return p, fieldErrorf("names", `names is required for shape "set": a list of 1 to %d lock names`, MaxSetNames)
		}
		if len(req.Names) > MaxSetNames {
			return p, fieldErrorf("names", "names lists %d locks: a set takes 1 to %d", len(req.Names), MaxSetNames)
		}
		for i, n := range req.Names {
			if err := mutex.ValidateName(n); err != nil {
				return p, fieldErrorf(fmt.Sprintf("names[%d]", i), "names[%d]: %v", i, err)
			}
		}
		p.names = slices.Clone(req.Names)
		slices.Sort(p.names)
		p.names = slices.Compact(p.names)
		if err := checkLevels(req.Levels, p.names); err != nil {
			return p, err
		}
		p.levels, p.inside = req.Levels, req.Inside
		if p.inside != "" && len(p.levels) == 0 {
			return p, fieldErrorf("inside", "inside needs levels: the levels say which sets may be taken inside which")
		}
	case ShapePool:
		if len(req.Members) == 0 {
			return p, fieldErrorf("members", `members is required for shape "pool": a list of 1 to %d lock names`, MaxPoolMembers)
		}
		if len(req.Members) > MaxPoolMembers {
			return p, fieldErrorf("members", "members lists %d locks: a pool has 1 to %d", len(req.Members), MaxPoolMembers)
		}
		seen := map[string]bool{}
		for i, m := range req.Members {
			if err := mutex.ValidateName(m); err != nil {
				return p, fieldErrorf(fmt.Sprintf("members[%d]", i), "members[%d]: %v", i, err)
			}
			if seen[m] {
				return p, fieldErrorf(fmt.Sprintf("members[%d]", i), "members[%d]: %q is listed twice", i, m)
			}
			seen[m] = true
		}
		p.members = slices.Clone(req.Members)
		p.count = 1
		if req.Count != nil {
			if err := intIn("count", *req.Count, 1, len(p.members)); err != nil {
				return p, fieldErrorf("count", "%v (the number of members)", err)
			}
			p.count = *req.Count
		}
	default:
		return p, fieldErrorf("shape", "unknown shape %q: want %s", p.kind,
			quoteList([]string{ShapeExclusive, ShapeSemaphore, ShapeShared, ShapeSet, ShapePool}))
	}
	return p, nil
}

// checkLevels validates a set's levels: a set with levels must have every one of its names
// at a level, as locks.Levels requires.
func checkLevels(levels []levelJSON, names []string) error {
	if levels == nil {
		return nil
	}
	if len(levels) == 0 || len(levels) > MaxLevels {
		return fieldErrorf("levels", "levels lists %d levels: want 1 to %d", len(levels), MaxLevels)
	}
	_, err := buildLevels(levels)
	if err != nil {
		return err
	}
	at := map[string]bool{}
	for _, l := range levels {
		for _, n := range l.Names {
			at[n] = true
		}
	}
	for _, n := range names {
		if !at[n] {
			return fieldErrorf("levels", "names: %q is at no level: with levels, every name of the set must be assigned one", n)
		}
	}
	return nil
}

func buildLevels(levels []levelJSON) (*locks.Levels, error) {
	order := make([]string, len(levels))
	for i, l := range levels {
		if l.Level == "" || len(l.Level) > maxLevelNameLen || strings.ContainsAny(l.Level, "\x00\r\n") {
			return nil, fieldErrorf(fmt.Sprintf("levels[%d].level", i), "levels[%d].level must be 1 to %d characters on one line", i, maxLevelNameLen)
		}
		if len(l.Names) > MaxSetNames*MaxLevels {
			return nil, fieldErrorf(fmt.Sprintf("levels[%d].names", i), "levels[%d].names lists %d names: at most %d", i, len(l.Names), MaxSetNames*MaxLevels)
		}
		order[i] = l.Level
	}
	lv, err := locks.NewLevels(order...)
	if err != nil {
		return nil, fieldErrorf("levels", "levels: %v", err)
	}
	for i, l := range levels {
		if err := lv.Assign(l.Level, l.Names...); err != nil {
			return nil, fieldErrorf(fmt.Sprintf("levels[%d]", i), "levels[%d]: %v", i, err)
		}
	}
	return lv, nil
}

func intIn(field string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fieldErrorf(field, "%s %d is out of range: it must be between %d and %d", field, v, lo, hi)
	}
	return nil
}

func quoteList(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = fmt.Sprintf("%q", v)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// errNotASet: "inside" named a token that is not a set this sidecar holds.
var errNotASet = fieldErrorf("inside", "inside must be the token of a set that this sidecar holds for you (acquired with levels)")

// shapeOptions are the options of a request's shape: the server's mutex options, then the
// request's owner, lease, sandbox messages and priority (every lock the shape waits on queues
// with it), its timeout as the shape's wait limit, and an observer that keeps w's view of
// the holder current for GET /v1/locks.
func (s *Server) shapeOptions(p acquireParams, w *waiting) []locks.Option {
	mopts := append([]mutex.Option{mutex.WithLogger(s.log)}, s.mutexOpts...)
	mopts = append(mopts, mutex.WithOwner(p.owner), mutex.WithLease(p.lease),
		mutex.WithObserver(func(ev mutex.WaitEvent) { s.reg.observe(w, ev) }))
	if p.messages > 0 {
		mopts = append(mopts, mutex.WithSandboxMessages(p.messages))
	}
	if p.priority != noPriority {
		mopts = append(mopts, mutex.WithPriority(p.priority))
	}
	opts := []locks.Option{locks.MutexOptions(mopts...), locks.WithWaitLimit(p.timeout)}
	return append(opts, s.locksOpts...)
}

// acquireShape takes the request's shape: one attempt for a zero timeout, else waits up to
// it. ctx carries the parent hold of "inside", if any.
func (s *Server) acquireShape(ctx context.Context, api mutex.API, p acquireParams, w *waiting) (*locks.Hold, error) {
	opts := s.shapeOptions(p, w)
	try := p.timeout == 0
	pick := func(wait, once func(context.Context) (*locks.Hold, error)) (*locks.Hold, error) {
		if try {
			return once(ctx)
		}
		return wait(ctx)
	}
	sp := p.shape
	switch sp.kind {
	case ShapeSemaphore:
		sem := locks.NewSemaphore(api, p.resID, p.name, sp.slots, opts...)
		return pick(sem.Acquire, sem.TryAcquire)
	case ShapeShared:
		rw := locks.NewRWMutex(api, p.resID, p.name, append(opts, locks.WithReaders(sp.readers))...)
		return pick(rw.RLock, rw.TryRLock)
	case ShapeExclusive:
		rw := locks.NewRWMutex(api, p.resID, p.name, append(opts, locks.WithReaders(sp.readers))...)
		return pick(rw.Lock, rw.TryLock)
	case ShapeSet:
		if len(sp.levels) > 0 {
			lv, err := buildLevels(sp.levels)
			if err != nil {
				return nil, err
			}
			opts = append(opts, locks.WithLevels(lv))
		}
		set := locks.NewSet(api, p.resID, sp.names, opts...)
		return pick(set.Acquire, set.TryAcquire)
	case ShapePool:
		pool := locks.NewPool(api, p.resID, sp.members, sp.count, opts...)
		return pick(pool.Acquire, pool.TryAcquire)
	}
	return nil, fmt.Errorf("sidecar: shape %q has no acquisition", sp.kind)
}

// insideContext returns ctx carrying the set held with token p.shape.inside, so that the
// new set is checked against it (locks.Levels).
func (s *Server) insideContext(ctx context.Context, p acquireParams) (context.Context, error) {
	if p.shape.inside == "" {
		return ctx, nil
	}
	h, ok := s.reg.get(p.shape.inside)
	if !ok || h.shape.kind != ShapeSet {
		return ctx, errNotASet
	}
	sl, ok := h.lock.(shapeLock)
	if !ok {
		return ctx, errNotASet
	}
	return locks.ContextWithHold(ctx, sl.Hold), nil
}

// isRequestError reports whether a shape or state call failed on the request itself (a bad
// name, level order, an overflowing counter, ...): a 400, not CloudShell's failure.
func isRequestError(err error) bool {
	var ce *locks.ConfigError
	var le *locks.LevelError
	var ne *mutex.NameError
	var fe *fieldError
	return errors.As(err, &ce) || errors.As(err, &le) || errors.As(err, &ne) || errors.As(err, &fe)
}

// busyHolder names the first holder of a shape's single attempt (a BusyError's owners, as
// mutex reads them), so that a 409 names it as it does for the exclusive lock: a legacy
// holder by its record, verbatim, as "holders" lists it.
func busyHolder(o mutex.Owner) holderFields {
	if o.Legacy {
		return holderFields{Holder: o.Raw}
	}
	return holderFields{Holder: o.Name, HolderHost: o.Host, HolderPID: o.PID, HolderToken: o.Token}
}
