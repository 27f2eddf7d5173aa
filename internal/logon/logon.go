// Package logon reports a failure to log on to CloudShell the way a person needs it: which
// server, as whom, and whether the server could not be reached or refused the credentials.
// The command (run, status, release, serve at start) and the sidecar (per request) report
// logon failures through it, so they word them alike and classify them alike.
package logon

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/csmutex/csmutex/cloudshell"
)

// Error is a failure to connect or log on to CloudShell: unreachable, TLS, or refused
// credentials. It names the address and the user, never a password or token; Err is the
// client's error (which never holds one either).
type Error struct {
	Addr string // host:port, see Addr
	As   string // whose credentials, see Who
	Err  error
}

func (e *Error) Error() string {
	if Refused(e.Err) {
		return fmt.Sprintf("CloudShell at %s refused to log on %s: %v", e.Addr, e.As, e.Err)
	}
	return fmt.Sprintf("cannot reach CloudShell at %s: %v", e.Addr, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Refused reports whether err is CloudShell refusing the credentials (an API error
// envelope, or HTTP 401 that logging on again did not cure) rather than a failure to
// reach it.
func Refused(err error) bool {
	var ae *cloudshell.APIError
	return errors.As(err, &ae) || errors.Is(err, cloudshell.ErrUnauthorized)
}

// Who names the credentials for a message: `user "NAME"`, or `with the admin token` when a
// token is used (it wins over the user, as in cloudshell.Config). Never a secret.
func Who(user, token string) string {
	if token != "" {
		return "with the admin token"
	}
	return "user " + strconv.Quote(user)
}

// Addr is host:port for a message, host without the brackets an IPv6 address may come in.
func Addr(host string, port int) string {
	return net.JoinHostPort(strings.Trim(strings.TrimSpace(host), "[]"), strconv.Itoa(port))
}
