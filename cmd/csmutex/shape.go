package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
	"github.com/spf13/pflag"
)

// The shapes `csmutex run` can hold (package locks), named as the child sees them in
// CSMUTEX_SHAPE and status shows them.
const (
	shapeExclusive = "exclusive" // the default: one holder of --name
	shapeShared    = "shared"    // -s: a reader of --name
	shapeSemaphore = "semaphore" // --slots N: one of N slots of --name
	shapeSet       = "set"       // --name repeated: every name, or none
	shapePool      = "pool"      // --pool A,B,C --count K: any K free members
)

// shapeFlags are run's shape flags. Their names avoid -n, which is flock's non-blocking
// (consul's -n limit is --slots here), and follow flock for the shared mode (-s).
type shapeFlags struct {
	fs      *pflag.FlagSet
	names   []string
	shared  bool
	slots   int
	readers int
	pool    []string
	count   int
}

func addShapeFlags(fs *pflag.FlagSet) *shapeFlags {
	s := &shapeFlags{fs: fs}
	fs.StringArrayVar(&s.names, "name", []string{mutex.DefaultName},
		"lock `NAME` (the alias of the lock service); repeat it to lock a set of names,\nall or none, in a canonical order (CSMUTEX_NAMES) (default MUTEX)")
	fs.BoolVarP(&s.shared, "shared", "s", false,
		"take --name shared, as flock -s: many shared runs at once (up to --readers);\nan exclusive run of the same name waits for them and excludes them")
	fs.IntVar(&s.readers, "readers", locks.DefaultReaders,
		"`N` readers admitted at once by a shared --name; every run of that name,\nshared or exclusive, must use the same N")
	fs.IntVar(&s.slots, "slots", 0,
		"make --name a semaphore of `N` slots: at most N runs hold it at once\n(consul lock -n); the slot held is in CSMUTEX_SLOT; every run must use the same N")
	fs.StringSliceVar(&s.pool, "pool", nil,
		"take --count free members of the pool `MEMBER,MEMBER,...` (each a lock name);\nthe members held are in CSMUTEX_MEMBERS")
	fs.IntVar(&s.count, "count", 1, "with --pool: how many members (`K`) to take")
	return s
}

// shapeSpec is a checked shape request.
type shapeSpec struct {
	kind    string
	names   []string // one name; a set's names, sorted; a pool's members, in order
	slots   int      // semaphore
	readers int      // exclusive and shared
	count   int      // pool
	// plain is set for an exclusive lock whose name cannot be a shape's (a slot alias, or
	// longer than a shape name may be): no reader can exist for it, so it is the plain lock.
	plain bool
}

// label names the shape in messages: `lock "MUTEX"`, `semaphore "SW" (3 slots)`, ...
func (s shapeSpec) label() string {
	switch s.kind {
	case shapeShared:
		return fmt.Sprintf("lock %q (shared)", s.names[0])
	case shapeSemaphore:
		return fmt.Sprintf("semaphore %q (%d slots)", s.names[0], s.slots)
	case shapeSet:
		return fmt.Sprintf("lock set %s", strings.Join(s.names, ","))
	case shapePool:
		return fmt.Sprintf("pool %s (%d of %d)", strings.Join(s.names, ","), s.count, len(s.names))
	}
	return fmt.Sprintf("lock %q", s.names[0])
}

