package cloudshell

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrUnauthorized: the server answered HTTP 401 (token missing, expired or invalid) and
	// the client could not log on again (it had no credentials, or the re-logon failed too).
	ErrUnauthorized = errors.New("cloudshell: unauthorized")

	// ErrAmbiguous: a write may or may not have been applied. The request left this
	// process but no complete answer came back (connection reset, timeout, a 5xx from a
	// proxy). Writes are never resent automatically; resolve by reading the state back.
	ErrAmbiguous = errors.New("cloudshell: outcome unknown")

	// ErrInvalidArgument: a required argument was empty or malformed; nothing was sent.
	ErrInvalidArgument = errors.New("cloudshell: invalid argument")

	// ErrBadResponse: a 2xx answer whose body is empty, not XML, truncated, or not a
	// CloudShell envelope.
	ErrBadResponse = errors.New("cloudshell: bad response")
)

// aliasCollisionText is how the server words an alias collision in AddServiceToReservation.
// Its ErrorCode is the generic 100, so the text is the only reliable signal.
const aliasCollisionText = "Service with given alias already exists"

// APIError is a CloudShell failure envelope (Success="false").
type APIError struct {
	Method  string
	Code    int
	Message string
}

// Error reads like the Python client's CloudShellAPIError.
func (e *APIError) Error() string {
	return fmt.Sprintf("CloudShell API error %d: %s", e.Code, e.Message)
}

// IsAliasCollision reports whether err is CloudShell refusing a service because the
// reservation already has one with that alias. It looks at the message, not the code:
// code 100 is CloudShell's generic error code.
func IsAliasCollision(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) {
		return false
	}
	return strings.Contains(strings.ToLower(ae.Message), strings.ToLower(aliasCollisionText))
}

// HTTPError is a non-2xx HTTP answer that is not a 401.
type HTTPError struct {
	Method     string
	StatusCode int
	Status     string // reason phrase, e.g. "Bad Gateway"
	// Body is the start of the body, for diagnosis; it never contains request secrets.
	Body string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("cloudshell: %s: HTTP %d %s", e.Method, e.StatusCode, e.Status)
}

// ArgumentError names the argument that was rejected before anything was sent.
// errors.Is(err, ErrInvalidArgument) holds for it.
type ArgumentError struct {
	Method string
	Field  string
	Reason string
}

func (e *ArgumentError) Error() string {
	return fmt.Sprintf("cloudshell: %s: %s %s", e.Method, e.Field, e.Reason)
}

func (e *ArgumentError) Is(target error) bool { return target == ErrInvalidArgument }
