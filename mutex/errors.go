package mutex

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Match them with errors.Is; the typed errors below carry the details.
var (
	// ErrLocked: TryLock found the lock held by someone else (see *LockedError).
	ErrLocked = errors.New("mutex: locked by another owner")
	// ErrTimeout: Lock gave up waiting (ctx deadline or WithWaitLimit); see *TimeoutError.
	ErrTimeout = errors.New("mutex: timed out waiting for the lock")
	// ErrNotHeld: Unlock of a lock this Lock does not hold (already released, lost, broken or
	// force-released). Nothing was removed.
	ErrNotHeld = errors.New("mutex: lock not held")
	// ErrLost: a held lock was lost while in use: its record disappeared or was replaced,
	// or renewals failed for so long that waiters may already consider it dead.
	ErrLost = errors.New("mutex: lock lost")
	// ErrSetup: CloudShell is not set up for the mutex (service model missing, or the
	// installed model lacks the "Mutex Owner" attribute). Permanent until an administrator
	// imports package/Mutex_Package.zip.
	ErrSetup = errors.New("mutex: CloudShell is not set up for csmutex")
	// ErrOwnerAttributeMissing: the installed Mutex Service model has no "Mutex Owner"
	// attribute (the public package at its latest version). errors.Is(err, ErrSetup) holds too.
	ErrOwnerAttributeMissing = fmt.Errorf("%w: the Mutex Service model has no %q attribute", ErrSetup, "Mutex Owner")
)

// LockedError is returned by TryLock when another owner holds the lock.
type LockedError struct {
	Name   string
	Holder Owner
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("mutex: lock %q is held by %s", e.Name, e.Holder)
}

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// TimeoutError is returned by Lock when the wait limit passed without acquiring the lock.
// errors.Is(err, ErrTimeout) holds, and so does errors.Is(err, context.DeadlineExceeded)
// when the caller's context deadline was the limit.
type TimeoutError struct {
	Name   string
	Holder Owner // zero if the holder could not be read
	Waited time.Duration
	Tries  int
	// Last is the last error seen while waiting (a transient failure), if any.
	Last error
	ctx  bool
}

func (e *TimeoutError) Error() string {
	holder := "an unknown holder"
	if !e.Holder.IsZero() {
		holder = e.Holder.String()
	}
	msg := fmt.Sprintf("mutex: timed out after %s (%d tries) waiting for lock %q held by %s",
		e.Waited.Round(time.Millisecond), e.Tries, e.Name, holder)
	if e.Last != nil {
		msg += "; last error: " + e.Last.Error()
	}
	return msg
}

func (e *TimeoutError) Is(target error) bool {
	return target == ErrTimeout || (e.ctx && target == context.DeadlineExceeded)
}

func (e *TimeoutError) Unwrap() error { return e.Last }
