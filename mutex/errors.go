package mutex

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Every error the mutex returns belongs to exactly one Class, matched with errors.Is against
// the class's sentinel below or read with ClassOf. The command's exit codes, the sidecar's
// HTTP statuses and the metrics' outcome labels are translations of this one list.
var (
	// ErrLocked (class Contended): TryLock found the lock held by someone else (see
	// *LockedError).
	ErrLocked = errors.New("mutex: locked by another owner")
	// ErrTimeout (class Timeout): Lock gave up waiting, at the caller's deadline or the wait
	// limit; see *TimeoutError for which, and whether the lock was held or CloudShell failing.
	ErrTimeout = errors.New("mutex: timed out waiting for the lock")
	// ErrUnavailable (class Unavailable): CloudShell could not be reached or failed in a way
	// that may pass (transport errors, HTTP timeouts, 5xx answers, unusable responses).
	ErrUnavailable = errors.New("mutex: CloudShell unavailable")
	// ErrSetup (class Setup): CloudShell is not set up for the mutex (service model missing,
	// or the installed model lacks the "Mutex Owner" attribute). Permanent until an
	// administrator imports mutexpkg/Mutex_Package.zip.
	ErrSetup = errors.New("mutex: CloudShell is not set up for csmutex")
	// ErrOwnerAttributeMissing: the installed Mutex Service model has no "Mutex Owner"
	// attribute (the public package at its latest version). errors.Is(err, ErrSetup) holds too.
	ErrOwnerAttributeMissing = fmt.Errorf("%w: the %s model has no %q attribute", ErrSetup, DefaultServiceModel, OwnerAttribute)
	// ErrAuth (class Auth): CloudShell refused the credentials or the session.
	ErrAuth = errors.New("mutex: CloudShell refused the credentials")
	// ErrInvalid (class Invalid): the request cannot succeed as given: a bad argument or
	// option, an unknown or ended reservation, or another refusal by CloudShell.
	ErrInvalid = errors.New("mutex: invalid request")
	// ErrCanceled (class Canceled): the caller's context was canceled.
	ErrCanceled = errors.New("mutex: canceled")
	// ErrLost (class Lost): a held lock was lost while in use: its record disappeared or was
	// replaced, or renewals failed for so long that waiters may already consider it dead.
	ErrLost = errors.New("mutex: lock lost")
	// ErrNotHeld (class NotHeld): Unlock of a lock this Lock does not hold (already released,
	// or lost: then errors.Is(err, ErrLost) holds too). Nothing was removed.
	ErrNotHeld = errors.New("mutex: lock not held")
)

// Class is the kind of an error: what a caller can do about it.
type Class int

const (
	ClassNone        Class = iota // nil error
	ClassContended                // the lock is held by someone else: wait or try later
	ClassTimeout                  // waited as long as allowed
	ClassUnavailable              // CloudShell failing; may pass
	ClassSetup                    // CloudShell lacks the Mutex Service model or its attribute
	ClassAuth                     // credentials refused
	ClassInvalid                  // bad argument, unknown or ended reservation
	ClassCanceled                 // the caller gave up
	ClassLost                     // a held lock was lost
	ClassNotHeld                  // released twice, or never held
	ClassOther                    // not an error of this package
)

var classNames = map[Class]string{
	ClassNone: "none", ClassContended: "contended", ClassTimeout: "timeout", ClassUnavailable: "unavailable",
	ClassSetup: "setup", ClassAuth: "auth", ClassInvalid: "invalid", ClassCanceled: "canceled",
	ClassLost: "lost", ClassNotHeld: "not_held", ClassOther: "other",
}

// String is the class's name, as used in metrics labels and JSON ("unavailable", ...).
func (c Class) String() string { return classNames[c] }

// Permanent reports whether retrying cannot help until something is fixed.
func (c Class) Permanent() bool { return c == ClassSetup || c == ClassAuth || c == ClassInvalid }

// classes is the precedence in which ClassOf tests the sentinels: an error that wraps
// several (a lost lock reported by Unlock is also not held) takes the first.
var classes = []struct {
	class Class
	err   error
}{
	{ClassLost, ErrLost}, {ClassNotHeld, ErrNotHeld}, {ClassTimeout, ErrTimeout}, {ClassContended, ErrLocked},
	{ClassSetup, ErrSetup}, {ClassAuth, ErrAuth}, {ClassInvalid, ErrInvalid},
	{ClassCanceled, ErrCanceled}, {ClassUnavailable, ErrUnavailable},
}

// ClassOf returns the class of err: ClassNone for nil, ClassOther for an error that did not
// come from this package (a critical section's own error passed through by With).
func ClassOf(err error) Class {
	if err == nil {
		return ClassNone
	}
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.class
		}
	}
	return ClassOther
}

// IsPermanent reports whether err is a failure that retrying cannot fix (unknown or ended
// reservation, missing service model, authentication failure, invalid argument).
func IsPermanent(err error) bool { return ClassOf(err).Permanent() }

// classError puts an error into a class: errors.Is(err, sentinel) holds, and the cause stays
// reachable for errors.As (*cloudshell.APIError and the like).
type classError struct {
	sentinel error
	err      error
}

func (e *classError) Error() string   { return e.err.Error() }
func (e *classError) Unwrap() []error { return []error{e.sentinel, e.err} }

// LockedError is returned by TryLock when another owner holds the lock.
type LockedError struct {
	Name   string
	Holder Owner
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("mutex: lock %q is held by %s", e.Name, e.Holder)
}

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// TimeoutError is returned by Lock when it stopped waiting without the lock. errors.Is(err,
// ErrTimeout) holds; errors.Is(err, context.DeadlineExceeded) holds only when the caller's own
// context deadline ended the wait, not the wait limit.
type TimeoutError struct {
	Name   string
	Holder Owner // zero if the holder could not be read
	Waited time.Duration
	Tries  int
	// Unavailable is true when the wait saw no holder at all, only failures: CloudShell was
	// the problem, not contention. False when the lock was seen held.
	Unavailable bool
	// Deadline is true when the caller's context deadline ended the wait; false when the
	// wait limit (WithWaitLimit) did.
	Deadline bool
	// Last is the last failure seen while waiting, if any. It is reported, not wrapped:
	// it may be the error of an attempt that the end of the wait itself cut off.
	Last error
}

func (e *TimeoutError) Error() string {
	holder := "an unknown holder"
	if !e.Holder.IsZero() {
		holder = e.Holder.String()
	}
	limit := "the wait limit"
	if e.Deadline {
		limit = "the caller's deadline"
	}
	msg := fmt.Sprintf("mutex: timed out (%s) after %s and %d tries waiting for lock %q held by %s",
		limit, e.Waited.Round(time.Millisecond), e.Tries, e.Name, holder)
	if e.Unavailable && e.Last != nil {
		msg += "; CloudShell was failing: " + e.Last.Error()
	}
	return msg
}

func (e *TimeoutError) Is(target error) bool {
	return target == ErrTimeout || (e.Deadline && target == context.DeadlineExceeded)
}