// spec checks the shape flags: every conflict is a usage error naming both flags.
func (s *shapeFlags) spec() (shapeSpec, error) {
	g := func(name string) bool { return given(s.fs, name) }
	conflict := func(a, b, why string) error {
		return usageErrorf("%s and %s are mutually exclusive: %s", a, b, why)
	}
	names := s.names
	switch {
	case s.shared && g("slots"):
		return shapeSpec{}, conflict("-s/--shared", "--slots", "a semaphore has no shared side; --slots N already admits N holders")
	case s.shared && g("pool"):
		return shapeSpec{}, conflict("-s/--shared", "--pool", "pool members are taken exclusively")
	case g("slots") && g("pool"):
		return shapeSpec{}, conflict("--slots", "--pool", "give one shape")
	case g("pool") && g("name"):
		return shapeSpec{}, conflict("--pool", "--name", "the pool's members are the lock names")
	case g("count") && !g("pool"):
		return shapeSpec{}, usageErrorf("--count needs --pool MEMBER,MEMBER,...")
	case len(names) > 1 && s.shared:
		return shapeSpec{}, conflict("-s/--shared", "a repeated --name", "a lock set is taken exclusively")
	case len(names) > 1 && g("slots"):
		return shapeSpec{}, conflict("--slots", "a repeated --name", "a semaphore has one name")
	case g("readers") && (g("slots") || g("pool") || len(names) > 1):
		return shapeSpec{}, usageErrorf("--readers applies to one --name taken shared or exclusive, not to --slots, --pool or a lock set")
	case g("readers") && (s.readers < 1 || s.readers > mutex.MaxSlots):
		return shapeSpec{}, usageErrorf("--readers must be 1 to %d, not %d", mutex.MaxSlots, s.readers)
	}
	if g("pool") {
		return s.poolSpec()
	}
	for _, n := range names {
		if err := mutex.ValidateName(n); err != nil {
			return shapeSpec{}, usageErrorf("--name: %v", err)
		}
	}
	switch {
	case len(names) > 1:
		sorted := slices.Clone(names)
		slices.Sort(sorted)
		sorted = slices.Compact(sorted)
		if len(sorted) == 1 {
			return shapeSpec{kind: shapeExclusive, names: sorted, readers: s.readers, plain: mutex.ValidateShapeName(sorted[0]) != nil}, nil
		}
		return shapeSpec{kind: shapeSet, names: sorted}, nil
	case g("slots"):
		if s.slots < 1 || s.slots > mutex.MaxSlots {
			return shapeSpec{}, usageErrorf("--slots must be 1 to %d, not %d", mutex.MaxSlots, s.slots)
		}
		if err := mutex.ValidateShapeName(names[0]); err != nil {
			return shapeSpec{}, usageErrorf("--name (a semaphore): %v", err)
		}
		return shapeSpec{kind: shapeSemaphore, names: names, slots: s.slots}, nil
	case s.shared:
		if err := mutex.ValidateShapeName(names[0]); err != nil {
			return shapeSpec{}, usageErrorf("--name (shared): %v", err)
		}
		return shapeSpec{kind: shapeShared, names: names, readers: s.readers}, nil
	}
	return shapeSpec{kind: shapeExclusive, names: names, readers: s.readers, plain: mutex.ValidateShapeName(names[0]) != nil}, nil
}

func (s *shapeFlags) poolSpec() (shapeSpec, error) {
	seen := map[string]bool{}
	for _, m := range s.pool {
		switch err := mutex.ValidateName(m); {
		case m == "":
			return shapeSpec{}, usageErrorf("--pool: empty member in %q", strings.Join(s.pool, ","))
		case err != nil:
			return shapeSpec{}, usageErrorf("--pool: %v", err)
		case seen[m]:
			return shapeSpec{}, usageErrorf("--pool: member %q is listed twice", m)
		}
		seen[m] = true
	}
	if len(s.pool) == 0 {
		return shapeSpec{}, usageErrorf("--pool needs at least one MEMBER")
	}
	if s.count < 1 || s.count > len(s.pool) {
		return shapeSpec{}, usageErrorf("--count must be 1 to %d (the --pool members), not %d", len(s.pool), s.count)
	}
	return shapeSpec{kind: shapePool, names: slices.Clone(s.pool), count: s.count}, nil
}

// holding is what run holds while the command runs: a shape, or the plain lock.
type holding interface {
	Done() <-chan struct{}
	Err() error
	Release(ctx context.Context) error
}

// plainHold is the plain exclusive lock as a holding.
type plainHold struct{ *mutex.Lock }

func (p plainHold) Release(ctx context.Context) error { return p.Unlock(ctx) }

// heldInfo is what run tells the command about what it holds.
type heldInfo struct {
	spec    shapeSpec
	slot    int
	members []string // a set's names, a pool's members held
	aliases []string
	owner   mutex.Owner
}

