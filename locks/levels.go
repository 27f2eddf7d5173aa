package locks

import (
	"context"
	"fmt"
	"sync"

	"github.com/csmutex/csmutex/mutex"
)

// Levels declares an order of lock levels, coarse to fine (for instance "reservation",
// "device", "port"), and assigns lock names to them, as ganeti's lock levels do. A Set made
// WithLevels enforces one rule, checked before anything is sent:
//
//	a call chain that holds a lock at level i may take locks only at levels after i.
//
// So every call chain takes its locks coarse to fine, one Set per level at most (a second
// Set at a level already held is refused: its names would not be ordered with the first
// set's). The holds considered are those carried by ctx: the hold of the With that runs the
// caller, and any added with ContextWithHold. A call chain (a context) is Go's counterpart of
// ganeti's thread: independent goroutines of one process take independent locks without
// tripping over each other. Names not assigned to a level are refused in a Set with Levels.
//
// Deadlock freedom does not depend on levels: every Set takes its names in one global
// (sorted) order. Levels catch the nesting that order cannot see: a chain holding one Set
// and taking another.
type Levels struct {
	order []string
	index map[string]int

	mu    sync.RWMutex
	level map[string]int // lock name → level index
}

// NewLevels declares levels, coarse to fine. Names must be unique and not empty.
func NewLevels(levels ...string) (*Levels, error) {
	l := &Levels{index: map[string]int{}, level: map[string]int{}}
	if len(levels) == 0 {
		return nil, &ConfigError{Shape: "levels", Reason: "no level declared"}
	}
	for i, name := range levels {
		if name == "" {
			return nil, &ConfigError{Shape: "levels", Reason: fmt.Sprintf("level %d has an empty name", i+1)}
		}
		if _, dup := l.index[name]; dup {
			return nil, &ConfigError{Shape: "levels", Reason: fmt.Sprintf("level %q is declared twice", name)}
		}
		l.index[name] = i
		l.order = append(l.order, name)
	}
	return l, nil
}

// Assign puts lock names at a declared level. A name belongs to one level only.
func (l *Levels) Assign(level string, names ...string) error {
	i, ok := l.index[level]
	if !ok {
		return &ConfigError{Shape: "levels", Reason: fmt.Sprintf("level %q is not declared (levels: %v)", level, l.order)}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range names {
		if err := mutex.ValidateName(n); err != nil {
			return err
		}
		if j, ok := l.level[n]; ok && j != i {
			return &ConfigError{Shape: "levels", Reason: fmt.Sprintf("%q is at level %q already", n, l.order[j])}
		}
	}
	for _, n := range names {
		l.level[n] = i
	}
	return nil
}

// LevelOf returns the level of a lock name.
func (l *Levels) LevelOf(name string) (string, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	i, ok := l.level[name]
	if !ok {
		return "", false
	}
	return l.order[i], true
}

// check applies the rule to a Set of names about to be taken with ctx.
func (l *Levels) check(ctx context.Context, names []string) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	lowest, lowestName := len(l.order), ""
	for _, n := range names {
		i, ok := l.level[n]
		if !ok {
			return &LevelError{Name: n, Reason: fmt.Sprintf("it is assigned to no level (levels: %v)", l.order)}
		}
		if i < lowest {
			lowest, lowestName = i, n
		}
	}
	for _, h := range heldIn(ctx) {
		if h.info.Shape != ShapeSet {
			continue
		}
		for _, m := range h.info.Members {
			if i, ok := l.level[m]; ok && i >= lowest {
				return &LevelError{Name: lowestName, Level: l.order[lowest], Held: m, HeldLevel: l.order[i],
					Reason: "levels are taken coarse to fine, each at most once per call chain"}
			}
		}
	}
	return nil
}
