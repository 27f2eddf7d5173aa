package cloudshell

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
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

// transportError is a request that got no HTTP answer. It keeps the cause reachable for
// errors.Is/As while its message is computed once, with secrets redacted, so that nothing a
// custom RoundTripper puts in its errors can leak through Error().
type transportError struct {
	method string
	msg    string
	cause  error
	// ambiguous: a write whose request may have reached the server.
	ambiguous bool
	// canceled: the caller's own context ended; not worth retrying.
	canceled bool
}

func (e *transportError) Error() string { return e.msg }

func (e *transportError) Unwrap() []error {
	if e.ambiguous {
		return []error{ErrAmbiguous, e.cause}
	}
	return []error{e.cause}
}

// NewTransportError is the error Client returns when a call got no HTTP answer, for
// implementations of the API other than Client (simulators, test doubles) that must fail
// the way Client does. cause is the transport's error (a *net.OpError, a timeout, ctx's
// error); write marks a call that must not be resent; the result wraps ErrAmbiguous when
// the request may have reached the server, and IsTransient is false only when ctx itself
// has ended.
func NewTransportError(ctx context.Context, method string, write bool, cause error) error {
	te := &transportError{
		method:    method,
		cause:     cause,
		ambiguous: write && mayHaveBeenSent(cause),
		canceled:  ctx.Err() != nil,
	}
	te.msg = "cloudshell: " + method + ": transport: " + cause.Error()
	if te.ambiguous {
		te.msg += " (request may have reached the server; outcome unknown)"
	}
	return te
}

// ambiguousError marks a write whose answer was unusable (5xx, garbage 2xx) although the
// server may have applied it; it wraps both ErrAmbiguous and the concrete error.
type ambiguousError struct {
	cause error
}

func (e *ambiguousError) Error() string   { return e.cause.Error() + " (outcome unknown)" }
func (e *ambiguousError) Unwrap() []error { return []error{ErrAmbiguous, e.cause} }

// badResponseError is a 2xx answer that is not a usable envelope.
type badResponseError struct {
	method string
	status int
	reason string
}

func (e *badResponseError) Error() string {
	if e.status == 0 {
		// The envelope was fine; its payload lacks something required.
		return "cloudshell: " + e.method + ": bad response: " + e.reason
	}
	return "cloudshell: " + e.method + ": bad response (HTTP " + strconv.Itoa(e.status) + "): " + e.reason
}

func (e *badResponseError) Is(target error) bool { return target == ErrBadResponse }

// joinedError keeps the caller's context error first (so IsTransient says no) while still
// telling what the last attempt ran into.
type joinedError struct {
	primary error
	last    error
}

func (e *joinedError) Error() string {
	return e.primary.Error() + " (last attempt: " + e.last.Error() + ")"
}

// Unwrap exposes only the context error: the last attempt's error would make the whole
// look transient although the caller gave up.
func (e *joinedError) Unwrap() error { return e.primary }

// IsTransient reports whether err is worth retrying later: transport failures, timeouts,
// 5xx and 429 answers, ambiguous writes and unusable responses. CloudShell failures
// (*APIError), ErrUnauthorized, ErrInvalidArgument and the end of the caller's own context
// are not transient. An ambiguous write is transient in the sense that the server may work
// again, but it must be verified, not blindly resent.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) || errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrInvalidArgument) {
		return false
	}
	var te *transportError
	if errors.As(err, &te) {
		return !te.canceled && !isTLSSetupError(te.cause)
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.StatusCode >= 500 || he.StatusCode == http.StatusTooManyRequests
	}
	if errors.Is(err, ErrAmbiguous) || errors.Is(err, ErrBadResponse) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// mayHaveBeenSent reports whether a transport failure can have happened after request bytes
// left this process. Only failures that provably precede sending (dialing, name resolution,
// TLS handshake) count as "not sent"; everything else is assumed to have reached the server,
// because guessing wrong the other way would let a caller believe a write did not happen.
func mayHaveBeenSent(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return false
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && (opErr.Op == "dial" || opErr.Op == "proxyconnect") {
		return false
	}
	if isTLSSetupError(err) {
		return false
	}
	return true
}

// isTLSSetupError is a certificate or handshake failure: nothing was sent, and retrying
// cannot help because it is a configuration problem.
func isTLSSetupError(err error) bool {
	var (
		certErr     *tls.CertificateVerificationError
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidErr  x509.CertificateInvalidError
		recErr      tls.RecordHeaderError
	)
	return errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) ||
		errors.As(err, &invalidErr) || errors.As(err, &recErr)
}