// take acquires the shape: one attempt when try is set, else waiting within the shape's wait
// limit. opts configure every exclusive lock the shape takes; lopts the shape.
func (s shapeSpec) take(ctx context.Context, api mutex.API, resID string, try bool, mopts []mutex.Option, lopts []locks.Option) (holding, heldInfo, error) {
	lopts = append([]locks.Option{locks.MutexOptions(mopts...)}, lopts...)
	var (
		h   *locks.Hold
		err error
	)
	pick := func(wait, once func(context.Context) (*locks.Hold, error)) {
		if try {
			h, err = once(ctx)
		} else {
			h, err = wait(ctx)
		}
	}
	switch s.kind {
	case shapeExclusive:
		if s.plain {
			m := mutex.New(api, resID, append(mopts, mutex.WithName(s.names[0]))...)
			var l *mutex.Lock
			if try {
				l, err = m.TryLock(ctx)
			} else {
				l, err = m.Lock(ctx)
			}
			if err != nil {
				return nil, heldInfo{}, err
			}
			return plainHold{l}, heldInfo{spec: s, aliases: []string{s.names[0]}, owner: l.Owner()}, nil
		}
		rw := locks.NewRWMutex(api, resID, s.names[0], append(lopts, locks.WithReaders(s.readers))...)
		pick(rw.Lock, rw.TryLock)
	case shapeShared:
		rw := locks.NewRWMutex(api, resID, s.names[0], append(lopts, locks.WithReaders(s.readers))...)
		pick(rw.RLock, rw.TryRLock)
	case shapeSemaphore:
		sem := locks.NewSemaphore(api, resID, s.names[0], s.slots, lopts...)
		pick(sem.Acquire, sem.TryAcquire)
	case shapeSet:
		set := locks.NewSet(api, resID, s.names, lopts...)
		pick(set.Acquire, set.TryAcquire)
	case shapePool:
		pool := locks.NewPool(api, resID, s.names, s.count, lopts...)
		pick(pool.Acquire, pool.TryAcquire)
	default:
		return nil, heldInfo{}, fmt.Errorf("csmutex: unknown shape %q", s.kind)
	}
	if err != nil {
		return nil, heldInfo{}, err
	}
	info := h.Info()
	hi := heldInfo{spec: s, slot: info.Slot, members: info.Members, aliases: info.Aliases}
	if len(info.Owners) > 0 {
		hi.owner = info.Owners[0]
	}
	return h, hi, nil
}

// env is what the command learns through CSMUTEX_* variables.
func (i heldInfo) env(reservation string) []string {
	name := i.spec.names[0]
	if i.spec.kind == shapeSet || i.spec.kind == shapePool {
		name = strings.Join(i.members, ",")
	}
	env := []string{
		"CSMUTEX_LOCK_HELD=1",
		"CSMUTEX_RESERVATION_ID=" + reservation,
		"CSMUTEX_LOCK_NAME=" + name,
		"CSMUTEX_OWNER=" + i.owner.Name,
		"CSMUTEX_SHAPE=" + i.spec.kind,
		"CSMUTEX_ALIASES=" + strings.Join(i.aliases, ","),
	}
	switch i.spec.kind {
	case shapeShared:
		env = append(env, "CSMUTEX_SLOT="+strconv.Itoa(i.slot), "CSMUTEX_READERS="+strconv.Itoa(i.spec.readers))
	case shapeSemaphore:
		env = append(env, "CSMUTEX_SLOT="+strconv.Itoa(i.slot), "CSMUTEX_SLOTS="+strconv.Itoa(i.spec.slots))
	case shapeSet:
		env = append(env, "CSMUTEX_NAMES="+strings.Join(i.members, ","))
	case shapePool:
		env = append(env, "CSMUTEX_MEMBERS="+strings.Join(i.members, ","), "CSMUTEX_POOL="+strings.Join(i.spec.names, ","))
	}
	return env
}

// busyText says who was in the way of a one-try acquisition of a shape, or "".
func busyText(err error) string {
	var be *locks.BusyError
	if !errors.As(err, &be) {
		return ""
	}
	owners := be.Owners()
	if len(owners) == 0 {
		return "busy"
	}
	who := make([]string, len(owners))
	for i, o := range owners {
		who[i] = holderText(o)
	}
	return "held by " + strings.Join(who, ", ")
}
