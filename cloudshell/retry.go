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
	"time"

	"github.com/sethvargo/go-retry"
)

// defaultReadRetry keeps the reference client's spirit (a few quick resends on connection
// trouble) without its fixed 1s/2s sleeps.
func defaultReadRetry() retry.Backoff {
	b := retry.NewExponential(100 * time.Millisecond)
	b = retry.WithJitterPercent(20, b)
	b = retry.WithCappedDuration(2*time.Second, b)
	return retry.WithMaxRetries(3, b)
}

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

// withReadRetry runs fn until it succeeds, fails permanently, the backoff gives up or ctx
// ends. Only reads and logons come here: resending them cannot change server state.
func (c *Client) withReadRetry(ctx context.Context, method string, fn func(context.Context) (*Node, error)) (*Node, int, error) {
	var (
		b        retry.Backoff
		attempts int
		lastErr  error
	)
	if c.readRetry != nil {
		b = c.readRetry()
	}
	if b == nil {
		b = retry.BackoffFunc(func() (time.Duration, bool) { return 0, true })
	}
	n, err := retry.DoValue(ctx, b, func(ctx context.Context) (*Node, error) {
		attempts++
		n, err := fn(ctx)
		if err != nil {
			lastErr = err
			if IsTransient(err) && ctx.Err() == nil {
				return nil, retry.RetryableError(err)
			}
		}
		return n, err
	})
	if err != nil && (lastErr == nil || !errors.Is(err, lastErr)) {
		// DoValue gave up because the caller's context ended (possibly between attempts).
		err = fmt.Errorf("cloudshell: %s: %w", method, err)
		if lastErr != nil {
			err = &joinedError{primary: err, last: lastErr}
		}
	}
	return n, attempts, err
}

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
