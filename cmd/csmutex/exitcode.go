package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/logon"
	"github.com/csmutex/csmutex/mutex"
)

// Exit codes of csmutex.
//
// They follow sysexits(3) where one fits, and the shell's conventions for a command that
// could not be run or was killed, so that a script can tell "the command failed" from
// "csmutex could not do its job":
//
//	0      success; for run, the command ran under the lock and exited 0
//	1      release: the reservation has no such lock (nothing was removed); state allocate:
//	       every value of the range is allocated (nothing was written)
//	64     usage error (EX_USAGE): unknown flag, missing argument, bad value. Nothing was
//	       contacted: every flag is checked before the first network call.
//	65     bad reservation or setup (EX_DATAERR): the reservation does not exist or has
//	       ended, the Mutex Service model is missing or lacks "Mutex Owner", or the server
//	       rejected an argument. Retrying will not help; fix the input or import the package.
//	69     CloudShell unavailable (EX_UNAVAILABLE): unreachable, TLS failure, HTTP
//	       timeouts, server errors. May pass: a supervisor should retry.
//	70     lock lost while the command ran (EX_SOFTWARE): the lock service was removed or
//	       taken over, or renewals failed for most of a lease. The command was terminated
//	       (SIGTERM, then SIGKILL after --kill-grace) because it was no longer protected.
//	75     lock not obtained (EX_TEMPFAIL): held by someone else (-n) or still held when the
//	       wait limit (-w) passed; for a shape, full (every slot or too many pool members
//	       held) or contended. -E/--conflict-exit-code replaces it.
//	77     credentials refused (EX_NOPERM): CloudShell refused the logon (wrong user,
//	       password, token or domain) or no longer accepts the session. Kept apart from
//	       69 because it does not pass by itself: a supervisor that restarts on 69 must
//	       not retry a wrong password forever (contrib/systemd prevents restarts on it).
//	126    the command was found but could not be executed (as in a shell)
//	127    the command was not found (as in a shell)
//	128+N  the command was killed by signal N, or csmutex was interrupted by signal N
//	       before the command started
//	other  the command's own exit code
//
// A command that itself exits 64-77 is indistinguishable from csmutex failing, exactly as
// with flock(1); choose a distinct -E when the command's codes could collide.
const (
	exitOK          = 0
	exitNotHeld     = 1
	exitUsage       = 64
	exitDataErr     = 65
	exitUnavailable = 69
	exitLockLost    = 70
	exitConflict    = 75
	exitNoPerm      = 77
	exitCannotExec  = 126
	exitNotFound    = 127
	exitSignalBase  = 128
)

// exitCodesHelp is the table printed by --help; keep it in step with the comment above.
const exitCodesHelp = `Exit codes:
  0       success (run: the command ran under the lock and exited 0)
  1       release: no such lock to release; state allocate: range exhausted
  64      usage error; nothing was contacted
  65      bad reservation or CloudShell setup (unknown or ended reservation,
          Mutex Service model missing or without "Mutex Owner")
  69      CloudShell unreachable or failing (may pass; retry)
  70      the lock was lost while the command ran; the command was terminated
  75      lock not obtained (held: -n, or still held after -w); see -E
  77      CloudShell refused the credentials or the session (will not pass)
  126     the command could not be executed
  127     the command was not found
  128+N   the command was killed by signal N (or csmutex was, before it started)
  other   the command's own exit code
`

// usageError is a problem with the command line or environment, found before any network
// call. Its message never quotes a secret.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCodeFor maps an error from flag checks, logon, or a mutex call (other than a lock
// that is held by someone else, see lockFailureCode) to an exit code.
func exitCodeFor(err error) int {
	var ue *usageError
	var le *logon.Error
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &le) && logon.Refused(le.Err):
		return exitNoPerm
	case errors.As(err, &le):
		return exitUnavailable
	case errors.Is(err, cloudshell.ErrUnauthorized):
		// A 401 that logging on again did not cure, from a call the mutex did not classify.
		return exitNoPerm
	}
	// Everything else is the mutex's classification, translated.
	switch mutex.ClassOf(err) {
	case mutex.ClassAuth:
		return exitNoPerm
	case mutex.ClassUnavailable, mutex.ClassTimeout:
		return exitUnavailable
	case mutex.ClassSetup, mutex.ClassInvalid:
		// The model is missing, the reservation is unknown or over, or the server rejected
		// an argument.
		return exitDataErr
	case mutex.ClassCanceled:
		return exitSignalBase + 2 // interrupted; as if by SIGINT
	case mutex.ClassLost:
		return exitLockLost
	default:
		if errors.Is(err, context.Canceled) {
			return exitSignalBase + 2
		}
		return exitUnavailable
	}
}

// lockFailureCode maps an error from Lock or TryLock to an exit code: conflict when the
// lock is held by someone else (or the wait ran out while it was), exitCodeFor otherwise.
func lockFailureCode(err error, conflict int) int {
	var te *mutex.TimeoutError
	switch {
	case errors.Is(err, mutex.ErrLocked):
		return conflict
	case errors.As(err, &te) && te.Unavailable:
		return exitUnavailable // CloudShell was failing, not contended
	case errors.As(err, &te):
		return conflict
	}
	return exitCodeFor(err)
}
