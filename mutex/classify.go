package mutex

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/csmutex/csmutex/cloudshell"
)

// permanentError marks a failure that retrying cannot fix: the acquisition stops at once
// instead of looping for minutes the way the public snippet does.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// IsPermanent reports whether err is a failure that retrying cannot fix (unknown or ended
// reservation, missing service model, authentication failure, invalid argument).
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// transient reports whether a failed call may succeed if repeated. Only transport-level
// trouble qualifies. Every CloudShell API error other than an alias collision is taken as
// permanent: their codes are not documented (100 is generic), and treating an unknown
// error as transient is exactly how the public snippet ends up looping on a typo.
func transient(err error) bool {
	var ae *cloudshell.APIError
	switch {
	case errors.As(err, &ae),
		errors.Is(err, cloudshell.ErrUnauthorized),
		errors.Is(err, cloudshell.ErrInvalidArgument),
		errors.Is(err, context.Canceled),
		errors.Is(err, context.DeadlineExceeded):
		return false
	}
	return cloudshell.IsTransient(err)
}

// addFailure turns an AddServiceToReservation failure that is neither a collision nor
// ambiguous into the error the caller sees, with advice where the cause is clear.
func (m *Mutex) addFailure(err error) error {
	var ae *cloudshell.APIError
	if errors.As(err, &ae) {
		msg := strings.ToLower(ae.Message)
		switch {
		case strings.Contains(msg, strings.ToLower(OwnerAttribute)):
			return ownerAttributeMissing(err)
		case strings.Contains(msg, strings.ToLower(m.cfg.model)):
			return &permanentError{fmt.Errorf("%w: service model %q is not usable on this CloudShell (%s): %w", ErrSetup, m.cfg.model, importAdvice, err)}
		}
	}
	return m.readFailure(err)
}

// importAdvice is the fix for every setup problem: our package defines the model with the
// attribute and keeps the public package's names.
const importAdvice = "import package/Mutex_Package.zip from csmutex: it adds the attribute and stays compatible with existing Reservation-Mutex-Lock drivers"

// ownerAttributeMissing is the permanent error for a model without "Mutex Owner", whether the
// server said so (cause) or silently dropped the attribute (cause nil).
func ownerAttributeMissing(cause error) error {
	if cause == nil {
		return &permanentError{fmt.Errorf("%w (%s)", ErrOwnerAttributeMissing, importAdvice)}
	}
	return &permanentError{fmt.Errorf("%w (%s): %w", ErrOwnerAttributeMissing, importAdvice, cause)}
}

// readFailure classifies any other failed call: transient errors pass through to be retried,
// the rest are permanent.
func (m *Mutex) readFailure(err error) error {
	if transient(err) {
		return err
	}
	return &permanentError{fmt.Errorf("mutex: lock %q in reservation %s: %w", m.cfg.name, m.resID, err)}
}
