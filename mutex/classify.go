package mutex

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/csmutex/csmutex/cloudshell"
)

// classify puts a failed API call into its class. Only the end of bound (the context that
// limits the wait: the caller's, with the wait limit) ends anything: a call that failed with
// context.DeadlineExceeded while bound is still live hit an HTTP client timeout, and that is
// CloudShell being slow (Unavailable), not the caller's deadline. Every CloudShell API error
// other than an alias collision is permanent (Invalid): their codes are not documented (100 is
// generic), and treating an unknown error as transient is how the public snippet ends up
// looping on a typo. An alias collision is Contended; ambiguous writes are Unavailable here
// (callers that can settle them by reading do so before classifying).
func classify(bound context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ClassOf(err) != ClassOther {
		return err // classified already
	}
	var (
		ae       *cloudshell.APIError
		sentinel error
	)
	switch {
	case bound.Err() != nil && errors.Is(bound.Err(), context.Canceled):
		sentinel = ErrCanceled
	case bound.Err() != nil:
		sentinel = ErrTimeout
	case cloudshell.IsAliasCollision(err):
		sentinel = ErrLocked
	case errors.Is(err, cloudshell.ErrUnauthorized):
		sentinel = ErrAuth
	case errors.Is(err, cloudshell.ErrInvalidArgument), errors.As(err, &ae):
		sentinel = ErrInvalid
	default:
		sentinel = ErrUnavailable
	}
	return &classError{sentinel: sentinel, err: err}
}

// retryable reports whether a classified failure is worth another attempt while bound lives.
func retryable(err error) bool { return ClassOf(err) == ClassUnavailable }

// addFailure turns an AddServiceToReservation failure that is neither a collision nor
// ambiguous into the error the caller sees, with advice where the cause is clear.
func (m *Mutex) addFailure(bound context.Context, err error) error {
	var ae *cloudshell.APIError
	if errors.As(err, &ae) && bound.Err() == nil {
		msg := strings.ToLower(ae.Message)
		switch {
		case strings.Contains(msg, strings.ToLower(OwnerAttribute)):
			return ownerAttributeMissing(err)
		case strings.Contains(msg, strings.ToLower(m.cfg.model)):
			return &classError{ErrSetup, fmt.Errorf("service model %q is not usable on this CloudShell (%s): %w", m.cfg.model, importAdvice, err)}
		}
	}
	return m.callFailure(bound, err)
}

// importAdvice is the fix for every setup problem: our package defines the model with the
// attribute and keeps the public package's names.
const importAdvice = "import mutexpkg/Mutex_Package.zip from csmutex: it adds the attribute and stays compatible with existing Reservation-Mutex-Lock drivers"

// ownerAttributeMissing is the error for a model without "Mutex Owner", whether the server
// said so (cause) or silently dropped the attribute (cause nil).
func ownerAttributeMissing(cause error) error {
	if cause == nil {
		return fmt.Errorf("%w (%s)", ErrOwnerAttributeMissing, importAdvice)
	}
	return fmt.Errorf("%w (%s): %w", ErrOwnerAttributeMissing, importAdvice, cause)
}

// callFailure classifies any other failed call, naming the lock and reservation.
func (m *Mutex) callFailure(bound context.Context, err error) error {
	c := classify(bound, err)
	if ClassOf(c) == ClassUnavailable {
		return c // retried; its text is enough for the log
	}
	return &classError{sentinel: sentinelOf(c), err: fmt.Errorf("mutex: lock %q in reservation %s: %w", m.cfg.name, m.resID, err)}
}

func sentinelOf(err error) error {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.err
		}
	}
	return nil
}

// CallClass is the class of an error returned by one API call (not by Lock or Unlock), for
// callers that watch calls: metrics, logs. A collision is Contended, an authentication
// failure Auth, any other CloudShell refusal Invalid, everything else Unavailable; a write
// whose outcome is unknown (cloudshell.ErrAmbiguous) is Unavailable too.
func CallClass(err error) Class {
	if err == nil {
		return ClassNone
	}
	return ClassOf(classify(context.Background(), err))
}
