package locks

import (
	"errors"
	"fmt"
	"strings"

	"github.com/csmutex/csmutex/mutex"
)

// Errors of the shapes, besides mutex's own (mutex.ErrTimeout, mutex.ErrLost, ...), which
// they pass through wrapped, so that errors.Is and errors.As (*mutex.TimeoutError) work.
var (
	// ErrLevel: a Set would take a lock at a level that the process may no longer take
	// (see Levels). errors.Is(err, mutex.ErrInvalid) holds too: it is a bug in the caller.
	ErrLevel = fmt.Errorf("%w: lock level order violated", mutex.ErrInvalid)
	// ErrConflict: State found the value it read replaced before it could write (someone
	// wrote without holding the lock, or the lock was lost). Nothing was written.
	// errors.Is(err, mutex.ErrLost) holds too: the lock did not protect the value.
	ErrConflict = fmt.Errorf("%w: the state changed under the lock", mutex.ErrLost)
	// ErrExhausted: Allocate found every value of its range allocated.
	ErrExhausted = errors.New("locks: every value of the range is allocated")
	// ErrCorrupt: a stored state value could not be read (class Invalid): it was not written
	// by State, or by an incompatible version. Nothing was written.
	ErrCorrupt = fmt.Errorf("%w: unreadable state value", mutex.ErrInvalid)
)

// ConfigError says why a shape's construction was refused. errors.Is(err, mutex.ErrInvalid)
// holds; a *mutex.NameError is returned instead for a bad name.
type ConfigError struct {
	Shape  string
	Reason string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("locks: invalid %s: %s", e.Shape, e.Reason) }

// Is makes errors.Is(err, mutex.ErrInvalid) hold.
func (e *ConfigError) Is(target error) bool { return target == mutex.ErrInvalid }

// BusyError is returned by a shape's TryAcquire when it is full or contended. errors.Is(err,
// mutex.ErrLocked) holds.
type BusyError struct {
	Shape string
	Name  string
	// Holders are the owner records seen in the one attempt (of the slots, members or
	// names), verbatim.
	Holders []string
}

func (e *BusyError) Error() string {
	who := e.Holders
	if len(who) == 0 {
		return fmt.Sprintf("locks: %s %q is busy", e.Shape, e.Name)
	}
	return fmt.Sprintf("locks: %s %q is busy (held by %s)", e.Shape, e.Name, strings.Join(who, ", "))
}

// Owners are Holders as mutex reads them (mutex.ParseOwner), in the same order: a record
// csmutex did not write, or could not have written, is a legacy holder with Raw verbatim.
func (e *BusyError) Owners() []mutex.Owner {
	out := make([]mutex.Owner, len(e.Holders))
	for i, h := range e.Holders {
		out[i] = mutex.ParseOwner(h)
	}
	return out
}

// Is makes errors.Is(err, mutex.ErrLocked) hold.
func (e *BusyError) Is(target error) bool { return target == mutex.ErrLocked }

// LevelError is returned when a Set would break the process's lock levels (see Levels).
// errors.Is(err, ErrLevel) and errors.Is(err, mutex.ErrInvalid) hold.
type LevelError struct {
	Name      string // the lock that was to be taken
	Level     string // its level ("" if it has none)
	Held      string // a lock the process holds that forbids it ("" if none)
	HeldLevel string
	Reason    string
}

func (e *LevelError) Error() string {
	if e.Held == "" {
		return fmt.Sprintf("locks: cannot take %q: %s", e.Name, e.Reason)
	}
	return fmt.Sprintf("locks: cannot take %q (level %q) while holding %q (level %q): %s", e.Name, e.Level, e.Held, e.HeldLevel, e.Reason)
}

// Is makes errors.Is(err, ErrLevel) and errors.Is(err, mutex.ErrInvalid) hold.
func (e *LevelError) Is(target error) bool { return target == ErrLevel || target == mutex.ErrInvalid }

// ConflictError is returned by State when the value it read was replaced before its write.
// errors.Is(err, ErrConflict) and errors.Is(err, mutex.ErrLost) hold.
type ConflictError struct {
	Key       string
	Read, Now uint64 // the generation read, and the one found before writing
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("locks: state %q changed under the lock (generation %d read, %d found before writing); nothing was written",
		e.Key, e.Read, e.Now)
}

// Is makes errors.Is(err, ErrConflict) and errors.Is(err, mutex.ErrLost) hold.
func (e *ConflictError) Is(target error) bool {
	return target == ErrConflict || target == mutex.ErrLost
}
